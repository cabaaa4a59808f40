"""What the live flow's periodic work does to answer latency, as deployed.

The live flow's bursts are its recovery snapshots (every 300 s live, ~0.3 s of CPU each for a full year's state),
the feature log's parquet writes (every 5 s), its garbage collections, and its share of each event batch. This runs
the setting of `load_tests/bench/deployed.py` (`pantry serve` on the bench's state, events posted at 500/s by a
process of their own, /v1/recommendations open loop at 300 req/s) in three arms, alternating:

- `no flow`: `pantry serve --no-live` (the events still go into the stream): the answers without any flow work;
- `flow`: `pantry serve` with its live flow, as deployed;
- `flow, snapshot every 2 s`: the same with PANTRY_STREAM_SNAPSHOT_S=2, the snapshot burst 150x as often.

If a burst of flow work showed in the answers' p99, the third arm would be the slowest by far.

    make bench   # once: builds .pantry/bench
    python -m experiments.flow_periodic_work [rounds]
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
from pathlib import Path

from load_tests import server
from load_tests.bench.deployed import EVENT_RATE, RATE, EventFeeder, wait_ready
from load_tests.bench.openloop import closed_loop, open_loop
from load_tests.bench.serving import Requests
from load_tests.keys import key_for, with_run_key
from pantry import client as api
from pantry.redis_server import EmbeddedRedis, free_port
from pantry.settings import get_settings

ROOT = Path(__file__).resolve().parents[1]
SECONDS = 20.0
ARMS = {"no flow": (False, None), "flow": (True, None), "flow, snapshot every 2 s": (True, "2")}


def measure(settings, live: bool, snapshot_s: str | None, work: Path, tag: str):
    if snapshot_s:
        os.environ["PANTRY_STREAM_SNAPSHOT_S"] = snapshot_s
    else:
        os.environ.pop("PANTRY_STREAM_SNAPSHOT_S", None)
    with server.background_serve(settings, work / f"serve-{tag}.log", port=free_port(), live=live) as url:
        if live:
            wait_ready(url, 180)  # the flow caught up on what earlier arms left in the stream
        reqs = Requests(settings)
        key = key_for(settings, "/v1/recommendations")
        clock = api.PantryClient(url, key_for(settings, "/v1/clock")).clock()
        with EventFeeder(url, key_for(settings, "/v1/events"), EVENT_RATE, SECONDS + 8, clock.now.timestamp(), reqs,
                         work / f"feed-{tag}.json"):
            asyncio.run(closed_loop(url, "/v1/recommendations", reqs.recommendations, 4, 3.0, api_key=key))
            return asyncio.run(open_loop(url, "/v1/recommendations", reqs.recommendations, RATE, SECONDS,
                                         api_key=key))


def main(rounds: int) -> None:
    os.environ.setdefault("PANTRY_DATA_DIR", str(ROOT / ".pantry" / "bench"))
    os.environ.setdefault("PANTRY_ARTIFACTS_DIR", str(ROOT / ".pantry" / "bench" / "artifacts"))
    os.environ.update({"PANTRY_RATE_LIMIT_PER_MINUTE": "0", "PANTRY_ACCESS_LOG": "off"})
    port = free_port()
    os.environ["PANTRY_REDIS_PORT"] = str(port)
    settings = with_run_key(get_settings())
    work = settings.data_dir / "flow-periodic-work"
    work.mkdir(parents=True, exist_ok=True)
    redis = EmbeddedRedis(port=port, directory=settings.redis_dir).start(daemonize=False)
    results: dict[str, list] = {arm: [] for arm in ARMS}
    try:
        for n in range(rounds):
            for arm, (live, snapshot_s) in ARMS.items():
                load = measure(settings, live, snapshot_s, work, f"{n}-{arm.replace(' ', '_').replace(',', '')}")
                results[arm].append(load)
                print(f"round {n + 1} {arm}: p50 {load.p50_ms} ms, p99 {load.p99_ms} ms, max {load.max_ms} ms, "
                      f"{load.errors} errors", flush=True)
    finally:
        redis.stop()
    print("\n| arm | p99 per round (ms) | median p99 | max per round (ms) |\n|---|---|---|---|")
    for arm, loads in results.items():
        print(f"| {arm} | {', '.join(str(x.p99_ms) for x in loads)} | "
              f"{statistics.median(x.p99_ms for x in loads):.2f} | {', '.join(str(x.max_ms) for x in loads)} |")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
