"""What one outcome costs the live flow (docs/STREAMING.md "Outcomes and KPIs"): `python -m load_tests.bench.outcomes`.

The steps an outcome adds to what every event already pays (parse, gate, feature shards): its decision's parse,
the routing to its outcome shard (streaming.gate.outcome_routes) and the join (streaming.outcomes), in batches of
LIVE_BATCH like the live source's, in this process. Prints microseconds per outcome and per decision.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from serving.decisions import DecisionLog
from streaming.dataflow import parse_decisions
from streaming.features.event import Ev
from streaming.gate import outcome_routes
from streaming.outcomes import OutcomeShardLogic
from streaming.sources import LIVE_BATCH

T0 = datetime(2017, 10, 31, 12, tzinfo=UTC)
CUSTOMERS = 5000
ITEMS = 10


def decision_entries(n: int) -> list[dict[bytes, bytes]]:
    """n decision-log entries as serving writes them (10 recommended items each)."""
    log = DecisionLog(pipeline=None, maxlen=n, queue_max=n + 1)
    for i in range(n):
        items = [{"product_id": 1000 + (i + j) % 500, "score": 1.0, "reason": "model"} for j in range(ITEMS)]
        log.record(decision_id=f"d{i}", endpoint="/v1/recommendations", request={}, model="recommender",
                   model_version="v1", customer_id=i % CUSTOMERS, surface="for_you", experiment_id="", arm="",
                   elapsed_ms=3.0, feature_ages={}, fallback=None, items=items,
                   now=T0 + timedelta(seconds=i / 10))
    out = []
    while not log.queue.empty():
        command = log.queue.get_nowait()
        pairs = command[command.index(b"*") + 1:]
        out.append(dict(zip(pairs[::2], pairs[1::2], strict=True)))
    return out


def main(n_decisions: int = 20_000) -> None:
    entries = decision_entries(n_decisions)
    started = time.perf_counter()
    decisions = [d for i in range(0, len(entries), LIVE_BATCH) for d in parse_decisions(entries[i:i + LIVE_BATCH])[0]]
    parse_us = (time.perf_counter() - started) / n_decisions * 1e6
    # per decision: an impression of every item, a click on one, a purchase of one without decision_id
    outcomes = []
    for i, d in enumerate(decisions):
        t = d.t + 30
        shown = sorted(d.products)
        outcomes += [Ev(f"i{i}-{p}", "impression", t, d.customer_id, product_id=p, decision_id=d.decision_id)
                     for p in shown]
        outcomes.append(Ev(f"c{i}", "click", t + 1, d.customer_id, product_id=shown[0], decision_id=d.decision_id))
        outcomes.append(Ev(f"p{i}", "purchase", t + 60, d.customer_id, product_id=shown[1], sales_value=2.0))
    shards = {}
    args = {"flush_s": 0.25, "window_s": 86400.0, "per_customer": 64, "pending_s": 30.0, "retention_days": 90}
    per_batch = max(1, len(outcomes) // max(1, len(decisions) // 200))
    started = time.perf_counter()
    for b, lo in enumerate(range(0, len(outcomes), per_batch)):
        batch = outcomes[lo:lo + per_batch]
        decs = decisions[b * 200:(b + 1) * 200]
        for shard, work in outcome_routes(batch, decs, batch[-1].t, tick=False).items():
            logic = shards.get(shard)
            if logic is None:
                logic = shards[shard] = OutcomeShardLogic(None, **args)
            logic.on_batch([work])
    seconds = time.perf_counter() - started
    joined = sum(s.join.st.counters["joined"] for s in shards.values())
    print(f"{len(decisions):,} decisions ({parse_us:.1f} us each to parse), {len(outcomes):,} outcomes "
          f"({joined:,} counted): routing + join {seconds / len(outcomes) * 1e6:.2f} us per outcome "
          f"(decisions' join included)")


if __name__ == "__main__":
    main()
