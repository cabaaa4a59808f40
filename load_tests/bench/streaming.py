"""Streaming part of `make bench`: replay throughput, replay vs Feast's push, live freshness.

Measures, on its own data dir and Redis db (the harness's stream state is left alone):
  replay      events/s of `pantry stream replay` (a subprocess, real Bytewax, Feast-layout writes + feature log):
              the full year with `--processes 2` (what the targets compare), and Jan-Mar (up to REPLAY_UNTIL) in
              one process beside it; each run starts over
  push        Feast's plain path: FeatureStore.push of PUSH_ROWS store_product rows (rows/s), the peer
  freshness   `pantry stream live` (subprocess) fed by XADD at 1,000 and 5,000 events/s; p50/p99 from the
              XADD of a probe purchase to its row being readable in the online store
  memory      peak RSS of the dataflow processes

    python -m load_tests.bench.streaming      # with the current settings; prints the figures as JSON
"""

from __future__ import annotations

import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import msgspec
import redis

from load_tests.bench.figures import FreshnessRun, PushRun, ReplayRun, StreamingFigures
from load_tests.bench.probe import FreshnessProbe
from pantry import events
from pantry.keys import EVENT_FIELD, EVENTS_STREAM
from pantry.redis_server import sync_client
from pantry.settings import Settings, from_env

REPLAY_UNTIL = datetime(2017, 4, 1, tzinfo=UTC)
PUSH_ROWS = 20_000
RATES = (1_000, 5_000)
RATE_SECONDS = 8.0
QUICK_RATE_SECONDS = 4.0
BENCH_DB = 7


def _isolated(settings: Settings, name: str = "bench-stream", db: int = BENCH_DB,
              redis_url: str | None = None) -> Settings:
    """A fresh copy under `name` in the data dir (the dataset linked, the registry copied) on Redis db `db` (of
    the settings' Redis, or of `redis_url`'s server)."""
    root = settings.data_dir / name
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    (root / "data").symlink_to(settings.dataset_dir)
    shutil.copy(settings.registry_path, root / "registry.db")
    base = redis_url or settings.redis_url or settings.effective_redis_url()
    url = base.rsplit("/", 1)[0] + f"/{db}"
    bench = from_env({**os.environ, "PANTRY_DATA_DIR": str(root), "REDIS_URL": url})
    flush_when_loaded(sync_client(bench))
    return bench


