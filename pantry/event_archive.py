"""The event archive's layout and its readers: every event the live flow accepted (past its gate: valid, not a
duplicate, not late), as parquet files under `<data_dir>/event_archive/<YYYY-MM-DD>/part-*.parquet`, the day of each
event's time `ts`. The live flow writes them (streaming/event_archive.py), training reads them beside the data set
(training/data.py), erasure rewrites them (pantry/erasure.py).

One wide table for every event type (ARCHIVE_SCHEMA): the columns are the fields of pantry/events.py, each null where
the event's type has no such field, plus `accepted_at`, the wall time at which the flow's gate accepted the event
(point in time: a training set as of T may use `ts < T`, and can tell what was known by then). Writes are
at-least-once (a crash re-archives what the flow processes again after its last snapshot): `read` keeps one row per
event_id, the first accepted.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from time import time_ns

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

TIME_COLUMN = "ts"
ACCEPTED_AT = "accepted_at"
_TIME = pa.timestamp("us", tz="UTC")
ARCHIVE_SCHEMA = pa.schema([
    pa.field("event_id", pa.string(), nullable=False),
    pa.field("type", pa.string(), nullable=False),
    pa.field(TIME_COLUMN, _TIME, nullable=False),
    pa.field(ACCEPTED_AT, _TIME, nullable=False),
    pa.field("customer_id", pa.int64()),
    pa.field("store_id", pa.int64()),
    pa.field("product_id", pa.int64()),
    pa.field("basket_id", pa.int64()),
    pa.field("quantity", pa.int64()),
    pa.field("sales_value", pa.float64()),
    pa.field("discounts", pa.float64()),
    pa.field("on_hand", pa.int64()),
    pa.field("coupon_upc", pa.int64()),
    pa.field("campaign_id", pa.int64()),
    pa.field("original_product_id", pa.int64()),
    pa.field("substitute_product_id", pa.int64()),
    pa.field("accepted", pa.bool_()),
    pa.field("decision_id", pa.string()),
])
DAY_FORMAT = "%Y-%m-%d"
COMPACTED = "-c.parquet"  # a compacted file's name ends so
COMPACT_MAX_ROWS = 1_000_000  # rows per compacted file (~10 MB; a day of more traffic gets more files)
_PARQUET_OPTIONS = {"compression": "zstd", "use_dictionary": ["type"], "write_statistics": [TIME_COLUMN]}


def day_dirs(root: Path) -> list[Path]:
    """The archive's day directories, oldest first."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and _is_day(p.name))


def _is_day(name: str) -> bool:
    try:
        datetime.strptime(name, DAY_FORMAT)
    except ValueError:
        return False
    return True


def files(root: Path, until: datetime | None = None) -> list[Path]:
    """The archive's files (whole ones: a file being written is a hidden temp file) of the days before `until`."""
    last_day = (until - timedelta(microseconds=1)).astimezone(UTC).strftime(DAY_FORMAT) if until else None
    return [f for d in day_dirs(root) if last_day is None or d.name <= last_day
            for f in sorted(d.glob("part-*.parquet"))]


def read(root: Path, until: datetime | None = None, types: Sequence[str] | None = None,
         columns: Sequence[str] | None = None) -> pa.Table:
    """The archived events with `ts` strictly before `until` (all: None), of these `types` (all: None): one row per
    event_id (the first accepted), ordered by `ts`. `columns`: which (all: None)."""
    paths = files(root, until)
    wanted = list(columns) if columns is not None else ARCHIVE_SCHEMA.names
    if not paths:
        return ARCHIVE_SCHEMA.empty_table().select(wanted)
    filters = []
    if until is not None:
        filters.append((TIME_COLUMN, "<", pa.scalar(until.astimezone(UTC), _TIME)))
    if types is not None:
        filters.append(("type", "in", list(types)))
    needed = list(dict.fromkeys([*wanted, "event_id", ACCEPTED_AT, TIME_COLUMN]))
    tables = [pq.read_table(p, columns=needed, filters=filters or None) for p in paths]
    table = pa.concat_tables(tables)
    return first_accepted(table).sort_by(TIME_COLUMN).select(wanted)


def first_accepted(table: pa.Table) -> pa.Table:
    """One row per event_id: the one accepted first (a crash makes the flow archive some events twice)."""
    if table.num_rows == 0:
        return table
    table = table.sort_by(ACCEPTED_AT).append_column("_row", pa.array(range(table.num_rows), pa.int64()))
    first = table.group_by("event_id", use_threads=False).aggregate([("_row", "min")]).column("_row_min")
    return table.take(pc.take(first, pc.sort_indices(first))).drop_columns(["_row"])


def digest(root: Path, until: datetime | None = None) -> str:
    """A digest of the archive's files before `until` (names and sizes: files are written once, then only rewritten
    by an erasure), or "" when there are none: training's data digest changes when live data arrived."""
    paths = files(root, until)
    if not paths:
        return ""
    h = hashlib.sha256()
    for p in paths:
        h.update(f"{p.parent.name}/{p.name}:{p.stat().st_size}\n".encode())
    return h.hexdigest()


def last_event_ts(root: Path) -> datetime | None:
    """The newest `ts` in the archive (None: empty)."""
    for d in reversed(day_dirs(root)):
        newest = None
        for p in d.glob("part-*.parquet"):
            column = pq.read_table(p, columns=[TIME_COLUMN]).column(0)
            top = pc.max(column).as_py() if len(column) else None
            if top is not None and (newest is None or top > newest):
                newest = top
        if newest is not None:
            return newest
    return None


@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    """Hold the archive's lock: compaction and an erasure's rewrite never interleave (one could bring back rows the
    other removed)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def compact(root: Path, before_day: str, max_rows: int = COMPACT_MAX_ROWS) -> int:
    """Merge the files of each day before `before_day` (no event can still arrive for it: lateness is 10 minutes) that
    has more than one file and any not compacted yet into files of up to `max_rows` rows, one row per event_id
    (training reads a day in one file instead of one per minute). New files appear first, the old ones go after: a
    reader in between sees rows twice, which `read` removes. Returns the days compacted."""
    done = 0
    for d in day_dirs(root):
        if d.name >= before_day:
            break
        parts = sorted(d.glob("part-*.parquet"))
        if len(parts) < 2 or all(p.name.endswith(COMPACTED) for p in parts):
            continue
        with locked(root):
            parts = sorted(d.glob("part-*.parquet"))  # as they are now that nobody rewrites them
            table = first_accepted(pa.concat_tables(pq.read_table(p) for p in parts)).sort_by(TIME_COLUMN)
            stamp = f"{time_ns()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
            for i, start in enumerate(range(0, table.num_rows, max_rows)):
                tmp = d / f".part-{stamp}-{i}.tmp"
                pq.write_table(table.slice(start, max_rows), tmp, **_PARQUET_OPTIONS)
                os.replace(tmp, d / f"part-{stamp}-{i}{COMPACTED}")
            for p in parts:
                p.unlink()
        done += 1
    return done


def prune(root: Path, newest_day: str, retention_days: int) -> int:
    """Delete the day directories more than `retention_days` before `newest_day` (YYYY-MM-DD); returns how many."""
    cutoff = (datetime.strptime(newest_day, DAY_FORMAT) - timedelta(days=retention_days)).strftime(DAY_FORMAT)
    old = [d for d in day_dirs(root) if d.name < cutoff]
    for d in old:
        shutil.rmtree(d, ignore_errors=True)
    return len(old)
