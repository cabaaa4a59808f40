"""What substitution feedback costs an answer, in process: parsing the feedback rows (the customer's, one per item),
leaving out the rejected pairs and ranking with the score terms, against ranking without feedback, for requests of
1, 3 and 10 random products on the ACTIVE substitutions version of a data dir. The rows are full: 64 pairs of the
customer (half rejected), 64 substitutes per item. No Redis, no HTTP: the model's and the parsing's share.

Command: `PANTRY_DATA_DIR=.pantry .venv/bin/python -m experiments.substitution_feedback_cost` (any data dir with a
trained model; ~1 min). Results: in docs/DECISIONS.md "How is substitution feedback learned online?".
"""

from __future__ import annotations

import random
import time

from pantry.featurestore.reader import Row
from pantry.models import load_active
from pantry.models.substitution_feedback import NO_FEEDBACK, Feedback
from pantry.settings import get_settings
from pantry.substitution_feedback import CUSTOMER_PAIRS, SUBSTITUTES_PER_PRODUCT
from serving.answers.substitutions import MAX_POOL

REQUESTS = 300
SIZES = (1, 3, 10)


def rows(rng: random.Random, items: list[int], pools: list[list[int]]) -> list[Row]:
    pairs = [(rng.choice(items), rng.choice(pools[0] or [1])) for _ in range(CUSTOMER_PAIRS)]
    customer = {"original_ids": [o for o, _ in pairs], "substitute_ids": [s for _, s in pairs],
                "accepted_counts": [rng.randrange(3) for _ in pairs],
                "rejected_counts": [rng.randrange(3) for _ in pairs],
                "last_accepted": [i % 2 for i in range(len(pairs))]}
    out = [Row(customer, None, 0.0, "present", customer)]
    for pool in pools:
        subs = (pool * SUBSTITUTES_PER_PRODUCT)[:SUBSTITUTES_PER_PRODUCT]
        values = {"substitute_ids": subs, "accepted_counts": [1] * len(subs), "rejected_counts": [1] * len(subs),
                  "acceptance_rates": [rng.random() for _ in subs]}
        out.append(Row(values, None, 0.0, "present", values))
    return out


def main() -> None:
    models, errors = load_active(get_settings().models_dir)
    model = models.substitutions
    assert model is not None, errors
    rng = random.Random(7)
    products = [int(p) for p in model.products[model.cat.buyers >= 20]]
    for size in SIZES:
        timings: dict[str, list[float]] = {"without": [], "with": []}
        for n in range(REQUESTS):
            items = rng.sample(products, size)
            pools = [p[:MAX_POOL] for p in model.candidate_pools(items)]
            feedback_rows = rows(rng, items, pools)
            for kind in ("without", "with") if n % 2 else ("with", "without"):  # alternate which runs first
                t = time.perf_counter()
                fb = Feedback.from_rows(feedback_rows) if kind == "with" else NO_FEEDBACK
                lists = fb.without_rejected(items, pools)
                model.rank(items, lists, customer_id=1, features={}, stock={}, k=3, feedback=fb)
                timings[kind].append((time.perf_counter() - t) * 1e3)
        for kind, ms in timings.items():
            ms.sort()
            p50, p99 = ms[len(ms) // 2], ms[int(len(ms) * 0.99)]
            print(f"{size:>2} items, {kind:>7} feedback: p50 {p50:.3f} ms  p99 {p99:.3f} ms")


if __name__ == "__main__":
    main()
