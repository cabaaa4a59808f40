"""Feast's feature-server writes on pantry's online store: `/write-to-online-store` (what the stock Feast SDK's
`remote` online store sends for `FeatureStore.push` and `FeatureStore.write_to_online_store`) and `/push` (Feast's
HTTP push, by push source).

A request's `df` is columnar JSON, as Feast's client builds it: the view's join keys, its features, `event_timestamp`
(ISO 8601, naive = UTC, or epoch seconds) and an optional `created` (ignored). Every column and value is checked
against the view's schema from the registry before anything is written: a wrong one is a 400 that names it, and
nothing of the request is written. Rows are written in Feast's layout with Feast's rule for order (a row older than
the one stored is skipped; within a request the newest row per entity wins), and appended to the offline feature log
first, as every row the stream writes online is, so training's point-in-time reads see pushed rows too. A retry
after a failure is harmless: the log may hold a row twice (same key and time: the same point-in-time answer), the
online store holds it once. `/push` with `to: "offline"` writes the log only.
"""

from __future__ import annotations

import asyncio
import math
import os
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from pantry.featurestore.layout import ViewSchema, feature_field, ts_field
from pantry.featurestore.offline_log import LogWriter, arrow_schema
from pantry.featurestore.values import EPOCH, decode_timestamp, encode_value, timestamp
from pantry.schemas import FeastPushRequest, FeastWriteRequest, FeastWriteResult
from serving.redis_guard import StoreUnavailable
from serving.services import Services

IGNORED_COLUMNS = frozenset({"created"})  # Feast's client sends the rows' creation times: pantry keeps event time
PUSH_TO = ("online", "offline", "online_and_offline")


class FeastWriteRejected(ValueError):
    """A write that does not fit the view's schema (400): nothing was written."""


class Rows:
    """A request's rows for one view, checked: join values, feature values (Python, per the view's types) and
    event times (aware datetimes)."""

    def __init__(self, view: ViewSchema, joins: list[tuple[int, ...]], columns: dict[str, list[Any]],
                 times: list[datetime]):
        self.view, self.joins, self.columns, self.times = view, joins, columns, times

    def __len__(self) -> int:
        return len(self.times)

    def table(self) -> pa.Table:
        data: dict[str, list[Any]] = {k: [j[i] for j in self.joins] for i, k in enumerate(self.view.join_keys)}
        data.update(self.columns)
        data["event_timestamp"] = self.times
        return pa.Table.from_pydict(data, schema=arrow_schema(self.view))


def checked_rows(view: ViewSchema, df: dict[str, list[Any]], *, extra_ok: frozenset[str] = frozenset()) -> Rows:
    """The request's columns as the view's rows, or FeastWriteRejected naming the first column or value that does
    not fit. `extra_ok`: columns that belong elsewhere (another view of the same push source) and are left out."""
    lengths = {len(col) for col in df.values()}
    if len(lengths) > 1:
        raise FeastWriteRejected(f"every column of `df` must have the same number of values (got {sorted(lengths)})")
    n = lengths.pop() if lengths else 0
    features = view.feature_names
    wanted = {*view.join_keys, *features, "event_timestamp"}
    unknown = sorted(set(df) - wanted - IGNORED_COLUMNS - extra_ok)
    if unknown:
        raise FeastWriteRejected(f"feature view {view.name!r} has no column(s) {unknown}; it has join key(s) "
                                 f"{list(view.join_keys)}, features {list(features)} and event_timestamp")
    missing = [c for c in (*view.join_keys, *features, "event_timestamp") if c not in df]
    if missing:
        raise FeastWriteRejected(f"feature view {view.name!r} needs column(s) {missing} in `df`")
    keys = [[_int(v, key, i) for i, v in enumerate(df[key])] for key in view.join_keys]
    joins = list(zip(*keys, strict=True)) if keys else [()] * n
    columns = {f.name: [_value(f.dtype, v, f.name, i) for i, v in enumerate(df[f.name])] for f in view.features}
    times = [_event_time(v, i) for i, v in enumerate(df["event_timestamp"])]
    return Rows(view, joins, columns, times)


async def write(svc: Services, rows: Rows, *, online: bool = True, offline: bool = True) -> FeastWriteResult:
    """The rows into the offline log (first) and the online store; returns what was written where."""
    if not len(rows):
        return FeastWriteResult(rows=0, written_online=0, skipped_older=0, logged=0)
    if offline:
        await asyncio.to_thread(_log_writer(svc).write, rows.view.name, rows.table())
    written = skipped = 0
    if online:
        written, skipped = await _write_online(svc, rows)
    return FeastWriteResult(rows=len(rows), written_online=written, skipped_older=skipped,
                            logged=len(rows) if offline else 0)


async def write_request(svc: Services, data: FeastWriteRequest) -> FeastWriteResult:
    """POST /write-to-online-store: one feature view's rows."""
    views = _views(svc)
    view = views.get(data.feature_view_name)
    if view is None:
        raise FeastWriteRejected(f"unknown feature view {data.feature_view_name!r} (have: {', '.join(sorted(views))})")
    return await write(svc, checked_rows(view, data.df))


