"""Sustained part of `make bench`: the live flow fed at a fixed rate for minutes, judged minute by minute.

Each run starts `pantry stream live [--processes N]` on a fresh isolated copy (its own data dir, as streaming.py
does, and a Redis server of its own: the harness's and the demo's state are never touched), with the stream in as
many partitions as processes (PANTRY_STREAM_PARTITIONS; PANTRY_BENCH_SUSTAINED_PARTITIONS=1 for one stream whatever
the processes), and
XADDs events, each to its partition (pantry.partitions.partition_of, as the API writes them), open loop at `rate`
(each 10 ms tick sends its share whatever the flow does) for `seconds`, with the bench's mix:
  - 85% ordinary purchases: by default the Complete Journey's purchase lines in their order (`chain`: a chain's
    checkouts, baskets of ~9.4 lines, skewed products and stores), or uniformly random customers x stores x
    products with a basket per line (`uniform`, the stress variant); load_tests/bench/sustained_mix.py;
  - 10% of the events from 10 heavy customers, views and purchases alternating over 500 products, each purchase a
    new basket: sessions with 100+ products and 28-day windows with 100+ baskets within a minute;
  - 5% of the purchases, and every probe, on one hot store x product pair (store 1, product 1);
  - a freshness probe every 100 ms (10 a second): a purchase of a new customer, timed from its XADD until its
    `customer_activity` row is readable (load_tests/bench/probe.py).
Event time advances with wall time (a chain's pace), in the long run `time_scale` times as fast (below). Every
second the flow's processes' CPU time and RSS (psutil; a fork, a recovery snapshot's child, shares its parent's
pages and is not counted) and /readyz's lag (pantry.health) are sampled. Per minute (by probe send time): offered
rate, p50/p99, CPU, RSS, lag.

A rate is **held** when every minute has p99 <= 500 ms with no probe missing, the generator offered >= 95% of the
rate, and RSS is flat: the last minute's RSS within 10% of the first minute's that starts once the state is at its
steady size, i.e. once the longest window (a customer's 28 days of baskets, plus the lateness bound) is full and an
epoch (300 s) has closed; in a run where that never happens, of the second minute's (the first holds start-up
growth; with fewer than 3 minutes, of the first). At a chain's pace 28-day windows fill for 28 days, so no run of
minutes shows the state's steady size: the **long run** (the target's, 11 minutes at the first fixed rate, 2
processes) advances event time 20,000 s a wall second, so the windows are full after ~2 min and entries leave them
as fast as they come (docs/DECISIONS.md "Flat memory: a time-lapse"). After the fixed rates a short search bisects
between the highest rate held and the lowest missed (`next_rate`).

    python -m load_tests.bench.sustained [RATE ...]      # prints the figures as JSON

Settings (environment), defaults for `make bench` (adds ~24 min: five runs for each of 1 and 2 processes, the long
run):
    PANTRY_BENCH_SUSTAINED_S          seconds per run (60; --quick 30)
    PANTRY_BENCH_SUSTAINED_RATES      fixed rates, comma-separated (10000)
    PANTRY_BENCH_SUSTAINED_PROCESSES  process counts (1,2); a count the CLI refuses is reported "not available"
    PANTRY_BENCH_SUSTAINED_SEARCH     search runs per process count after the fixed rates (4; --quick 0)
    PANTRY_BENCH_SUSTAINED_LONG_S     the long run's seconds (660: the target's ten minutes, both closes inside;
                                      --quick and 0: none)
    PANTRY_BENCH_SUSTAINED_LONG_PROCESSES  its process count (2)
    PANTRY_BENCH_SUSTAINED_TIME_SCALE its event seconds per wall second (20000; 1: a chain's pace)
    PANTRY_BENCH_SUSTAINED_NICE       the flow's PANTRY_LIVE_FLOW_NICE (0: its capacity; the service's default is 10)
    PANTRY_BENCH_SUSTAINED_PARTITIONS stream partitions per run (default: as many as processes)
    PANTRY_BENCH_SUSTAINED_MIX        chain (default) or uniform (sustained_mix.py)
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import msgspec

from load_tests.bench.figures import SustainedFigures, SustainedMinute, SustainedRun
from load_tests.bench.sustained_mix import mix
from load_tests.bench.sustained_plot import worst_by_second
from load_tests.bench.sustained_sampling import FlowProcesses, Neighbours, own_redis, recovery_written, rewriting
from streaming.features.event import DAY, LATENESS_S
from streaming.retention import recovery_dir

MINUTE_S = 60.0
P99_LIMIT_MS = 500.0
RSS_FLAT = 0.10  # the last minute's RSS may exceed the reference minute's by this share
OFFERED_MIN = 0.95  # below this share of the rate the generator, not the flow, failed: not a valid "held"
SEARCH_STEP = 250  # events/s: the search stops when the gap is this small
TICK_S = 0.01
PROBE_EVERY_S = 0.1
BENCH_DB = 8  # streaming.py uses 7
BASE_TS = datetime(2017, 4, 1, 1, tzinfo=UTC)
LONGEST_WINDOW_S = 28 * DAY + LATENESS_S  # the longest any state is held (a customer's baskets, a pair's sales)
# the long run's length: ten minutes and a second epoch close inside them (the flow's clock starts a few seconds
# before the run's, so in a 600-s run the second close fell at its last second or just after it)
LONG_S = 660.0
LONG_TIME_SCALE = 20_000.0  # the long run's event seconds per wall second: the longest window is full after ~2 min


# ---- the pure parts: per-minute figures, the held rule, the search -------------------------------------------


@dataclass(frozen=True)
class Sample:
    """The flow's processes at `t` seconds into the run: cumulative CPU seconds, RSS, /readyz's lag."""

    t: float
    cpu_s: float | None
    rss_mb: float | None
    lag_s: float | None = None
    others_cpu_s: dict[str, float] | None = None  # cumulative CPU seconds of the machine's other parts: Redis, the
    # generator (this process: XADDs and probes)
    process_cpu_s: dict[str, float] | None = None  # cumulative CPU seconds of each of the flow's processes, process 0
    # (the CLI's: the source and the gate) first
    rewriting: bool = False  # Redis was rewriting its AOF
    snapshotted: bool = False  # the flow wrote its recovery store since the previous sample (an epoch's snapshot)


def _p(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _at(samples: Sequence[Sample], t: float) -> Sample | None:
    """The last sample taken at or before `t` (the first one when none was yet: the run's start; None: none)."""
    best = samples[0] if samples else None
    for s in samples:
        if s.t <= t + 1e-9:
            best = s
    return best


def per_minute(probes: Sequence[tuple[float, float | None]], sent: Sequence[tuple[float, int]],
               samples: Sequence[Sample], seconds: float, minute_s: float = MINUTE_S) -> list[SustainedMinute]:
    """Minute figures of a run of `seconds`: `probes` = (send time, latency s or None if never seen), `sent` =
    (send time, events) per tick, `samples` in time order; all times in seconds from the run's start. A last partial
    minute counts over its own length."""
    count = max(1, math.ceil(seconds / minute_s - 1e-9))
    out = []
    for m in range(count):
        start, end = m * minute_s, min(seconds, (m + 1) * minute_s)
        span = max(end - start, 1e-9)
        last = m == count - 1
        inside = [lat for t, lat in probes if start <= t < end or (last and t == end)]
        seen = [lat for lat in inside if lat is not None]
        missing = len(inside) - len(seen)
        ordered = [lat * 1000 for lat in seen] + [math.inf] * missing  # a missing probe is infinitely late
        p99 = _p(ordered, 0.99) if ordered else None
        events = sum(n for t, n in sent if start <= t < end or (last and t == end))
        a, b = _at(samples, start), _at(samples, end)
        cpu = None
        others: dict[str, float] = {}
        by_process: list[float] = []
        if a is not None and b is not None and b.t > a.t:
            if a.cpu_s is not None and b.cpu_s is not None:
                cpu = round((b.cpu_s - a.cpu_s) / (b.t - a.t) * 100, 1)
            for name, used in (b.others_cpu_s or {}).items():
                if name in (a.others_cpu_s or {}):
                    others[name] = round((used - a.others_cpu_s[name]) / (b.t - a.t) * 100, 1)
            before = a.process_cpu_s or {}
            by_process = [round((used - before[name]) / (b.t - a.t) * 100, 1)
                          for name, used in (b.process_cpu_s or {}).items() if name in before]
        out.append(SustainedMinute(
            minute=m, offered_events_per_s=round(events / span), probes=len(seen), missing_probes=missing,
            p50_ms=round(_p(seen, 0.5) * 1000, 1) if seen else None,
            p99_ms=round(p99, 1) if p99 is not None and math.isfinite(p99) else None,
            cpu_percent=cpu, rss_mb=round(b.rss_mb, 1) if b is not None and b.rss_mb is not None else None,
            lag_s=b.lag_s if b is not None else None, redis_cpu_percent=others.get("redis"),
            generator_cpu_percent=others.get("generator"), process_cpu_percent=by_process or None))
    return out


def rss_reference(minutes: Sequence[SustainedMinute], full_s: float | None = None) -> SustainedMinute:
    """The minute whose RSS the last minute's is judged against: the first that starts once the state is at its
    steady size (`full_s` seconds into the run: the longest window is full, entries leave it as fast as they come,
    and an epoch has closed), else minute 1 (minute 0 holds start-up growth), with fewer than 3 minutes minute 0."""
    if full_s is not None:
        after = [m for m in minutes[:-1] if m.minute * MINUTE_S >= full_s]
        if after:
            return after[0]
    return minutes[1] if len(minutes) >= 3 else minutes[0]


def judge(minutes: Sequence[SustainedMinute], rate: float, p99_limit_ms: float = P99_LIMIT_MS,
          rss_flat: float = RSS_FLAT, offered_min: float = OFFERED_MIN,
          full_s: float | None = None) -> tuple[bool, str]:
    """Held or not, and why in one line (the first minute that fails, else the figures that held)."""
    if not minutes:
        return False, "no minute measured"
    for m in minutes:
        if m.offered_events_per_s < offered_min * rate:
            return False, (f"minute {m.minute}: only {m.offered_events_per_s:,.0f} events/s offered of {rate:,.0f} "
                           f"(the generator fell short: not a valid run)")
        if m.missing_probes:
            return False, (f"minute {m.minute}: {m.missing_probes} of {m.probes + m.missing_probes} probes never "
                           f"readable")
        if m.p99_ms is None:
            return False, f"minute {m.minute}: no probe seen"
        if m.p99_ms > p99_limit_ms:
            return False, f"minute {m.minute}: p99 {m.p99_ms:,.0f} ms > {p99_limit_ms:g} ms"
    ref = rss_reference(minutes, full_s)
    last = minutes[-1]
    if ref.rss_mb is None or last.rss_mb is None:
        return False, "RSS not measured"
    if last.rss_mb > ref.rss_mb * (1 + rss_flat):
        return False, (f"RSS grew: {last.rss_mb:,.0f} MB in minute {last.minute} against {ref.rss_mb:,.0f} MB in "
                       f"minute {ref.minute} (> {rss_flat:.0%})")
    worst = max(m.p99_ms or 0.0 for m in minutes)
    return True, (f"held: worst minute p99 {worst:,.0f} ms <= {p99_limit_ms:g} ms, RSS {ref.rss_mb:,.0f} -> "
                  f"{last.rss_mb:,.0f} MB")


def next_rate(held: Sequence[int], missed: Sequence[int], step: int = SEARCH_STEP) -> int | None:
    """The next rate to try: midway between the highest held rate and the lowest missed one above it (rounded to
    `step`); double the highest when nothing was missed; None when the gap is within `step` or nothing was held
    nor missed."""
    top = max(held, default=0)
    above = [r for r in missed if r > top]
    if not above:
        return top * 2 if top else None
    low = min(above)
    if low - top <= step:
        return None
    mid = round((top + low) / 2 / step) * step
    return mid if top < mid < low else None


# ---- the run ---------------------------------------------------------------------------------------------------


def _isolated(settings, redis_url: str):
    from load_tests.bench import streaming

    return streaming._isolated(settings, name="bench-sustained", db=BENCH_DB, redis_url=redis_url)


def processes_available(processes: int) -> str | None:
    """None when `pantry stream live` takes `--processes N` (or N is 1), else why not."""
    if processes == 1:
        return None
    from load_tests.bench.streaming import _pantry

    done = subprocess.run(_pantry("stream", "live", "--help"), capture_output=True, text=True)
    if "--processes" not in done.stdout:
        return "not available: `pantry stream live` has no --processes option in this checkout"
    return None


def _wait_started(client, proc: subprocess.Popen, partitions: int, timeout_s: float = 120) -> None:
    from pantry import events
    from pantry.keys import EVENT_FIELD
    from pantry.partitions import counters_key, events_stream, partition_of

    partition = partition_of(99, None, partitions)
    client.xadd(events_stream(partition), {EVENT_FIELD: events.encode_msgpack(events.ProductView(
        event_id="sustained-warm", ts=BASE_TS, customer_id=99, product_id=2))})
    deadline = time.monotonic() + timeout_s
    while float(client.hget(counters_key(partition), "processed") or 0) < 1:
        if proc.poll() is not None:
            raise RuntimeError(f"pantry stream live exited: {proc.stderr.read().decode()[-2000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError("pantry stream live processed nothing within 120 s")
        time.sleep(0.1)


def run_rate(settings, rate: int, seconds: float, processes: int = 1, time_scale: float = 1.0) -> SustainedRun:
    """One run on a fresh isolated copy with a Redis of its own; the flow is SIGTERMed at the end. Event time
    advances `time_scale` seconds a wall second (module docstring)."""
    server = own_redis(settings)
    try:
        return _run_rate(settings, server, rate, seconds, processes, time_scale)
    finally:
        server.stop()
        shutil.rmtree(server.directory, ignore_errors=True)


def _run_rate(settings, server, rate: int, seconds: float, processes: int, time_scale: float) -> SustainedRun:
    from load_tests.bench.probe import FreshnessProbe
    from load_tests.bench.streaming import _env, _pantry
    from pantry import events
    from pantry.featurestore import repo
    from pantry.health import live_flow
    from pantry.keys import EVENT_FIELD
    from pantry.partitions import events_stream, partition_of
    from pantry.redis_server import sync_client
    from streaming.runner import snapshot_interval_s

    next_event = mix(settings, mix_name(), seed=rate)  # before the flow starts: the chain mix reads the data set
    bench = _isolated(settings, server.url)
    client = sync_client(bench)
    partitions = int(os.environ.get("PANTRY_BENCH_SUSTAINED_PARTITIONS", processes))
    streams = [events_stream(p) for p in range(partitions)]
    args = ["stream", "live", "--no-progress", *(["--processes", str(processes)] if processes > 1 else [])]
    # the flow's capacity, not its politeness: `pantry stream live` renices itself (PANTRY_LIVE_FLOW_NICE, 10: answers
    # first), which on a shared machine measures the neighbours; the bench runs it at normal priority unless told
    env = {**_env(bench), "PANTRY_LIVE_FLOW_NICE": os.environ.get("PANTRY_BENCH_SUSTAINED_NICE", "0"),
           "PANTRY_STREAM_PARTITIONS": str(partitions)}
    proc = subprocess.Popen(_pantry(*args), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_started(client, proc, partitions)
        flow = FlowProcesses(proc.pid)
        others = Neighbours(int(client.info("server")["process_id"]))
        probe = FreshnessProbe(bench, repo.layout(bench))
        probe.start()
        sent: list[tuple[float, int]] = []
        samples: list[Sample] = []
        per_tick = rate * TICK_S
        owed = 0.0
        seq, probe_customer = 0, 60_000_000
        started = time.monotonic()
        next_at, next_probe, next_sample = started, started, started
        store = recovery_dir(bench)
        last_written = recovery_written(store)
        while (now := time.monotonic()) - started < seconds:
            if now >= next_sample:
                cpu, rss, each = flow.sample()
                lag = live_flow(client, 0, partitions=partitions).lag_s
                written = recovery_written(store)
                samples.append(Sample(now - started, cpu, rss, lag, others.sample(), each, rewriting(client),
                                      written > last_written))
                last_written = written
                next_sample += 1.0
            ts = BASE_TS + timedelta(seconds=(now - started) * time_scale)
            owed += per_tick
            n = int(owed)
            owed -= n
            pipe = client.pipeline(transaction=False)
            for _ in range(n):
                seq += 1
                e = next_event(seq, ts)
                pipe.xadd(streams[partition_of(e.customer_id, None, partitions)],
                          {EVENT_FIELD: events.encode_msgpack(e)})
            is_probe = now >= next_probe
            if is_probe:
                probe_customer += 1
                probe_event = events.Purchase(
                    event_id=f"probe-{probe_customer}", ts=ts, customer_id=probe_customer, store_id=1,
                    basket_id=10**12 + probe_customer, product_id=1, sales_value=1.0)
                pipe.xadd(streams[partition_of(probe_customer, None, partitions)],
                          {EVENT_FIELD: events.encode_msgpack(probe_event)})
                next_probe += PROBE_EVERY_S
            pipe.execute()
            if is_probe:
                probe.expect(probe_customer, time.monotonic())
            sent.append((now - started, n + is_probe))
            next_at += TICK_S
            time.sleep(max(0.0, next_at - time.monotonic()))
        elapsed = time.monotonic() - started
        cpu, rss, each = flow.sample()
        lag = live_flow(client, 0, partitions=partitions).lag_s
        samples.append(Sample(min(elapsed, seconds), cpu, rss, lag, others.sample(), each, rewriting(client)))
        drain_until = time.monotonic() + 5.0  # the last probes: 5 s, ten times the limit
        while probe.pending and time.monotonic() < drain_until:
            time.sleep(0.05)
        probe.stop.set()
        probe.join()
        seen = [(s - started, lat) for s, lat in zip(probe.sent, probe.latencies, strict=True)]
        with probe.lock:
            missing: list[tuple[float, float | None]] = [(t - started, None) for t in probe.pending.values()]
        minutes = per_minute(seen + missing, sent, samples, seconds)  # the planned length: every send is before it
        # the state is at its steady size once the longest window is full and an epoch has closed (what the flow
        # keeps between two snapshots grows with the epoch's length)
        full_s = max(LONGEST_WINDOW_S / time_scale, snapshot_interval_s(bench, "live"))
        held, verdict = judge(minutes, rate, full_s=full_s)
        return SustainedRun(rate_per_s=rate, processes=processes, partitions=partitions, seconds=seconds,
                            time_scale=time_scale,
                            minutes=minutes, held=held, verdict=verdict,
                            worst_ms_by_second=worst_by_second(seen + missing, seconds),
                            redis_rewrite_s=sorted({int(s.t) for s in samples if s.rewriting}),
                            snapshot_s=sorted({int(s.t) for s in samples if s.snapshotted}))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(bench.data_dir, ignore_errors=True)  # the run's Redis goes with it (run_rate)


def search(run: Callable[[int], SustainedRun], runs: list[SustainedRun], steps: int) -> int | None:
    """Up to `steps` more runs bisecting between the highest held and lowest missed rate; the highest held."""
    for _ in range(steps):
        rate = next_rate([r.rate_per_s for r in runs if r.held], [r.rate_per_s for r in runs if not r.held])
        if rate is None:
            break
        runs.append(run(rate))
    return max((r.rate_per_s for r in runs if r.held), default=None)


def mix_name() -> str:
    return os.environ.get("PANTRY_BENCH_SUSTAINED_MIX", "chain")


def _ints(name: str, default: str) -> list[int]:
    return [int(x) for x in os.environ.get(name, default).split(",") if x.strip()]


def run(settings, quick: bool = False, rates: Sequence[int] | None = None) -> SustainedFigures:
    seconds = float(os.environ.get("PANTRY_BENCH_SUSTAINED_S", "30" if quick else "60"))
    rates = list(rates or _ints("PANTRY_BENCH_SUSTAINED_RATES", "10000"))
    steps = int(os.environ.get("PANTRY_BENCH_SUSTAINED_SEARCH", "0" if quick else "4"))
    figures = SustainedFigures(runs=[], p99_limit_ms=P99_LIMIT_MS, notes=[
        f"{seconds:g} s per run but the long one; the {mix_name()} mix (load_tests/bench/sustained_mix.py), the "
        "rules in load_tests/bench/sustained.py; shared 2-core machine"])
    for processes in _ints("PANTRY_BENCH_SUSTAINED_PROCESSES", "1,2"):
        why = processes_available(processes)
        if why:
            figures.not_available[str(processes)] = why
            continue
        runs = [run_rate(settings, rate, seconds, processes) for rate in rates]

        def again(rate: int, processes: int = processes) -> SustainedRun:
            return run_rate(settings, rate, seconds, processes)

        figures.highest_held_per_s[str(processes)] = search(again, runs, steps)
        figures.runs += runs
    long_s = float(os.environ.get("PANTRY_BENCH_SUSTAINED_LONG_S", "0" if quick else str(LONG_S)))
    if long_s > 0:  # the target's run (load_tests/bench/targets.py): the first fixed rate, time-lapsed
        processes = int(os.environ.get("PANTRY_BENCH_SUSTAINED_LONG_PROCESSES", "2"))
        scale = float(os.environ.get("PANTRY_BENCH_SUSTAINED_TIME_SCALE", str(LONG_TIME_SCALE)))
        figures.runs.append(run_rate(settings, rates[0], long_s, processes, scale))
    return figures


if __name__ == "__main__":
    from pantry.settings import get_settings

    chosen = [int(a) for a in sys.argv[1:]] or None
    print(msgspec.json.format(msgspec.json.encode(run(get_settings(), rates=chosen))).decode())
