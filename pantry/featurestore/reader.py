"""Async online reads in Feast's Redis layout: every row a request needs, plus the watermark, in ONE pipelined trip.

Each row's age is judged against its view's TTL at `now` (pantry.clock.resolve_now): a stale row is handed to the
models as missing (Feast does not apply TTLs on online reads; we do) and reported as stale.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any, Literal, NamedTuple

from pantry.clock import parse_watermark, resolve_now
from pantry.featurestore.layout import OnlineLayout
from pantry.featurestore.roundtrip import RoundTrip
from pantry.keys import WATERMARK
from pantry.settings import ClockMode

Status = Literal["present", "missing", "stale"]
_WATERMARK_KEY = WATERMARK.encode()


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
        self._key = layout.key

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
