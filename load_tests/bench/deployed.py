"""Serving as deployed: `pantry serve` with its live dataflow beside it, as `make demo` runs them, events posted to
/v1/events at EVENT_RATE the whole time, and each answer open loop at RATE (latency from the scheduled send time):
recommendations, next best action, and substitutions for 1, 3 and 10 items of an order (items the shopper buys);
then recommendations flat out. Each 100 ms a probe purchase of a new customer rides in an event batch: freshness is
the time from its POST until its `customer_activity` row is readable in Redis, reported for the probes sent while
the answers ran at their rate, and apart for those sent while recommendations ran flat out.

The events come from a process of their own (`EventFeeder`), so that posting them does not slow the answers'
client; the 2-core machine is shared by all of it, as in a demo.

    python -m load_tests.bench.deployed http://127.0.0.1:8000   # a running `pantry serve` with its live flow
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

import httpx
import msgspec

from load_tests.bench.figures import DeployedFigures, EventFeed, Load
from load_tests.bench.openloop import Conn, closed_loop, open_loop, percentile
from load_tests.bench.probe import FreshnessProbe
from load_tests.bench.serving import Requests
from load_tests.keys import key_for
from pantry import client as api
from pantry import events as ev
from pantry.settings import Settings

EVENT_RATE = 500.0
BATCH = 10  # events per POST (a store's or the app's batch): EVENT_RATE / BATCH posts per second
PROBE_EVERY_S = 0.1
RATE = 300.0
STEP_S, QUICK_STEP_S = 8.0, 3.0
ITEMS = (1, 3, 10)
SATURATION_CONNECTIONS = 48
READY_TIMEOUT_S = 180.0  # the live flow catches up on what the serving part left in the stream
PROBE_BASE = 70_000_000  # probe customers: ids the data set does not have


def _feed(base_url: str, key: str, rate: float, seconds: float, start_ts: float, customers: list[int],
          products: list[int], stores: list[int], out: str, ready) -> None:
    """The event feeder's process: batches of BATCH events at `rate` events/s for `seconds`, probes in them."""
    from pantry.settings import get_settings

    probe = FreshnessProbe(get_settings())
    probe.start()
    rng = random.Random(11)
    url = urlparse(base_url)
    counts = {"posted": 0, "accepted": 0, "errors": 0, "probes": 0}

    def event(i: int, t: datetime) -> ev.BaseEvent:
        customer, product, store = rng.choice(customers), rng.choice(products), rng.choice(stores)
        kind = i % 10
        if kind < 5:
            return ev.ProductView(event_id=f"deployed-{i}", ts=t, customer_id=customer, store_id=store,
                                  product_id=product)
        if kind < 7:
            return ev.AddToCart(event_id=f"deployed-{i}", ts=t, customer_id=customer, store_id=store,
                                product_id=product, quantity=1)
        return ev.Purchase(event_id=f"deployed-{i}", ts=t, customer_id=customer, store_id=store, basket_id=10**12 + i,
                           product_id=product, sales_value=2.5)

    async def run() -> None:
        conn = Conn(url.hostname, url.port, {"X-API-Key": key})
        interval = BATCH / rate
        started = time.monotonic()
        base = datetime.fromtimestamp(start_ts, UTC)
        seq = probes = 0
        next_probe = started
        ready.set()
        n = 0
        while (now := time.monotonic()) - started < seconds:
            t = base + timedelta(seconds=now - started)
            batch = []
            for _ in range(BATCH):
                seq += 1
                batch.append(event(seq, t))
            probe_id = None
            if now >= next_probe:
                probes += 1
                probe_id = PROBE_BASE + probes
                next_probe += PROBE_EVERY_S
                batch[-1] = ev.Purchase(event_id=f"probe-{probe_id}", ts=t, customer_id=probe_id, store_id=1,
                                        basket_id=2 * 10**12 + probe_id, product_id=1, sales_value=1.0)
            sent_at = time.monotonic()
            try:
                status, _ = await conn.request("/v1/events", api.send_events(batch).body)
            except (OSError, ConnectionError, asyncio.IncompleteReadError):
                status = 0
                conn.close()
            counts["posted"] += len(batch)
            if status == 202:
                counts["accepted"] += len(batch)
                if probe_id is not None:
                    counts["probes"] += 1
                    probe.expect(probe_id, sent_at)
            else:
                counts["errors"] += 1
            n += 1
            await asyncio.sleep(max(0.0, started + n * interval - time.monotonic()))
        conn.close()

    asyncio.run(run())
    time.sleep(2.0)  # the last probes' rows
    probe.stop.set()
    probe.join()
    Path(out).write_text(json.dumps({**counts, "missing": len(probe.pending), "seconds": seconds,
                                     "latencies_ms": [x * 1000 for x in probe.latencies], "sent": probe.sent}))


