"""Where the experiment-overhead part's with-outcomes p99 comes from (docs/DECISIONS.md "Live batches linger").

Runs the part of `make bench` (load_tests/bench/experiment_overhead.py: without / experiment only / experiment +
outcomes, alternating) on the bench's state, in this process, after a closed-loop warm-up like the sweeps `make
bench` runs first, in one of these arms:

- `as-is`: as `make bench` runs it;
- `flow-paused`: the live flow SIGSTOPped for each with-outcomes round (the outcomes are still posted and written
  to the stream; the flow joins them after the round): what the posting costs, apart from the join;
- `same-session`: the service and the flow in this process's session (one scheduling autogroup) instead of one
  each, the flow at its nice 10 within it;
- `same-session-idle`: the same, the flow's threads under SCHED_IDLE (`chrt -i`).

Prints each kind of round's p99s, their medians, the ratio the target judges, and each part's CPU (the serving
workers, the live flow, Redis, this load generator, the outcome poster) per kind of round.

    make bench   # once: builds .pantry/bench
    python -m experiments.overhead_arms ARM [ROUNDS] [WARMUP_S]
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import msgspec
import psutil

from load_tests import server
from load_tests.bench import experiment_overhead, harness, serving
from load_tests.bench.openloop import closed_loop
from load_tests.keys import key_for, with_run_key
from pantry import apikeys
from pantry.redis_server import EmbeddedRedis

ARMS = ("as-is", "flow-paused", "same-session", "same-session-idle")


def flow_pid() -> int:
    return next(p.pid for p in psutil.process_iter(["cmdline"])
                if "stream live" in " ".join(p.info["cmdline"] or []))


def one_session() -> None:
    """Children that would lead a session of their own get a process group in this one (stop_group still works)."""
    popen = subprocess.Popen

    class SameSession(popen):
        def __init__(self, *args, **kwargs):
            if kwargs.pop("start_new_session", False):
                kwargs["process_group"] = 0
            super().__init__(*args, **kwargs)

    subprocess.Popen = SameSession


KINDS = ("experiment + outcomes", "without", "experiment only")  # by round number % 3


def label(proc: psutil.Process, me: int) -> str:
    """Which part of the run a process is (its CPU is reported per part and kind of round)."""
    cmd = " ".join(proc.info["cmdline"] or [])
    if proc.info["pid"] == me:
        return "load generator"
    if "redis-server" in cmd:
        return "redis"
    if "stream live" in cmd:
        return "live flow"
    if "multiprocessing" in cmd:
        return "outcome poster"
    if "granian" in cmd or " serve" in cmd or "serving." in cmd:
        return "serving"
    return "other"


def cpu_by_part() -> dict[str, float]:
    me, out = os.getpid(), {}
    for proc in psutil.process_iter(["pid", "cmdline", "cpu_times"]):
        times = proc.info["cpu_times"]
        if times is not None:
            part = label(proc, me)
            out[part] = out.get(part, 0.0) + times.user + times.system
    return out


def main() -> None:
    arm = sys.argv[1] if len(sys.argv) > 1 else "as-is"
    if arm not in ARMS:
        sys.exit(f"ARM is one of {', '.join(ARMS)}")
    experiment_overhead.ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    warmup_s = float(sys.argv[3]) if len(sys.argv) > 3 else 30.0
    if arm.startswith("same-session"):
        one_session()
    settings = with_run_key(harness.isolated_settings("bench"))
    ml_key = apikeys.new_key()
    settings = msgspec.structs.replace(settings, api_keys=(
        *settings.api_keys, apikeys.entry_line("overhead-arms", ("ml_engineer",), ml_key)))
    os.environ[experiment_overhead.ML_KEY_ENV] = ml_key

    calls = 0
    cpu: dict[str, dict[str, list[float]]] = {}  # kind of round -> part -> % of a core in each round
    timed_open_loop = experiment_overhead.open_loop

    async def open_loop(*args, **kwargs):  # rounds come as without, experiment only, with outcomes
        nonlocal calls
        calls += 1
        if calls == 1 and arm == "same-session-idle":
            subprocess.run(["chrt", "-i", "-a", "-p", "0", str(flow_pid())], check=True)
        paused = arm == "flow-paused" and calls % 3 == 0
        if paused:
            os.kill(flow_pid(), signal.SIGSTOP)
        before, started = cpu_by_part(), time.monotonic()
        try:
            return await timed_open_loop(*args, **kwargs)
        finally:
            if paused:
                os.kill(flow_pid(), signal.SIGCONT)
            after, elapsed = cpu_by_part(), time.monotonic() - started
            kind = cpu.setdefault(KINDS[calls % 3], {})
            for part, total in after.items():
                kind.setdefault(part, []).append((total - before.get(part, 0.0)) / elapsed * 100)

    experiment_overhead.open_loop = open_loop
    redis = EmbeddedRedis(port=settings.embedded_redis_port, directory=settings.redis_dir).start(daemonize=False)
    try:
        with server.background_serve(settings, settings.data_dir / "overhead-arms-serve.log") as base_url:
            reqs = serving.Requests(settings)
            asyncio.run(closed_loop(base_url, "/v1/recommendations", reqs.recommendations, 8, warmup_s,
                                    api_key=key_for(settings, "/v1/recommendations")))
            treatment = serving.ensure_baseline(settings.models_dir, "recommender", "popularity")
            figures = experiment_overhead.run(settings, base_url, reqs.recommendations, serving.RATE, serving.STEP_S,
                                              treatment)
    finally:
        redis.stop()
    medians = []
    for name, rounds in (("without", figures.rounds_without), ("experiment only", figures.rounds_experiment_only),
                         ("experiment + outcomes", figures.rounds_with)):
        p99s = [r.p99_ms for r in rounds]
        medians.append(sorted(p99s)[len(p99s) // 2])
        print(f"{arm}: {name}: p99 {p99s} ms, median {medians[-1]} ms")
    print(f"{arm}: experiment + outcomes / without = {medians[2] / medians[0]:.2f}x")
    for kind in KINDS[1:] + KINDS[:1]:
        parts = ", ".join(f"{part} {sorted(v)[len(v) // 2]:.1f}" for part, v in sorted(cpu.get(kind, {}).items()))
        print(f"{arm}: {kind}: CPU % of a core, median of the rounds: {parts}")


if __name__ == "__main__":
    main()