async def push_request(svc: Services, data: FeastPushRequest) -> list[FeastWriteResult]:
    """POST /push: the rows into every view the push source feeds, online and/or into the log as `to` says."""
    if data.to not in PUSH_TO:
        raise FeastWriteRejected(f"`to` must be one of {list(PUSH_TO)}, got {data.to!r}")
    views = [v for v in _views(svc).values() if v.push_source == data.push_source_name]
    if not views:
        sources = sorted({v.push_source for v in _views(svc).values() if v.push_source})
        raise FeastWriteRejected(f"unknown push source {data.push_source_name!r} (have: {', '.join(sources)})")
    all_columns = frozenset(c for v in views for c in (*v.join_keys, *v.feature_names))
    checked = [checked_rows(v, data.df, extra_ok=all_columns) for v in views]  # every view checked before any write
    # The log holds every row written online (the stream's rule too), so `to: "online"` logs as well; `"offline"`
    # writes the log only.
    return [await write(svc, rows, online=data.to != "offline") for rows in checked]


# ---- the online write: Feast's order rule -----------------------------------------------------------------------


async def _write_online(svc: Services, rows: Rows) -> tuple[int, int]:
    layout = svc.reader.layout
    view = rows.view
    ts_name = ts_field(view.name)
    # within the request, the newest row per entity (the last of equal times)
    newest: dict[tuple[int, ...], int] = {}
    for i, (join, t) in enumerate(zip(rows.joins, rows.times, strict=True)):
        j = newest.get(join)
        if j is None or t >= rows.times[j]:
            newest[join] = i
    keys = {join: layout.key(view.name, join) for join in newest}
    stored = await svc.events_store.call(
        lambda: svc.pipeline.run([(b"HGET", keys[join], ts_name) for join in newest]))
    fields = [(feature_field(view.name, f.name), f.dtype, rows.columns[f.name]) for f in view.features]
    commands = []
    for (join, i), raw in zip(newest.items(), stored, strict=True):
        before = decode_timestamp(raw)
        if before is not None and before > rows.times[i]:  # Feast's rule: an older row does not replace a newer one
            continue
        args: list[bytes] = [b"HSET", keys[join]]
        for name, dtype, column in fields:
            args += (name, encode_value(dtype, column[i]))
        args += (ts_name, timestamp(rows.times[i]))
        commands.append(tuple(args))
    if commands:
        await svc.events_store.call(lambda: svc.pipeline.run(commands))
    return len(commands), len(rows) - len(commands)


def _views(svc: Services) -> dict[str, ViewSchema]:
    if svc.reader is None:
        raise StoreUnavailable("feast registry not loaded (run `pantry feast apply`)")
    return svc.reader.layout.views


def _log_writer(svc: Services) -> LogWriter:
    if svc.feature_log is None:
        svc.feature_log = LogWriter(svc.settings.feature_log_dir, f"serve{os.getpid()}")
    return svc.feature_log


# ---- values ---------------------------------------------------------------------------------------------------


def _int(v: Any, column: str, row: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int | float) or (isinstance(v, float) and not v.is_integer()):
        raise FeastWriteRejected(f"`df.{column}[{row}]`: expected an integer, got {v!r}")
    if not -(2**63) <= v < 2**63:
        raise FeastWriteRejected(f"`df.{column}[{row}]`: {v} is outside int64")
    return int(v)


_FLOAT_WORDS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _float(v: Any, column: str, row: int) -> float:
    if isinstance(v, str) and v in _FLOAT_WORDS:
        return _FLOAT_WORDS[v]
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise FeastWriteRejected(f"`df.{column}[{row}]`: expected a number, got {v!r}")
    return float(v)


def _typed(kind: type, name: str):
    def check(v: Any, column: str, row: int):
        if not isinstance(v, kind) or (kind is not bool and isinstance(v, bool)):
            raise FeastWriteRejected(f"`df.{column}[{row}]`: expected {name}, got {v!r}")
        return v
    return check


def _time(v: Any, column: str, row: int) -> datetime:
    if isinstance(v, str):
        try:
            t = datetime.fromisoformat(v)
        except ValueError:
            raise FeastWriteRejected(f"`df.{column}[{row}]`: {v!r} is not an ISO 8601 time") from None
        return t if t.tzinfo else t.replace(tzinfo=UTC)
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise FeastWriteRejected(f"`df.{column}[{row}]`: expected an ISO 8601 time or epoch seconds, got {v!r}")
    try:
        return datetime.fromtimestamp(v, UTC)
    except (OverflowError, OSError, ValueError):
        raise FeastWriteRejected(f"`df.{column}[{row}]`: {v} epoch seconds is out of range") from None


_SCALARS = {"INT64": _int, "INT32": _int, "DOUBLE": _float, "FLOAT": _float, "STRING": _typed(str, "a string"),
            "BOOL": _typed(bool, "true or false"), "UNIX_TIMESTAMP": _time}


def _value(dtype: str, v: Any, column: str, row: int) -> Any:
    if v is None:
        return None
    if dtype.endswith("_LIST"):
        if not isinstance(v, list):
            raise FeastWriteRejected(f"`df.{column}[{row}]`: expected a list, got {v!r}")
        check = _SCALARS[dtype.removesuffix("_LIST")]
        return [check(x, column, row) for x in v]
    check = _SCALARS.get(dtype)
    if check is None:
        raise FeastWriteRejected(f"`df.{column}`: pantry cannot write Feast type {dtype}")
    return check(v, column, row)


def _event_time(v: Any, row: int) -> datetime:
    t = _time(v, "event_timestamp", row)
    if t < EPOCH:
        raise FeastWriteRejected(f"`df.event_timestamp[{row}]`: {v!r} is before 1970")
    return t
