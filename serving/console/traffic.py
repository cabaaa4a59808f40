"""The last hour of the service's own traffic, for the console's overview: per minute and /v1/ route the requests, the
5xx answers, the fallbacks and a latency histogram.

Why not the Prometheus metrics: /metrics holds totals since each worker started and nothing here keeps their history
(there may be no Prometheus server at all), so "the last hour" needs a history of its own. Every worker counts in a
dict (`RECORDER`, one per process like serving.metrics.PENDING: the request path does a few dict and list operations,
no I/O, no await), and a background task adds its counts to one Redis hash per minute every
`console_traffic_flush_s` (HINCRBY, one round trip on the worker's raw pipeline). Every worker of every process adds
into the same hashes; each expires two hours after its last write, so the history is bounded (~120 hashes of
routes x 28 fields).

p50 and p99 come from fixed latency buckets: an estimate, within the bucket that holds the true value.
"""

from __future__ import annotations

import asyncio
import logging
import time
from bisect import bisect_left
from collections.abc import Sequence
from typing import Any, Final

import msgspec

from pantry.keys import CONSOLE_TRAFFIC_PREFIX

log = logging.getLogger("pantry.serving.console")

# upper bounds of the latency buckets (ms): fine where answers are (single-digit ms), coarse where timeouts are;
# one more bucket holds everything slower. Redis fields name the bound, so a change of bounds never misreads old hashes.
BOUNDS_MS: Final = (1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 75, 100, 150, 200, 300, 500, 1000, 2000, 5000)
_BOUNDS_S: Final = tuple(b / 1000 for b in BOUNDS_MS)
REQUESTS, ERRORS, FALLBACKS, FIRST_BUCKET = 0, 1, 2, 3  # a route-minute's counters: these, then the buckets
FIELDS: Final = ("n", "e", "f", *(f"le{b}" for b in BOUNDS_MS), "inf")  # counter -> Redis field suffix
WIDTH: Final = len(FIELDS)
_INDEX: Final = {name.encode(): i for i, name in enumerate(FIELDS)}

MINUTES: Final = 60
RETENTION_S: Final = 2 * 3600  # the page reads one hour; the second covers a late reader and workers' clock skew
READ_TIMEOUT_S: Final = 0.25  # the page's read: 60 hashes of up to routes x 28 fields, not one row

# the answer endpoints' names (serving/answers/*.py ENDPOINT) -> their routes: a fallback is known in the decision
# pipeline, which has the endpoint's name and not the route (a test keeps this equal to the controllers' paths)
FALLBACK_ROUTES: Final = {"recommendations": "/v1/recommendations", "substitutions": "/v1/substitutions",
                          "next_best_action": "/v1/next-best-action"}


def minute_key(minute: int) -> str:
    """`minute`: epoch minutes (UTC wall clock)."""
    return f"{CONSOLE_TRAFFIC_PREFIX}{minute}"


class TrafficRecorder:
    """One worker's counts not yet in Redis: (epoch minute, route) -> counters (see FIELDS)."""

    def __init__(self) -> None:
        self.pending: dict[tuple[int, str], list[int]] = {}
        self._fields: dict[str, tuple[bytes, ...]] = {}  # route -> its Redis field names (built once per route)

    def _counters(self, route: str) -> list[int]:
        key = (int(time.time()) // 60, route)
        counters = self.pending.get(key)
        if counters is None:
            counters = self.pending[key] = [0] * WIDTH
        return counters

    # ---- the request path (serving/app.py's middleware, serving/answers/pipeline.py) -----------------------------

    def request(self, route: str, status: int, seconds: float) -> None:
        """One answered request of a /v1/ route (its template, never the raw path)."""
        counters = self._counters(route)
        counters[REQUESTS] += 1
        if status >= 500:
            counters[ERRORS] += 1
        counters[FIRST_BUCKET + bisect_left(_BOUNDS_S, seconds)] += 1

    def fallback(self, endpoint: str) -> None:
        """One answer of an answer endpoint (serving/answers/) served from a fallback."""
        self._counters(FALLBACK_ROUTES.get(endpoint, endpoint))[FALLBACKS] += 1

    # ---- the background task ---------------------------------------------------------------------------------------

    def _field_names(self, route: str) -> tuple[bytes, ...]:
        names = self._fields.get(route)
        if names is None:
            names = self._fields[route] = tuple(f"{route}|{f}".encode() for f in FIELDS)
        return names

    async def flush(self, store: Any, pipeline: Any) -> int:
        """Add the pending counts to Redis (one round trip on the worker's RoundTrip, through the guarded store);
        returns the fields written. On failure the counts stay pending, except minutes older than the retention
        (nobody would read them)."""
        pending, self.pending = self.pending, {}
        if not pending:
            return 0
        commands: list[tuple[Any, ...]] = []
        minutes = set()
        for (minute, route), counters in pending.items():
            key = minute_key(minute).encode()
            names = self._field_names(route)
            commands += [(b"HINCRBY", key, names[i], n) for i, n in enumerate(counters) if n]
            minutes.add(key)
        written = len(commands)
        commands += [(b"EXPIRE", key, RETENTION_S) for key in sorted(minutes)]
        try:
            await store.call(lambda: pipeline.run(commands))
        except Exception as exc:  # Redis away (StoreUnavailable) or a reply error: keep the counts for the next try
            log.warning("console traffic counts not flushed (%s); kept for the next try", exc)
            oldest = int(time.time() - RETENTION_S) // 60
            for key, counters in pending.items():
                if key[0] < oldest:
                    continue
                mine = self.pending.get(key)
                self.pending[key] = counters if mine is None else [a + b for a, b in zip(mine, counters, strict=True)]
            return 0
        return written

    async def run(self, store: Any, pipeline: Any, every_s: float) -> None:
        """Flush every `every_s` for as long as the worker runs, and once more when it stops. Never dies."""
        try:
            while True:
                await asyncio.sleep(every_s)
                try:
                    await self.flush(store, pipeline)
                except Exception:
                    log.exception("console traffic flush")
        except asyncio.CancelledError:
            await self.flush(store, pipeline)  # this worker's last seconds
            raise


RECORDER: Final = TrafficRecorder()


# ---- reading the last hour -------------------------------------------------------------------------------------------


def quantile_ms(buckets: Sequence[int], q: float) -> float | None:
    """The q-quantile (0 < q <= 1) of a histogram over BOUNDS_MS (+ the overflow bucket), in ms, interpolated linearly
    inside its bucket (as Prometheus' histogram_quantile); in the overflow bucket, the last bound (a lower bound).
    None without observations."""
    total = sum(buckets)
    if not total:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(buckets):
        if n and seen + n >= rank:
            if i >= len(BOUNDS_MS):
                break
            low = BOUNDS_MS[i - 1] if i else 0.0
            return low + (BOUNDS_MS[i] - low) * (rank - seen) / n
        seen += n
    return float(BOUNDS_MS[-1])


class RouteHour(msgspec.Struct, frozen=True):
    """One route's last hour: per minute (oldest first, the last one still running) and in total."""

    route: str
    requests_per_minute: list[int]
    errors_per_minute: list[int]
    p99_ms_per_minute: list[float | None]  # None: no request that minute
    fallback_rate_per_minute: list[float | None]  # fallbacks / requests; None: no request that minute
    requests: int
    errors: int
    fallbacks: int
    p50_ms: float | None
    p99_ms: float | None

    @property
    def answers_with_fallbacks(self) -> bool:
        """An answer endpoint (the others never fall back)."""
        return self.route in FALLBACK_ROUTES.values()

    @property
    def fallback_rate(self) -> float | None:
        return min(1.0, self.fallbacks / self.requests) if self.requests else None

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None


class TrafficHour(msgspec.Struct, frozen=True):
    first_minute: int  # epoch minute of the first point
    routes: list[RouteHour]  # by requests, most first

    @property
    def requests(self) -> int:
        return sum(r.requests for r in self.routes)

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.routes)

    @property
    def fallbacks(self) -> int:
        return sum(r.fallbacks for r in self.routes)