def flush_when_loaded(client, timeout_s: float = 300.0) -> None:
    """FLUSHDB once Redis has read its data back: the bench's Redis, restarted between two parts, answers LOADING
    for as long as its AOF takes (10.8 s before the sustained part of one `make bench`, which then failed)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client.flushdb()
            return
        except redis.BusyLoadingError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _env(settings: Settings) -> dict[str, str]:
    return {**os.environ, "PANTRY_DATA_DIR": str(settings.data_dir), "REDIS_URL": settings.effective_redis_url()}


def _pantry(*args: str) -> list[str]:
    return [sys.executable, "-m", "pantry.cli", *args]


def bench_replay(settings: Settings, processes: int = 1, until: datetime | None = REPLAY_UNTIL) -> ReplayRun:
    """`pantry stream replay --force` (starts over) until `until` (None: the whole year) in `processes` processes."""
    from streaming import runner

    args = (["--until", until.date().isoformat()] if until else []) + ["--processes", str(processes)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    done = subprocess.run(_pantry("stream", "replay", *args, "--no-progress", "--force"), env=_env(settings),
                          capture_output=True)
    if done.returncode != 0:
        raise RuntimeError(f"`pantry stream replay {' '.join(args)}` exited with {done.returncode}: "
                           f"{done.stderr.decode(errors='replace')[-1500:]}")
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    record = runner.read_record(settings)
    if record is None:
        raise RuntimeError(f"`pantry stream replay {' '.join(args)}` left no replay record")
    return ReplayRun(
        configuration=" ".join(args), processes=processes, events=record.events, until=record.until,
        events_per_s=round(record.events / record.seconds),  # flow build + run + final flush
        wall_s_with_process_start=round(wall, 1),
        events_per_s_with_process_start=round(record.events / wall),
        cpu_s_with_process_start=round(cpu, 1),
    )


def bench_push(settings: Settings, n: int = PUSH_ROWS) -> PushRun:
    import pandas as pd

    from pantry.featurestore import feast_sdk, repo

    feast_sdk.import_feast()
    from feast.data_source import PushMode

    fs = repo.store(settings)
    now = pd.Timestamp(REPLAY_UNTIL)
    df = pd.DataFrame({
        "store_id": [i % 400 for i in range(n)],
        "product_id": [1_000_000 + i for i in range(n)],
        "units_7d": [i % 5 for i in range(n)],
        "units_28d": [i % 9 for i in range(n)],
        "last_sold_at": [now] * n,
        "on_hand": [None] * n,
        "in_stock_prob": [0.9] * n,
        "on_display": [False] * n,
        "in_mailer": [False] * n,
        "event_timestamp": [now] * n,
    })
    df["on_hand"] = df["on_hand"].astype("Int64")
    started = time.monotonic()
    fs.push("store_product_push", df, to=PushMode.ONLINE)
    took = time.monotonic() - started
    return PushRun(rows=n, rows_per_s=round(n / took), seconds=round(took, 2))


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench_freshness(settings: Settings, seconds: float = RATE_SECONDS) -> tuple[list[FreshnessRun], int]:
    from pantry.featurestore import repo

    layout = repo.layout(settings)
    client = sync_client(settings)
    proc = subprocess.Popen(_pantry("stream", "live", "--no-progress"), env=_env(settings),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    out: list[FreshnessRun] = []
    try:
        base = REPLAY_UNTIL + timedelta(hours=1)  # within the live gate's skew (a day past the watermark)
        seq = 0
        # wait for the flow: the warm-up event processed
        before = float(client.hget("pantry:stream:counters", "processed") or 0)
        client.xadd(EVENTS_STREAM, {EVENT_FIELD: events.encode_msgpack(events.ProductView(
            event_id="bench-warm", ts=base, customer_id=1, product_id=1))})
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and float(client.hget("pantry:stream:counters", "processed") or 0) <= before:
            if proc.poll() is not None:
                raise RuntimeError(f"pantry stream live exited: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.1)
        rng = random.Random(7)
        for rate in RATES:
            probe = FreshnessProbe(settings, layout)
            probe.start()
            tick = 0.01
            per_tick = max(1, int(rate * tick))
            started = time.monotonic()
            next_at = started
            probe_customer = 50_000_000 + rate * 1000
            sent = 0
            while time.monotonic() - started < seconds:
                pipe = client.pipeline(transaction=False)
                for _ in range(per_tick):
                    seq += 1
                    ts = base + timedelta(milliseconds=seq)
                    e = events.Purchase(event_id=f"bench-{rate}-{seq}", ts=ts, customer_id=rng.randrange(1, 5000),
                                        store_id=rng.randrange(1, 400), basket_id=seq,
                                        product_id=rng.randrange(1, 90_000), sales_value=1.0)
                    pipe.xadd(EVENTS_STREAM, {EVENT_FIELD: events.encode_msgpack(e)})
                probe_customer += 1
                e = events.Purchase(event_id=f"probe-{probe_customer}", ts=base + timedelta(milliseconds=seq),
                                    customer_id=probe_customer, store_id=1, basket_id=10**9 + probe_customer,
                                    product_id=1, sales_value=1.0)
                pipe.xadd(EVENTS_STREAM, {EVENT_FIELD: events.encode_msgpack(e)})
                pipe.execute()
                probe.expect(probe_customer, time.monotonic())
                sent += per_tick + 1
                next_at += tick
                time.sleep(max(0.0, next_at - time.monotonic()))
            achieved = sent / (time.monotonic() - started)
            time.sleep(1.0)
            probe.stop.set()
            probe.join()
            lat = probe.latencies
            out.append(FreshnessRun(
                rate_per_s=rate, seconds=seconds, offered_events_per_s=round(achieved), probes=len(lat),
                missing_probes=len(probe.pending),
                p50_ms=round(_percentile(lat, 0.5) * 1000, 1) if lat else None,
                p99_ms=round(_percentile(lat, 0.99) * 1000, 1) if lat else None,
            ))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return out, proc.returncode


def run(settings: Settings, quick: bool = False) -> StreamingFigures:
    bench = _isolated(settings)
    try:
        # the figure: the full year, in the faster configuration (2 processes: measured 2x one process on
        # the full year); then Jan-Mar in one process, which also leaves the state the live flow continues from
        full = bench_replay(bench, processes=2, until=None)
        jan_mar = bench_replay(bench, processes=1)
        push = bench_push(bench)
        freshness, live_rc = bench_freshness(bench, QUICK_RATE_SECONDS if quick else RATE_SECONDS)
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        return StreamingFigures(replay_full=full, replay_jan_mar=jan_mar, push=push, freshness=freshness,
                                live_exit_code=live_rc, dataflow_peak_rss_mb=round(peak_mb, 1))
    finally:
        sync_client(bench).flushdb()
        shutil.rmtree(bench.data_dir, ignore_errors=True)


if __name__ == "__main__":
    from pantry.settings import get_settings

    print(msgspec.json.format(msgspec.json.encode(run(get_settings()))).decode())
