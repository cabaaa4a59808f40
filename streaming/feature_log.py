"""The stream's side of the offline feature log (pantry/featurestore/offline_log.py holds its layout): every row the
stream emits, buffered and written by a thread so that parquet encoding never stalls the flow."""

from __future__ import annotations

import queue
import threading
import time
from collections import defaultdict
from operator import itemgetter
from typing import Any

import numpy as np
import pyarrow as pa

from pantry.featurestore.layout import ViewSchema
from pantry.featurestore.offline_log import LogWriter, arrow_schema, micros_of_seconds
from pantry.featurestore.resp import Row

LOG_EVERY_S = 5.0
LIVE_LOG_HANDOFF_S = 0.5  # see FeatureLog
LOG_MAX_PENDING = 20  # hand-offs waiting for the writer thread
LOG_MAX_ROWS = 200_000


class FeatureLog:
    """Buffers rows per view and hands them to a writer thread every `handoff_s`; the thread turns them into
    Arrow record batches at once and writes the batches as parquet files partitioned by event day every
    LOG_EVERY_S (and at close). The live flow hands off every LIVE_LOG_HANDOFF_S: rows held as Python objects for
    the whole LOG_EVERY_S were most of what the young-generation GC traversed (a repertoire row carries two lists
    of up to 60 values), and its pauses, 60-150 ms every ~1.5 s at 5,000 events/s, were the p99 of freshness. A
    replay (the GC is off) hands off every LOG_EVERY_S: fewer, bigger conversions. Building the batches holds the
    GIL but in 5 ms slices (the interpreter's switch interval), not one stall of the flow; parquet encoding and
    compression release it. A bounded queue: a slower disk slows the flow instead of growing memory."""

    def __init__(self, root, views: dict[str, ViewSchema], worker: int, handoff_s: float = LOG_EVERY_S,
                 tuple_orders: dict[str, tuple[str, ...]] | None = None):
        self.root = root
        self.tuple_orders = tuple_orders or {}  # views whose rows may come as tuples, in this feature order
        self.handoff_s = handoff_s
        self.views = views
        self.schemas = {name: arrow_schema(view) for name, view in views.items()}
        self.worker = worker
        self.buffer: dict[str, list[Row]] = defaultdict(list)
        self.n = 0  # rows buffered
        self.n_handed = 0  # rows handed to the thread since its last write
        self.last_write = self.last_handoff = time.monotonic()
        # (rows by view, write the files after converting them?) or None: the end
        self.pending: queue.Queue[tuple[dict[str, list[Row]], bool] | None] = queue.Queue(maxsize=LOG_MAX_PENDING)
        self.error: BaseException | None = None
        self.writer = LogWriter(root, str(worker))
        self.thread = threading.Thread(target=self._run, name=f"feature-log-{worker}", daemon=True)
        self.thread.start()

    def append(self, rows: list[Row]) -> None:
        for row in rows:
            self.buffer[row[0]].append(row)
        self.n += len(rows)
        now = time.monotonic()
        if self.n + self.n_handed >= LOG_MAX_ROWS or now - self.last_write >= LOG_EVERY_S:
            self.write()
        elif now - self.last_handoff >= self.handoff_s:
            self._hand_off(write=False)

    def write(self) -> None:
        """Hand the buffered rows to the writer thread, which writes every row handed to it so far to files."""
        self.last_write = time.monotonic()
        self._hand_off(write=True)

    def _hand_off(self, write: bool) -> None:
        self._raise_error()
        self.last_handoff = time.monotonic()
        if self.n or (write and self.n_handed):
            self.pending.put((self.buffer, write))
            self.buffer = defaultdict(list)
            self.n_handed = 0 if write else self.n_handed + self.n
            self.n = 0

    def close(self) -> None:
        """Write what is buffered and wait until every file is on disk."""
        self.write()
        self.pending.put(None)
        self.thread.join()
        self._raise_error()

    def _raise_error(self) -> None:
        if self.error is not None:
            raise RuntimeError("the feature log writer failed") from self.error

    def _run(self) -> None:
        batches: dict[str, list[pa.RecordBatch]] = defaultdict(list)
        while (item := self.pending.get()) is not None:
            views, write = item
            try:
                for view, rows in views.items():
                    batches[view].append(self._record_batch(view, rows))
                del views, item  # the rows are garbage now, not at the next hand-off
                if write:
                    for view, view_batches in batches.items():
                        self.writer.write(view, pa.Table.from_batches(view_batches, schema=self.schemas[view]))
                    batches = defaultdict(list)
            except BaseException as exc:  # reported to the flow at its next hand-off
                self.error = exc

    def _record_batch(self, view: str, rows: list[Row]) -> pa.RecordBatch:
        columns = _columns(self.views[view], rows, self.tuple_orders.get(view))
        return pa.RecordBatch.from_pydict(columns, schema=self.schemas[view])


def _columns(schema: ViewSchema, rows: list[Row], order: tuple[str, ...] | None) -> dict[str, Any]:
    """Rows of one view as columns (join keys, features: None where a row lacks one, event_timestamp). Transposed
    at C speed; times are converted with numpy / Arrow (the same truncation to microseconds as int(t * 1e6))."""
    joins = list(map(itemgetter(1), rows))
    values = list(map(itemgetter(2), rows))
    columns: dict[str, Any] = {k: list(map(itemgetter(i), joins)) for i, k in enumerate(schema.join_keys)}
    names = [f.name for f in schema.features]
    if order is not None and set(map(type, values)) == {tuple}:
        position = {name: i for i, name in enumerate(order)}
        table = [list(map(itemgetter(position[name]), values)) if name in position else [None] * len(rows)
                 for name in names]
    else:
        if order is not None:
            values = [dict(zip(order, v, strict=True)) if v.__class__ is tuple else v for v in values]
        try:  # the feature functions return every feature: one C-speed pass per column
            table = [list(map(itemgetter(name), values)) for name in names]
        except KeyError:
            table = [[v.get(name) for v in values] for name in names]
    for f, col in zip(schema.features, table, strict=True):
        if f.dtype == "UNIX_TIMESTAMP":
            col = micros_of_seconds(pa.array(col, pa.float64()))
        columns[f.name] = col
    seconds = np.fromiter(map(itemgetter(3), rows), dtype=np.float64, count=len(rows))
    columns["event_timestamp"] = micros_of_seconds(pa.array(seconds))
    return columns
