"""What one outcome costs the live flow (docs/STREAMING.md "Outcomes and KPIs"): `python -m load_tests.bench.outcomes`
(in this process), `python -m load_tests.bench.outcomes live REGISTRY_DB` (`pantry stream live` draining a backlog).

The steps an outcome adds to what every event already pays (parse, gate, feature shards): its decision's parse,
the routing to its outcome shard (streaming.gate.outcome_routes) and the join (streaming.outcomes), in batches of
LIVE_BATCH like the live source's, in this process. Prints CPU microseconds (process time: a busy machine
slows the wall clock, not this) per outcome and per decision.
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
        xadd = log.queue.get_nowait()[0]  # the decision's XADD (then its customer index's commands)
        pairs = xadd[xadd.index(b"*") + 1:]
        out.append(dict(zip(pairs[::2], pairs[1::2], strict=True)))
    return out


def main(n_decisions: int = 20_000) -> None:
    entries = decision_entries(n_decisions)
    started = time.process_time()
    decisions = [d for i in range(0, len(entries), LIVE_BATCH) for d in parse_decisions(entries[i:i + LIVE_BATCH])[0]]
    parse_us = (time.process_time() - started) / n_decisions * 1e6
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
    started = time.process_time()
    for b, lo in enumerate(range(0, len(outcomes), per_batch)):
        batch = outcomes[lo:lo + per_batch]
        decs = decisions[b * 200:(b + 1) * 200]
        for shard, work in outcome_routes(batch, decs, batch[-1].t, tick=False).items():
            logic = shards.get(shard)
            if logic is None:
                logic = shards[shard] = OutcomeShardLogic(None, **args)
            logic.on_batch([work])
    seconds = time.process_time() - started
    joined = sum(s.join.st.counters["joined"] for s in shards.values())
    print(f"{len(decisions):,} decisions ({parse_us:.1f} us each to parse), {len(outcomes):,} outcomes "
          f"({joined:,} counted): routing + join {seconds / len(outcomes) * 1e6:.2f} us per outcome "
          f"(decisions' join included)")


def live(registry: str, kind: str, n: int = 100_000, port: int = 18558) -> float:
    """`pantry stream live` on its own Redis and data dir draining n events XADDed before it starts (`kind`:
    "outcomes" = impressions of n/10 decisions of 10 items, or "views" = product views); returns events/s."""
    import os
    import shutil
    import signal
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from pantry import events
    from pantry.keys import DECISIONS_STREAM, EVENT_FIELD, EVENTS_STREAM, STREAM_COUNTERS
    from pantry.redis_server import EmbeddedRedis, sync_client
    from pantry.settings import from_env

    root = Path(tempfile.mkdtemp(prefix="pantry-outcomes-"))
    server = EmbeddedRedis(port=port, directory=root / "redis").start()
    try:
        (root / "data").mkdir()
        shutil.copy(registry, root / "data" / "registry.db")
        env = {**os.environ, "PANTRY_REDIS_PORT": str(port), "PANTRY_DATA_DIR": str(root / "data"),
               "PANTRY_CLOCK": "event"}
        client = sync_client(from_env(env))
        pipe = client.pipeline(transaction=False)
        if kind == "outcomes":
            for fields in decision_entries(n // ITEMS):
                pipe.xadd(DECISIONS_STREAM, fields)
        for i in range(n):
            d = i // ITEMS
            ts = T0 + timedelta(seconds=d / 10)
            cls = events.Impression if kind == "outcomes" else events.ProductView
            extra = {"decision_id": f"d{d}"} if kind == "outcomes" else {}
            e = cls(event_id=f"e{i}", ts=ts, customer_id=d % CUSTOMERS, product_id=1000 + (d + i % ITEMS) % 500,
                    **extra)
            pipe.xadd(EVENTS_STREAM, {EVENT_FIELD: events.encode_msgpack(e)})
        pipe.execute()
        proc = subprocess.Popen([sys.executable, "-m", "pantry.cli", "stream", "live", "--no-progress"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def processed() -> float:
            return float(client.hget(STREAM_COUNTERS, "processed") or 0)

        while processed() <= 0:
            time.sleep(0.01)
        started, first = time.monotonic(), processed()
        while processed() < n:
            time.sleep(0.01)
        rate = (n - first) / (time.monotonic() - started)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        print(f"live, {kind}: {n - first:,.0f} events at {rate:,.0f} events/s")
        return rate
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    import sys

    if len(sys.argv) > 2 and sys.argv[1] == "live":
        for kind in ("views", "outcomes"):
            live(sys.argv[2], kind)
    else:
        main()