class EventFeeder:
    def __init__(self, base_url: str, key: str, rate: float, seconds: float, start_ts: float, reqs: Requests,
                 out: Path):
        ctx = multiprocessing.get_context("spawn")
        self.ready = ctx.Event()
        self.out = out
        self.process = ctx.Process(target=_feed, name="event-feeder", args=(
            base_url, key, rate, seconds, start_ts, reqs.customers, reqs.products, reqs.stores, str(out), self.ready))

    def __enter__(self) -> EventFeeder:
        self.process.start()
        if not self.ready.wait(120):
            raise RuntimeError("the event feeder did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.join(timeout=60)
        if self.process.is_alive():
            self.process.kill()

    def result(self, flat_out_from: float) -> EventFeed:
        """Freshness of the probes sent while the answers were asked at their rate, and apart, of those sent from
        `flat_out_from` (time.monotonic) on, while recommendations were asked flat out: a saturated service is a
        different setting, and its queue is the flow's too."""
        data = json.loads(self.out.read_text())
        pairs = list(zip(data["sent"], data["latencies_ms"], strict=True))
        at_rate = sorted(ms for sent, ms in pairs if sent < flat_out_from)
        flat_out = sorted(ms for sent, ms in pairs if sent >= flat_out_from)
        return EventFeed(rate_per_s=EVENT_RATE, offered_events_per_s=round(data["posted"] / data["seconds"]),
                         accepted=data["accepted"], failed_posts=data["errors"], probes=len(at_rate),
                         missing_probes=data["missing"],
                         freshness_p50_ms=_round(percentile(at_rate, 0.5)),
                         freshness_p99_ms=_round(percentile(at_rate, 0.99)),
                         flat_out_probes=len(flat_out), flat_out_freshness_p99_ms=_round(percentile(flat_out, 0.99)))


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


def substitution_bodies(reqs: Requests, items: int):
    """Substitutions for `items` products the shopper buys (an order's missing items), at their store."""
    def body() -> bytes:
        customer, store = reqs.rng.choice(reqs.pairs)
        bought = reqs.bought.get(customer, [])
        picked = reqs.rng.sample(bought, min(items, len(bought)))
        while len(picked) < items:
            picked.append(reqs.rng.choice(reqs.products))
        return api.substitutions(customer, store, picked, k=3).body
    return body


def wait_ready(base_url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{base_url}/readyz", timeout=5)
            if r.status_code == 200:
                return
            last = "; ".join(r.json().get("reasons", []))
        except httpx.HTTPError as exc:
            last = str(exc)
        time.sleep(1.0)
    raise RuntimeError(f"not ready within {timeout_s:.0f} s: {last}")


def run(settings: Settings, base_url: str | None = None, quick: bool = False) -> DeployedFigures:
    base_url = base_url or f"http://{settings.host}:{settings.port}"
    step_s = QUICK_STEP_S if quick else STEP_S
    wait_ready(base_url, READY_TIMEOUT_S)
    reqs = Requests(settings)
    answers = {"recommendations": ("/v1/recommendations", reqs.recommendations),
               **{f"substitutions, {n} item{'s' if n > 1 else ''}": ("/v1/substitutions", substitution_bodies(reqs, n))
                  for n in ITEMS},
               "next-best-action": ("/v1/next-best-action", reqs.next_best_action)}
    clock = api.PantryClient(base_url, key_for(settings, "/v1/clock")).clock()
    warmup_s = 4.0
    seconds = warmup_s + len(answers) * (step_s + 1.5) + step_s + 4.0
    work = settings.data_dir / "deployed-bench"
    work.mkdir(parents=True, exist_ok=True)
    measured: dict[str, Load] = {}
    with EventFeeder(base_url, key_for(settings, "/v1/events"), EVENT_RATE, seconds, clock.now.timestamp(), reqs,
                     work / "feed.json") as feeder:
        time.sleep(warmup_s)  # the flow under its steady load before anything is measured
        for name, (path, bodies) in answers.items():
            key = key_for(settings, path)
            asyncio.run(closed_loop(base_url, path, bodies, 4, 1.0, api_key=key))  # lazy loads, not reported
            measured[name] = asyncio.run(open_loop(base_url, path, bodies, RATE, step_s, api_key=key))
            print(f"deployed bench {name}: {measured[name]}", flush=True)
        flat_out_from = time.monotonic()
        saturation = asyncio.run(closed_loop(base_url, "/v1/recommendations", reqs.recommendations,
                                             SATURATION_CONNECTIONS, step_s,
                                             api_key=key_for(settings, "/v1/recommendations")))
        print(f"deployed bench recommendations flat out: {saturation}", flush=True)
    events = feeder.result(flat_out_from)
    print(f"deployed bench events: {events}", flush=True)
    return DeployedFigures(rate_rps=RATE, step_s=step_s, connections=SATURATION_CONNECTIONS, answers=measured,
                           recommendations_saturation=saturation, events=events)


if __name__ == "__main__":
    from pantry.settings import get_settings

    figures = run(get_settings(), sys.argv[1] if len(sys.argv) > 1 else None)
    print(msgspec.json.format(msgspec.json.encode(figures)).decode())
