"""What a substitution request costs the model, in process: the items of a request pooled, joined by the customer's
own items and ranked one item at a time (one ranker call each) against all at once (one call for the request), for
requests of 1, 3 and 10 random products, on the ACTIVE version of a data dir. No Redis, no HTTP: the model's share of
a request (docs/BENCHMARKS.md measures the endpoint).

Command: `PANTRY_DATA_DIR=.pantry/bench PANTRY_ARTIFACTS_DIR=.pantry/bench/artifacts .venv/bin/python -m
experiments.substitution_request_cost` (after `make bench`, or any data dir with a trained model; ~1 min).
Results: in docs/DECISIONS.md "Substitutions for a whole order in one pass".
"""

from __future__ import annotations

import random
import time

from pantry.models import load_active
from pantry.settings import get_settings
from serving.answers.substitutions import MAX_POOL

REQUESTS = 300
SIZES = (1, 3, 10)


def lists(model, items: list[int], customer: int) -> list[list[int]]:
    pools = model.candidate_pools(items)
    own = model.own_candidates(items, customer_id=customer, features={})
    return [list(dict.fromkeys([*p[:MAX_POOL], *o])) for p, o in zip(pools, own, strict=True)]


def one_by_one(model, items: list[int], customer: int) -> None:
    for item in items:
        model.rank([item], lists(model, [item], customer), customer_id=customer, features={}, stock={}, k=3)


def together(model, items: list[int], customer: int) -> None:
    model.rank(items, lists(model, items, customer), customer_id=customer, features={}, stock={}, k=3)


def main() -> None:
    models, errors = load_active(get_settings().models_dir)
    model = models.substitutions
    if model is None:
        raise SystemExit(f"no ACTIVE substitutions model ({errors})")
    rng = random.Random(7)
    products, customers = model.products.tolist(), model.customers.tolist()
    print(f"version {model.version}; {REQUESTS} requests per row, random products and customers; ms per request")
    print(f"{'items':>5s} {'one call per item':>18s} {'one call per request':>21s}")
    for size in SIZES:
        reqs = [(rng.sample(products, size), rng.choice(customers)) for _ in range(REQUESTS)]
        for items, _ in reqs:  # pools first asked here for the rare products (the others come with the version)
            model.candidate_pools(items)
        timing = {}
        for name, fn in (("one", one_by_one), ("all", together)):
            started = time.perf_counter()
            for items, customer in reqs:
                fn(model, items, customer)
            timing[name] = (time.perf_counter() - started) / REQUESTS * 1e3
        print(f"{size:5d} {timing['one']:18.2f} {timing['all']:21.2f}", flush=True)


if __name__ == "__main__":
    main()
