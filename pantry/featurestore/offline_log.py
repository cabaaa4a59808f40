"""The offline feature log's layout: parquet files under `<feature_log_dir>/<view>/<YYYY-MM-DD>/` (the day of each
row's event time), columns = join keys + features + `event_timestamp` (UTC, microseconds). It is the batch source
of the push sources in feature_repo/sources.py, which training reads point-in-time, and it holds every row written
online: the stream's sink appends its rows (streaming/feature_log.py), the feature server's `/push` and
`/write-to-online-store` theirs (serving/feast_server.py). Files appear whole (written aside, then renamed), so a
reader never sees half a file; retention (streaming/retention.py) and erasure (pantry/erasure.py) work on them."""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pantry.featurestore.layout import ViewSchema

ARROW_TYPES = {
    "INT64": pa.int64(),
    "INT32": pa.int32(),
    "DOUBLE": pa.float64(),
    "FLOAT": pa.float32(),
    "STRING": pa.string(),
    "BOOL": pa.bool_(),
    "UNIX_TIMESTAMP": pa.timestamp("us", tz="UTC"),
    "INT64_LIST": pa.list_(pa.int64()),
    "FLOAT_LIST": pa.list_(pa.float32()),
    "DOUBLE_LIST": pa.list_(pa.float64()),
    "STRING_LIST": pa.list_(pa.string()),
}

# A replay writes a file per view and event day and process (~3,800 for the full year): no dictionary pages (ids
# and times are mostly distinct within a file) and statistics only for event_timestamp (what point-in-time reads
# filter on): ~20 % less CPU per file than the defaults (1.1 vs 1.4 ms for 900 store_product rows, and 23 vs 28 KB).
_PARQUET_OPTIONS = {"compression": "zstd", "use_dictionary": False, "write_statistics": ["event_timestamp"]}


def arrow_schema(view: ViewSchema) -> pa.Schema:
    fields = [pa.field(k, pa.int64()) for k in view.join_keys]
    fields += [pa.field(f.name, ARROW_TYPES[f.dtype]) for f in view.features]
    fields.append(pa.field("event_timestamp", pa.timestamp("us", tz="UTC")))
    return pa.schema(fields)


def micros_of_seconds(seconds: pa.Array) -> pa.Array:
    """Epoch seconds (float, nulls kept) as UTC microsecond timestamps, truncated like int(t * 1e6)."""
    micros = pc.cast(pc.multiply(seconds, 1e6), pa.int64(), safe=False)
    return micros.cast(pa.timestamp("us", tz="UTC"))


class LogWriter:
    """Writes tables of one writer (a stream worker, a serving process) into the log, a file per view and event
    day and call. `made_dirs` remembers the day directories made: a replay writes each of them many times. The event
    archive (streaming/event_archive.py) writes its files with it too: its day is that of `ts`, and its view ""."""

    def __init__(self, root: Path, writer: str, time_column: str = "event_timestamp"):
        self.root = root
        self.writer = writer
        self.time_column = time_column
        self.options = {**_PARQUET_OPTIONS, "write_statistics": [time_column]}
        self.made_dirs: set[Path] = set()

    def write(self, view: str, table: pa.Table) -> None:
        if not len(table):
            return
        micros = table.column(self.time_column).cast(pa.int64()).to_numpy()
        days = np.floor_divide(micros, 86_400_000_000)
        stamp = f"{time.time_ns()}-{self.writer}-{uuid.uuid4().hex[:6]}"
        first, last = int(days.min()), int(days.max())
        if first == last:
            self._write_day(view, first, table, stamp)
            return
        # one stable sort by day, then a zero-copy slice per day (rows keep their order within a day)
        order = np.argsort(days, kind="stable")
        table, days = table.take(pa.array(order)), days[order]
        bounds = np.flatnonzero(np.diff(days)) + 1
        for start, end in zip([0, *bounds.tolist()], [*bounds.tolist(), len(days)], strict=True):
            self._write_day(view, int(days[start]), table.slice(start, end - start), stamp)

    def _write_day(self, view: str, day: int, table: pa.Table, stamp: str) -> None:
        out_dir = self.root / view / datetime.fromtimestamp(day * 86400, UTC).strftime("%Y-%m-%d")
        if out_dir not in self.made_dirs:
            out_dir.mkdir(parents=True, exist_ok=True)
            self.made_dirs.add(out_dir)
        tmp = out_dir / f".part-{stamp}.parquet.tmp"
        try:
            pq.write_table(table, tmp, **self.options)
        except FileNotFoundError:  # the directory went away since (a reset): make it again
            out_dir.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, tmp, **self.options)
        os.replace(tmp, out_dir / f"part-{stamp}.parquet")  # readers never see half a file
