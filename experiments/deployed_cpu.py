"""Where the "as deployed" part's time goes: load_tests/bench/deployed.py on the bench's state, with each part's CPU
(the API's workers, the live flow, Redis, the event feeder, this load generator) per answer step.

Arms:
- `alone`: `pantry serve` with its live flow, then deployed.py, as `make bench` runs it;
- `after-overhead`: first the experiment-overhead part (load_tests/bench/experiment_overhead.py, ROUNDS rounds of
  ROUND_S s each kind, against a `pantry serve` without the flow, as serving.py runs it), then the same as `alone`:
  what the serving part leaves behind (decision log, outcomes, KPIs) for the deployed part.

    make bench   # once: builds .pantry/bench
    python -m experiments.deployed_cpu ARM [ROUNDS] [ROUND_S]
"""

from __future__ import annotations

import os
import sys
import time

import msgspec

from experiments.overhead_arms import cpu_by_part
from load_tests import server
from load_tests.bench import deployed, experiment_overhead, harness, serving
from load_tests.keys import with_run_key
from pantry import apikeys
from pantry.redis_server import EmbeddedRedis

ARMS = ("alone", "after-overhead")


def main() -> None:
    arm = sys.argv[1] if len(sys.argv) > 1 else "alone"
    if arm not in ARMS:
        sys.exit(f"ARM is one of {', '.join(ARMS)}")
    experiment_overhead.ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else experiment_overhead.ROUNDS
    round_s = float(sys.argv[3]) if len(sys.argv) > 3 else experiment_overhead.ROUND_S
    settings = with_run_key(harness.isolated_settings("bench"))
    ml_key = apikeys.new_key()
    settings = msgspec.structs.replace(settings, api_keys=(
        *settings.api_keys, apikeys.entry_line("deployed-cpu", ("ml_engineer",), ml_key)))
    os.environ[experiment_overhead.ML_KEY_ENV] = ml_key

    cpu: list[tuple[str, dict[str, float]]] = []
    timed_open_loop = deployed.open_loop

    async def open_loop(base_url, path, *args, **kwargs):
        before, started = cpu_by_part(), time.monotonic()
        try:
            return await timed_open_loop(base_url, path, *args, **kwargs)
        finally:
            after, elapsed = cpu_by_part(), time.monotonic() - started
            cpu.append((path, {part: (total - before.get(part, 0.0)) / elapsed * 100 for part, total in after.items()}))

    deployed.open_loop = open_loop
    redis = EmbeddedRedis(port=settings.embedded_redis_port, directory=settings.redis_dir).start(daemonize=False)
    try:
        if arm == "after-overhead":
            with server.background_serve(settings, settings.data_dir / "deployed-cpu-serve.log") as base_url:
                reqs = serving.Requests(settings)
                treatment = serving.ensure_baseline(settings.models_dir, "recommender", "popularity")
                started = time.monotonic()
                overhead = experiment_overhead.run(settings, base_url, reqs.recommendations, serving.RATE, round_s,
                                                   treatment)
                ratio = overhead.p99(overhead.rounds_with) / overhead.p99(overhead.rounds_without)
                print(f"overhead part: {time.monotonic() - started:.0f} s, with / without {ratio:.2f}x", flush=True)
        started = time.monotonic()
        with server.background_serve(settings, settings.data_dir / "deployed-cpu-live.log", live=True) as base_url:
            print(f"serve with live flow up in {time.monotonic() - started:.0f} s", flush=True)
            figures = deployed.run(settings, base_url)
    finally:
        redis.stop()
    for name, load in figures.answers.items():
        print(f"{arm}: {name}: p50 {load.p50_ms} ms, p99 {load.p99_ms} ms")
    e = figures.events
    print(f"{arm}: freshness p50 {e.freshness_p50_ms} ms, p99 {e.freshness_p99_ms} ms; "
          f"saturation {figures.recommendations_saturation.achieved_rps} req/s")
    for path, parts in cpu:
        print(f"{arm}: {path}: CPU % of a core: " + ", ".join(f"{p} {v:.0f}" for p, v in sorted(parts.items())))


if __name__ == "__main__":
    main()
