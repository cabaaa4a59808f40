"""The asyncio driver of `pantry simulate`: visits through the HTTP API with httpx, N in flight (schedule.py),
a tqdm bar, and the counts of the summary. A non-2xx answer or a connection error is counted, never raised.

The event clock: POST /v1/events rejects an event more than the skew (a day) ahead of the service clock, which the
live flow moves as it processes what we post. Before starting a visit past `max_accepted_ts - CLOCK_MARGIN_S` (GET
/v1/clock) the driver waits for the flow to catch up (at most `clock_wait_s`; the wait is in the summary).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import msgspec

from load_tests.simulate.schedule import Schedule
from load_tests.simulate.script import EVENTS, OfferMemory, Reply, VisitResult, visit_script
from load_tests.simulate.visits import Visit
from pantry import client as api

CLOCK_MARGIN_S = 3600.0
RETRY_STATUSES = (0, 429, 503)  # events batches are idempotent (serving/ingest.py): resent on these, twice



class Clock(msgspec.Struct):
    now: datetime
    max_accepted_ts: datetime


@dataclass
class Stats:
    visits: int = 0
    requests: Counter[str] = field(default_factory=Counter)
    non_2xx: Counter[tuple[str, int]] = field(default_factory=Counter)  # (path, status); status 0: no answer
    fallbacks: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)  # events accepted (202), by type
    latency_ms: dict[str, list[float]] = field(default_factory=dict)
    undecodable: int = 0
    clock_wait_s: float = 0.0
    elapsed_s: float = 0.0
    stopped: str = ""  # why the run ended before its last visit (empty: it did not)
    errors: list[str] = field(default_factory=list)  # the first few error messages, for the summary

    def add(self, result: VisitResult) -> None:
        self.visits += 1
        self.fallbacks.update(result.fallbacks)
        self.outcomes.update(result.outcomes)
        self.undecodable += result.undecodable

    def record(self, path: str, status: int, ms: float, detail: str = "") -> None:
        self.requests[path] += 1
        self.latency_ms.setdefault(path, []).append(ms)
        if not 200 <= status < 300:
            self.non_2xx[(path, status)] += 1
            if len(self.errors) < 5:
                self.errors.append(f"{path} -> {status or 'no answer'}: {detail[:200]}")

    def summary(self) -> str:
        total = sum(self.requests.values())
        events = sum(n for k, n in self.outcomes.items() if " " not in k)
        secs = max(self.elapsed_s, 1e-9)
        lines = [f"visits {self.visits:,} in {self.elapsed_s:.1f} s ({self.visits / secs:,.1f} visits/s); "
                 f"requests {total:,} ({total / secs:,.1f}/s); events accepted {events:,} ({events / secs:,.1f}/s)"]
        for path in sorted(self.requests):
            ms = sorted(self.latency_ms.get(path, [0.0]))
            p50, p99 = ms[len(ms) // 2], ms[min(len(ms) - 1, int(len(ms) * 0.99))]
            lines.append(f"  {path:<22} {self.requests[path]:>8,} requests  p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  "
                         f"fallback {self.fallbacks.get(path, 0):,}")
        lines.append("  outcomes: " + ", ".join(f"{k} {n:,}" for k, n in sorted(self.outcomes.items())))
        errors = sum(self.non_2xx.values())
        lines.append(f"  non-2xx or no answer: {errors:,}" + (" (" + ", ".join(
            f"{p} {s or 'no answer'} x{n}" for (p, s), n in sorted(self.non_2xx.items())) + ")" if errors else ""))
        if self.undecodable:
            lines.append(f"  undecodable answers: {self.undecodable:,}")
        if self.clock_wait_s:
            lines.append(f"  waited {self.clock_wait_s:.1f} s for the service clock (the live flow catching up)")
        lines += [f"  e.g. {e}" for e in self.errors]
        if self.stopped:
            lines.append(f"  STOPPED: {self.stopped}")
        return "\n".join(lines)


class ClockGap(Exception):
    """The next visit is past what the service accepts, and waiting did not move its clock there: the data has no
    visit for longer than the service's event skew, so no event can move the clock across the gap."""


