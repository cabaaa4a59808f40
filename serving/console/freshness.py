"""How old the online rows of each feature view are: age percentiles over a uniform random sample of each view's rows,
judged against the service clock (the event clock in the demo).

Nothing indexes the online store by view: a view's rows are Feast hashes whose keys start with the view's entity key
header (pantry.featurestore.layout.EntityKeys), among every other key. A SCAN of a part of the keyspace is a uniform
sample (keys sit in hash-table buckets by hash), but a rare entity (2,500 customers among ~700,000 keys in the demo)
would get a handful of rows from any scan short enough for a page view. So each worker walks the whole keyspace once
in the background (SCAN ... COUNT 1000, paced, outside any request: ~15 s for the demo) and keeps a reservoir
of at most SAMPLE_KEYS entity keys per entity; a page view then reads those keys' `_ts:<view>` fields in one
round trip (HMGET each, ~2,000 commands) and ages them at the service clock of that moment. The walk is repeated when
its sample is older than Settings.console_sample_max_age_s (the old sample serves meanwhile); before the first walk
completes the page uses what it has found so far (still uniform: a random part of the keyspace) and says so.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import random
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final

import msgspec

from pantry.featurestore.layout import OnlineLayout, ts_field
from serving.redis_guard import StoreUnavailable
from serving.services import Services

SAMPLE_KEYS: Final = 500  # entity keys kept per entity (a view's rows are at most this many)
SCAN_COUNT: Final = 1_000  # keys Redis visits per SCAN step of the walk
# between two steps, so the walk takes at most a few percent of Redis: at 2 ms (the first choice) the walks of the
# demo's two workers kept Redis busy enough that requests beside them ran out of their 60 ms Redis budget (503)
WALK_PAUSE_S: Final = 0.02
READ_TIMEOUT_S: Final = 0.5  # the HMGET round trip of a page view (thousands of commands, not one row)
_TS_CACHE_MAX: Final = 100_000


class Entity(msgspec.Struct, frozen=True):
    """The keys of one Feast entity (one or more join keys): the views stored under them share each hash."""

    join_keys: tuple[str, ...]
    header: bytes
    length: int
    views: tuple[str, ...]


class WalkState(msgspec.Struct):
    started: float | None = None  # wall time
    finished: float | None = None  # wall time of the last completed walk
    scanned: int = 0  # keys visited by the walk under way (or the last one)
    keyspace: int = 0  # keys visited by the last completed walk
    error: str | None = None  # why the last walk stopped early


class ViewFreshness(msgspec.Struct):
    view: str
    ttl_s: float  # 0: no TTL
    keys: int  # entity keys in the sample
    rows: int  # of those, rows of this view (with a timestamp)
    p50_s: float | None
    p90_s: float | None
    p99_s: float | None
    max_s: float | None
    past_ttl: int  # rows older than the TTL: served as missing
    ahead: int  # rows newer than the clock (counted as age 0)


class Freshness(msgspec.Struct):
    now: datetime
    views: list[ViewFreshness]
    walk: WalkState
    complete: bool  # the sample comes from a whole walk of the keyspace
    finished_at: str | None  # when that walk finished (UTC, wall clock)


def entities(layout: OnlineLayout) -> list[Entity]:
    groups: dict[tuple[str, ...], list[str]] = {}
    for name, view in layout.views.items():
        groups.setdefault(view.join_keys, []).append(name)
    return [Entity(join_keys, layout.keys[views[0]].header, layout.keys[views[0]].length, tuple(views))
            for join_keys, views in groups.items()]


def glob_escape(raw: bytes) -> bytes:
    """`raw` as a literal in a Redis MATCH pattern (the entity key headers are binary)."""
    return b"".join(b"\\" + bytes([c]) if c in b"*?[]\\" else bytes([c]) for c in raw)


def percentile(ordered: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile of ascending `ordered` (None when empty): a value that was observed."""
    if not ordered:
        return None
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def timestamp_s(raw: bytes) -> float:
    """Epoch seconds of a serialized protobuf Timestamp (field 1 seconds, field 2 nanos, varints): thousands per
    page, ~5x cheaper than a protobuf parse (pantry.featurestore.values.decode_timestamp)."""
    seconds = nanos = 0
    i, end = 0, len(raw)
    while i < end:
        tag = raw[i]
        i += 1
        value = shift = 0
        while True:
            byte = raw[i]
            i += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        if tag == 0x08:
            seconds = value - (1 << 64) if value >= 1 << 63 else value
        elif tag == 0x10:
            nanos = value
    return seconds + nanos / 1e9


