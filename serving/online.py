"""Async online reads in Feast's Redis layout: every row a request needs, plus the watermark, in ONE pipelined trip.

Each row's age is judged against its view's TTL at `now` (pantry.clock.resolve_now): a stale row is handed to the
models as missing (Feast does not apply TTLs on online reads; we do) and reported as stale.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any, Literal, NamedTuple

from pantry.clock import parse_watermark, resolve_now
from pantry.keys import WATERMARK
from pantry.online import OnlineLayout
from pantry.settings import ClockMode
from serving.redis_io import RoundTrip

Status = Literal["present", "missing", "stale"]
_WATERMARK_KEY = WATERMARK.encode()


_STRING, _INT64 = 2, 4  # feast ValueType numbers
_INT64_VALUE = struct.Struct("<IIq")  # value type, value length (8), the value


class EntityKeys:
    """Feast's entity key (serialisation v3) for Int64 join keys, built with struct instead of protobuf.

    Same bytes as pantry.online.entity_key (a test checks it): count, then each join key (sorted by name) as STRING,
    then each value in that order as INT64, then the project. Feast's protobuf path was ~25% of a substitution
    request's CPU under load (py-spy at saturation)."""

    def __init__(self, layout: OnlineLayout):
        self.suffix = layout.project.encode()
        self.views: dict[str, tuple[bytes, tuple[int, ...]]] = {}
        for name, view in layout.views.items():
            keys = tuple(view.join_keys)
            order = tuple(sorted(range(len(keys)), key=lambda i, keys=keys: keys[i]))
            prefix = [struct.pack("<I", len(keys))]
            for i in order:
                k = keys[i].encode()
                prefix.append(struct.pack("<II", _STRING, len(k)) + k)
            self.views[name] = (b"".join(prefix), order)

    def key(self, view: str, join_values: Sequence[int]) -> bytes:
        prefix, order = self.views[view]
        pack = _INT64_VALUE.pack
        return b"".join([prefix, *(pack(_INT64, 8, int(join_values[i])) for i in order), self.suffix])


class RowRead(NamedTuple):
    view: str
    join_values: tuple[int, ...]
    features: tuple[str, ...] | None = None  # None = every feature of the view


class Row(NamedTuple):
    values: dict[str, Any] | None  # None when missing or stale
    ts: datetime | None
    age_s: float | None
    status: Status
    raw_values: dict[str, Any] | None  # the decoded row even when stale (for /v1/features)


class ReadResult(NamedTuple):
    now: datetime
    rows: list[Row]

    def features(self, reads: Sequence[RowRead]) -> dict[str, dict[str, Any] | None]:
        """{view: row or None} for reads of distinct views (the models' `Features` mapping)."""
        return {r.view: row.values for r, row in zip(reads, self.rows, strict=True)}

    def ages(self, reads: Sequence[RowRead]) -> dict[str, float | None]:
        return {r.view: row.age_s for r, row in zip(reads, self.rows, strict=True)}


class OnlineReader:
    """Built once per process from the Feast registry's layout; holds no connection (the caller passes one)."""

    def __init__(self, layout: OnlineLayout, clock: ClockMode):
        self.layout = layout
        self.clock = clock
        self.ttl = {name: view.ttl_s for name, view in layout.views.items()}
        self._fields = lru_cache(maxsize=256)(self._fields_uncached)
        self._key = EntityKeys(layout).key

    def _fields_uncached(self, view: str, features: tuple[str, ...] | None) -> tuple[bytes, ...]:
        return tuple(self.layout.fields(view, features))

    def check(self, reads: Sequence[RowRead]) -> None:
        for r in reads:
            schema = self.layout.views.get(r.view)
            if schema is None:
                raise KeyError(f"unknown feature view {r.view!r}")
            for f in r.features or ():
                schema.dtype(f)

    async def read(self, pipeline: RoundTrip, reads: Sequence[RowRead], as_of: datetime | None) -> ReadResult:
        """One pipelined round trip (no MULTI): GET watermark + one HMGET per row.
        Raises connection errors and timeouts to the caller."""
        key, fields = self._key, self._fields
        commands = [(b"GET", _WATERMARK_KEY)]
        commands.extend((b"HMGET", key(r.view, r.join_values), *fields(r.view, r.features)) for r in reads)
        replies = await pipeline.run(commands)
        now = resolve_now(self.clock, as_of, parse_watermark(replies[0]))
        return ReadResult(now, [self._row(r, raw, now) for r, raw in zip(reads, replies[1:], strict=True)])

    async def now(self, client, as_of: datetime | None) -> datetime:
        if as_of is not None or self.clock != "event":
            return resolve_now(self.clock, as_of, None)
        raw = await client.get(_WATERMARK_KEY)
        return resolve_now(self.clock, None, parse_watermark(raw))

    def _row(self, read: RowRead, raw: Sequence[bytes | None], now: datetime) -> Row:
        values, ts = self.layout.decode_row(read.view, raw, read.features)
        if values is None:
            return Row(None, None, None, "missing", None)
        age = (now - ts).total_seconds() if ts is not None else None
        ttl = self.ttl[read.view]
        if ttl > 0 and age is not None and age > ttl:
            return Row(None, ts, age, "stale", values)
        # A row newer than `now` (an as_of in the past) is used as is: the online store keeps only the latest row.
        return Row(values, ts, age, "present", values)