class Driver:
    def __init__(self, client: httpx.AsyncClient, client_key: str, ingest_key: str, stats: Stats):
        self.client, self.stats = client, stats
        self.keys = {"client": client_key, "ingest": ingest_key}
        self.accepted_until: float | None = None

    async def post(self, call: api.Call) -> Reply:
        """Sends a call of the visit's script; the answers' statuses and times go into the stats. (pantry.client's
        calls, sent here rather than by its client: every attempt is counted, and only event batches, which are
        idempotent, are retried.)"""
        path, body = call.path, call.body
        headers = {"content-type": "application/json",
                   "X-API-Key": self.keys["ingest" if path == EVENTS else "client"]}
        for attempt in range(3):
            start = time.perf_counter()
            try:
                resp = await self.client.post(path, content=body, headers=headers)
                reply = Reply(resp.status_code, resp.content)
            except httpx.HTTPError as exc:
                reply = Reply(0, repr(exc).encode())
            self.stats.record(path, reply.status, (time.perf_counter() - start) * 1000,
                              "" if reply.ok else reply.body.decode(errors="replace"))
            if path != EVENTS or reply.status not in RETRY_STATUSES or attempt == 2:
                return reply
            await asyncio.sleep(0.5 * (attempt + 1))
        return reply

    async def clock(self) -> Clock | None:
        try:
            resp = await self.client.get("/v1/clock", headers={"X-API-Key": self.keys["client"]})
            return msgspec.json.decode(resp.content, type=Clock) if resp.status_code == 200 else None
        except (httpx.HTTPError, msgspec.DecodeError, msgspec.ValidationError):
            return None

    async def wait_for_clock(self, visit: Visit, max_wait_s: float) -> None:
        """Until the service accepts events an hour past this visit (or max_wait_s has passed)."""
        if self.accepted_until is not None and visit.t <= self.accepted_until - CLOCK_MARGIN_S:
            return
        start = time.monotonic()
        while True:
            clock = await self.clock()
            if clock is not None:
                self.accepted_until = clock.max_accepted_ts.timestamp()
                if visit.t <= self.accepted_until - CLOCK_MARGIN_S:
                    break
            if time.monotonic() - start > max_wait_s:
                break
            await asyncio.sleep(0.2)
        self.stats.clock_wait_s += time.monotonic() - start
        if self.accepted_until is not None and visit.t > self.accepted_until:
            accepted = datetime.fromtimestamp(self.accepted_until, UTC).isoformat(timespec="seconds")
            raise ClockGap(f"the visit at {datetime.fromtimestamp(visit.t, UTC).isoformat(timespec='seconds')} is past "
                           f"what the service accepts ({accepted}) after {max_wait_s:g} s of waiting: the data has no "
                           "visit for longer than the service's event skew (PANTRY_EVENT_SKEW_EVENT_S, a day), so its "
                           "clock cannot cross the gap; end the window before it, or serve with a larger skew")

    async def visit(self, visit: Visit, memory: OfferMemory, as_of: bool) -> None:
        script = visit_script(visit, memory, as_of)
        try:
            call = next(script)
            while True:
                call = script.send(await self.post(call))
        except StopIteration as done:
            self.stats.add(done.value)


async def simulate(visits: Iterable[Visit], base_url: str, client_key: str, ingest_key: str, *, concurrency: int = 8,
                   window_s: float = 300.0, as_of: bool = False, clock_wait_s: float = 60.0, total: int | None = None,
                   progress: bool = True, timeout_s: float = 10.0) -> Stats:
    from tqdm import tqdm

    stats, memory, schedule = Stats(), OfferMemory(), Schedule(concurrency, window_s)
    changed = asyncio.Condition()
    bar = tqdm(total=total, unit="visit", desc="simulate", disable=not progress, smoothing=0.1)
    limits = httpx.Limits(max_connections=concurrency + 2, max_keepalive_connections=concurrency + 2)
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout_s, limits=limits) as client:
        driver = Driver(client, client_key, ingest_key, stats)

        async def one(visit: Visit) -> None:
            try:
                await driver.visit(visit, memory, as_of)
            except Exception as exc:  # a bug in one visit must not stop the run: counted and reported
                stats.record("visit", 0, 0.0, repr(exc))
            finally:
                async with changed:
                    schedule.finish(visit)
                    changed.notify_all()
                bar.update(1)
                if stats.visits % 200 == 0:
                    bar.set_postfix(errors=sum(stats.non_2xx.values()), refresh=False)

        tasks: set[asyncio.Task] = set()
        for visit in visits:
            try:
                await driver.wait_for_clock(visit, clock_wait_s)
            except ClockGap as gap:  # every later visit would be refused: the visits in flight finish, then stop
                stats.stopped = str(gap)
                break
            async with changed:
                await changed.wait_for(lambda v=visit: schedule.can_start(v))
                schedule.start(visit)
            task = asyncio.create_task(one(visit))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
    bar.close()
    stats.elapsed_s = time.perf_counter() - started
    return stats