def _route_hour(route: str, grid: list[list[int]]) -> RouteHour:
    hour = [sum(column) for column in zip(*grid, strict=True)]
    buckets = hour[FIRST_BUCKET:]
    return RouteHour(
        route=route,
        requests_per_minute=[m[REQUESTS] for m in grid],
        errors_per_minute=[m[ERRORS] for m in grid],
        p99_ms_per_minute=[quantile_ms(m[FIRST_BUCKET:], 0.99) for m in grid],
        fallback_rate_per_minute=[min(1.0, m[FALLBACKS] / m[REQUESTS]) if m[REQUESTS] else None for m in grid],
        requests=hour[REQUESTS], errors=hour[ERRORS], fallbacks=hour[FALLBACKS],
        p50_ms=quantile_ms(buckets, 0.5), p99_ms=quantile_ms(buckets, 0.99))


_FIELD_CACHE_MAX: Final = 10_000  # field -> (route, counter) parsed once; bounded (routes x 28 in practice)
_parsed: dict[bytes, tuple[bytes, int] | None] = {}


def _parse(field: bytes) -> tuple[bytes, int] | None:
    """(route, counter index) of a Redis field, None for a field of another layout."""
    route, _, counter = field.rpartition(b"|")
    index = _INDEX.get(counter)
    parsed = (route, index) if route and index is not None else None
    if len(_parsed) < _FIELD_CACHE_MAX:
        _parsed[field] = parsed
    return parsed


def summarise(replies: Sequence[list[bytes] | None], first_minute: int) -> TrafficHour:
    """The minute hashes (HGETALL replies as sent, [field, value, ...], oldest first) as one TrafficHour; unknown
    fields are skipped. The page's hot loop: up to 60 x routes x 28 fields."""
    grids: dict[bytes, list[list[int]]] = {}
    minutes = len(replies)
    for i, flat in enumerate(replies):
        pairs = iter(flat or ())
        for field, value in zip(pairs, pairs, strict=False):
            parsed = _parsed[field] if field in _parsed else _parse(field)
            if parsed is None:
                continue
            route, index = parsed
            grid = grids.get(route)
            if grid is None:
                grid = grids[route] = [[0] * WIDTH for _ in range(minutes)]
            grid[i][index] += int(value)
    routes = [_route_hour(route.decode(errors="replace"), grid) for route, grid in grids.items()]
    routes.sort(key=lambda r: (-r.requests, r.route))
    return TrafficHour(first_minute, routes)


async def last_hour(store: Any, pipeline: Any, now_s: float | None = None, minutes: int = MINUTES) -> TrafficHour:
    """The last `minutes` minute hashes in one round trip on the worker's RoundTrip (the current, partial minute
    last). StoreUnavailable when Redis does not answer."""
    end = int(time.time() if now_s is None else now_s) // 60
    first = end - minutes + 1
    commands = [(b"HGETALL", minute_key(minute).encode()) for minute in range(first, end + 1)]
    return summarise(await store.call(lambda: pipeline.run(commands, READ_TIMEOUT_S)), first)
