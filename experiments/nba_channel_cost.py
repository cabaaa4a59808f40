"""What the channel rule costs a next-best-action answer: an `email` answer asks the model for 3 x k actions (so that
k are left after the cross-sell is taken out), and filters them by kind (serving/answers/channel.py).

Command: `PANTRY_DATA_DIR=.pantry .venv/bin/python -m experiments.nba_channel_cost`: the ACTIVE next-best-action
version in process, 200 customers with coupons on a day their campaigns run, each asked for k = 3 and for 9 (the
email overfetch) alternately, 5 rounds; p50 and p99 per call, and the filter's cost on 9 actions.

Result (2026-12-04, the full-data version 20261203T205905-3bd5cee7, 200 customers with a median 26 coupons that
day, 1,000 calls each on the shared 2-core machine): k = 3 p50 0.128 ms, p99 0.219 ms; k = 9 p50 0.127 ms, p99
0.207 ms (the ranker scores every candidate either way; k only cuts the sorted list); the filter 0.44 us per
answer. The rule costs an email answer nothing measurable; an email answer with a store_id reads the stock of up
to 3 x k actions, as every answer with a store_id already does.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import numpy as np

from pantry.models import registry
from pantry.models.loading import load_version
from pantry.models.next_best_action import candidates
from pantry.settings import get_settings
from serving.answers import channel

DAY = datetime(2017, 10, 15, 12, tzinfo=UTC)
ROUNDS = 5


def main() -> None:
    settings = get_settings()
    version = registry.active_version(settings.models_dir, "next_best_action")
    model = load_version(settings.models_dir, "next_best_action", version)
    t = model.t
    day = DAY.timestamp() / 86_400.0
    active = t.campaigns[(t.campaign_start <= day) & (day <= t.campaign_end)]
    ids = frozenset(int(c) for c in active)
    ids_array = np.array(sorted(ids), dtype=np.int64)
    customers = [int(c) for c in t.customers if len(candidates(t, int(c), ids_array, day)[0])][:200]
    times: dict[int, list[float]] = {3: [], 9: []}
    kept = []
    for _ in range(ROUNDS):
        for c in customers:
            for k in (3, 9):
                start = time.perf_counter()
                got = model.actions({}, customer_id=c, campaign_ids=ids, k=k, channel="email", now=DAY)
                times[k].append(time.perf_counter() - start)
                if k == 9:
                    kept.append(got)
    start = time.perf_counter()
    for got in kept:
        channel.for_channel("email", got)
    filter_us = (time.perf_counter() - start) / len(kept) * 1e6
    for k, ts in times.items():
        ms = np.array(ts) * 1000
        print(f"k={k}: p50 {np.percentile(ms, 50):.3f} ms, p99 {np.percentile(ms, 99):.3f} ms ({len(ms)} calls)")
    sizes = [len(candidates(t, c, ids_array, day)[0]) for c in customers]
    print(f"{len(customers)} customers, median {np.median(sizes):.0f} coupons")
    print(f"the channel filter on 9 actions: {filter_us:.2f} us per answer")


if __name__ == "__main__":
    main()
