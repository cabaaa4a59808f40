"""Issue 21, item 1: the live flow's freshness and CPU at 2,500 / 5,000 / 10,000 events/s with heavy keys.

The feed is the streaming bench's mix (load_tests/bench/streaming.py: random purchases of 5,000 customers at 400
stores, a probe purchase per 10 ms tick, every probe the same product at the same store: a hot store x product
pair), plus 20 heavy customers who get 10% of the events (a new basket and product each time, so their sessions
hold 100+ products and their 28-day windows 100+ baskets within seconds). One `pantry stream live` on an isolated
copy (its own data dir and Redis db, empty state) for all rates in turn; per rate: p50/p99 of the probes' freshness
(XADD to the activity row readable), probes never seen, and the flow's CPU seconds per wall second.

    python -m experiments.live_bounded_work [SECONDS_PER_RATE] [RATE ...] [--pyspy OUT.speedscope]
    python -m experiments.live_bounded_work rows   # CPU per event + row of one heavy key, by the size it holds
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from load_tests.bench.probe import FreshnessProbe
from pantry import events
from pantry.keys import EVENT_FIELD, EVENTS_STREAM
from pantry.redis_server import sync_client
from pantry.settings import Settings, from_env, get_settings

DB = 12
ROOT = Path("/tmp/pantry-bounded-work")
HEAVY = 20  # heavy customers: ids 1..HEAVY
HEAVY_SHARE = 0.10


def _isolated(settings: Settings) -> Settings:
    shutil.rmtree(ROOT, ignore_errors=True)
    ROOT.mkdir(parents=True)
    (ROOT / "data").symlink_to(settings.dataset_dir)
    shutil.copy(settings.registry_path, ROOT / "registry.db")
    url = settings.effective_redis_url().rsplit("/", 1)[0] + f"/{DB}"
    iso = from_env({**os.environ, "PANTRY_DATA_DIR": str(ROOT), "REDIS_URL": url})
    sync_client(iso).flushdb()
    return iso


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)


def main(seconds: float, rates: list[int], pyspy: str | None) -> list[dict]:
    iso = _isolated(get_settings())
    env = {**os.environ, "PANTRY_DATA_DIR": str(iso.data_dir), "REDIS_URL": iso.effective_redis_url()}
    client = sync_client(iso)
    proc = subprocess.Popen([sys.executable, "-m", "pantry.cli", "stream", "live", "--no-progress"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    spy = None
    out: list[dict] = []
    try:
        base = datetime(2017, 4, 1, 1, tzinfo=UTC)
        client.xadd(EVENTS_STREAM, {EVENT_FIELD: events.encode_msgpack(events.ProductView(
            event_id="warm", ts=base, customer_id=1, product_id=1))})
        deadline = time.monotonic() + 120
        while float(client.hget("pantry:stream:counters", "processed") or 0) < 1:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"pantry stream live: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.1)
        if pyspy:
            spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "-s", "--nonblocking",
                                    "-r", "50", "-f", "speedscope", "-o", pyspy, "-p", str(proc.pid)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        rng = random.Random(7)
        seq = 0
        for rate in rates:
            probe = FreshnessProbe(iso)
            probe.start()
            tick = 0.01
            per_tick = max(1, int(rate * tick))
            probe_customer = 50_000_000 + rate * 1000
            sent = 0
            cpu0, started = _cpu_s(proc.pid), time.monotonic()
            next_at = started
            while time.monotonic() - started < seconds:
                pipe = client.pipeline(transaction=False)
                for _ in range(per_tick):
                    seq += 1
                    heavy = rng.random() < HEAVY_SHARE
                    e = events.Purchase(
                        event_id=f"e-{seq}", ts=base + timedelta(milliseconds=seq),
                        customer_id=rng.randrange(1, HEAVY + 1) if heavy else rng.randrange(HEAVY + 1, 5000),
                        store_id=rng.randrange(1, 400), basket_id=seq,
                        product_id=seq if heavy else rng.randrange(1, 90_000), sales_value=1.0)
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
            wall = time.monotonic() - started
            cpu = _cpu_s(proc.pid) - cpu0
            time.sleep(2.0)
            missing = len(probe.pending)  # not seen 2 s after the feed stopped: behind
            drain = time.monotonic() + 30  # let a backlog drain before the next rate (probes past it: missing)
            while probe.pending and time.monotonic() < drain:
                time.sleep(0.2)
            probe.stop.set()
            probe.join()
            lat = [x for x in probe.latencies]
            row = {"rate": rate, "seconds": round(wall, 1), "offered_per_s": round(sent / wall),
                   "probes": len(lat), "missing_after_2s": missing, "p50_ms": _pct(lat, 0.5),
                   "p99_ms": _pct(lat, 0.99), "flow_cpu_per_s": round(cpu / wall, 2),
                   "load_1m": round(os.getloadavg()[0], 2)}
            print(json.dumps(row), flush=True)
            out.append(row)
            if probe.pending:  # still behind after 30 s: the next rate would start with this one's backlog
                break
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=120)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        client.flushdb()
        shutil.rmtree(ROOT, ignore_errors=True)
    return out


def rows(sizes: tuple[int, ...] = (100, 1_000, 10_000), n: int = 500) -> list[dict]:
    """us per (event + its rows + next change) of a customer whose session and 28 days hold `size` products and
    baskets, and of a store x product pair that holds `size` sales in 28 days: the work of one event of a heavy key,
    in process (no flow), the best of 3 runs."""
    from streaming.features import customer as C
    from streaming.features import store_product as SP
    from streaming.features.event import Ev

    t0 = 1_491_004_800.0  # 2017-04-01
    out = []
    for size in sizes:
        step = 60.0 * 29 / size  # all within one session (30-min gap) and well within 28 days
        best_c = best_p = math.inf
        for _ in range(3):
            st = C.CustomerState()
            sp = SP.StoreProductState()
            for i in range(size):
                e = Ev(f"w{i}", "purchase", t0 + i * step, 1, 1, i, i, 1, 1.5)
                C.customer_apply(st, e)
                SP.store_product_apply(sp, e)
            C.customer_rows(st, C.SESSION | C.ACTIVITY)
            SP.store_product_values(sp, sp.as_of)
            events = [Ev(f"x{i}", "purchase", t0 + size * step + i * 0.001, 1, 1, size + i, size + i, 1, 1.5)
                      for i in range(n)]
            started = time.perf_counter()
            for e in events:
                C.customer_apply(st, e)
                C.customer_rows(st, C.SESSION | C.ACTIVITY)
                st.nc = None
                C.customer_next_change(st)
            best_c = min(best_c, (time.perf_counter() - started) / n)
            started = time.perf_counter()
            for e in events:
                SP.store_product_apply(sp, e)
                SP.store_product_values(sp, sp.as_of)
                SP.store_product_next_change(sp)
            best_p = min(best_p, (time.perf_counter() - started) / n)
        row = {"size": size, "customer_us": round(best_c * 1e6, 1), "pair_us": round(best_p * 1e6, 1)}
        print(json.dumps(row), flush=True)
        out.append(row)
    return out


if __name__ == "__main__":
    argv = sys.argv[1:]
    if argv[:1] == ["rows"]:
        rows()
        sys.exit(0)
    spy_out = None
    if "--pyspy" in argv:
        i = argv.index("--pyspy")
        spy_out = argv[i + 1]
        del argv[i:i + 2]
    secs = float(argv[0]) if argv else 90.0
    main(secs, [int(r) for r in argv[1:]] or [2_500, 5_000, 10_000], spy_out)