class KeySample:
    """One worker's reservoir of entity keys per entity, filled by a background walk of the keyspace."""

    def __init__(self, layout: OnlineLayout):
        self.layout = layout
        self.entities = entities(layout)
        self.sample: dict[tuple[str, ...], list[bytes]] = {}  # of the last completed walk
        self.building: dict[tuple[str, ...], list[bytes]] = {}  # of the walk under way
        self.state = WalkState()
        self.task: asyncio.Task | None = None
        self._ts: dict[bytes, float] = {}

    @property
    def complete(self) -> bool:
        return self.state.finished is not None

    def keys(self, entity: Entity) -> list[bytes]:
        source = self.sample if self.complete else self.building
        return list(source.get(entity.join_keys, ()))

    def ensure_walk(self, svc: Services) -> None:
        """Start a walk unless one runs or the sample is recent. It runs outside this request (a fresh context: no
        request Redis budget) and stops with the worker (Services.stop cancels svc.tasks)."""
        if self.task is not None and not self.task.done():
            return
        max_age_s = svc.settings.console_sample_max_age_s
        if self.state.finished is not None and time.time() - self.state.finished < max_age_s:
            return
        task = asyncio.get_running_loop().create_task(self._walk(svc), name="console-key-sample",
                                                      context=contextvars.Context())
        svc.tasks.append(task)
        task.add_done_callback(lambda t: svc.tasks.remove(t) if t in svc.tasks else None)
        self.task = task

    async def _walk(self, svc: Services) -> None:
        reservoirs: dict[tuple[str, ...], list[bytes]] = {e.join_keys: [] for e in self.entities}
        seen = dict.fromkeys(reservoirs, 0)
        self.building = reservoirs
        self.state = WalkState(started=time.time(), finished=self.state.finished, keyspace=self.state.keyspace)
        match = b"*" + glob_escape(self.layout.project.encode())  # Feast's keys end with the project
        by_shape = [(e.length, e.header, e.join_keys) for e in self.entities]
        try:
            async for keys in _scan(svc, match):
                self.state.scanned += len(keys)
                for key in keys:
                    for length, header, join_keys in by_shape:
                        if len(key) == length and key.startswith(header):
                            seen[join_keys] += 1  # reservoir sampling (algorithm R): each key kept with equal odds
                            kept = reservoirs[join_keys]
                            if len(kept) < SAMPLE_KEYS:
                                kept.append(key)
                            else:
                                j = random.randrange(seen[join_keys])
                                if j < SAMPLE_KEYS:
                                    kept[j] = key
                            break
                await asyncio.sleep(WALK_PAUSE_S)
        except StoreUnavailable as exc:
            self.state.error = f"the walk of the keyspace stopped: {exc}"
            return
        # SCAN may return a key twice (a rehash during the walk): each key once
        self.sample = {k: list(dict.fromkeys(v)) for k, v in reservoirs.items()}
        self.state.finished, self.state.keyspace = time.time(), self.state.scanned

    def ts_s(self, raw: bytes) -> float:
        hit = self._ts.get(raw)
        if hit is None:
            if len(self._ts) >= _TS_CACHE_MAX:
                self._ts.clear()
            hit = self._ts[raw] = timestamp_s(raw)
        return hit


async def _scan(svc: Services, match: bytes):
    """SCAN steps (each guarded) over the whole keyspace; on a Redis Cluster, over each primary in turn."""
    redis = svc.redis
    nodes: list = [None]
    if svc.settings.redis_cluster:
        await svc.store.call(redis.initialize)  # the slot map (a no-op once the client has been used)
        nodes = redis.get_primaries()
    for node in nodes:
        cursor = 0
        while True:
            if node is None:
                cursor, keys = await svc.store.call(lambda c=cursor: redis.scan(c, match=match, count=SCAN_COUNT))
            else:
                cursors, keys = await svc.store.call(
                    lambda c=cursor, n=node: redis.scan(c, match=match, count=SCAN_COUNT, target_nodes=n))
                cursor = cursors[node.name]
            yield keys
            if not cursor:
                break


async def read(svc: Services, sample: KeySample, now: datetime) -> Freshness:
    """Each view's age percentiles at `now`, from one round trip over the sampled keys. StoreUnavailable when Redis
    does not answer."""
    sample.ensure_walk(svc)
    # a round trip even before the walk found a key (Redis answers or not); with an argument, which a Redis Cluster
    # round trip routes like a key
    commands: list[tuple] = [(b"PING", b"freshness")]
    plan = []
    for entity in sample.entities:
        keys = sample.keys(entity)
        fields = [ts_field(v) for v in entity.views]
        commands.extend((b"HMGET", key, *fields) for key in keys)
        plan.append((entity, len(keys)))
    pipeline = svc.pipeline
    replies = await svc.store.call(lambda: pipeline.run(commands, READ_TIMEOUT_S))
    now_s = now.timestamp()
    out, at = [], 1
    for entity, n in plan:
        rows = replies[at : at + n]
        at += n
        for i, view in enumerate(entity.views):
            ages = sorted(now_s - sample.ts_s(row[i]) for row in rows if row[i])
            ahead = sum(1 for a in ages if a < 0)
            ages = [max(a, 0.0) for a in ages]
            ttl = sample.layout.views[view].ttl_s
            out.append(ViewFreshness(view, ttl, n, len(ages), percentile(ages, 50), percentile(ages, 90),
                                     percentile(ages, 99), ages[-1] if ages else None,
                                     sum(1 for a in ages if ttl > 0 and a > ttl), ahead))
    out.sort(key=lambda v: v.view)
    finished = sample.state.finished
    return Freshness(now, out, msgspec.structs.replace(sample.state), sample.complete,
                     datetime.fromtimestamp(finished, UTC).strftime("%Y-%m-%d %H:%M:%S") if finished else None)
