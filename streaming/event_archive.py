"""The live flow's side of the event archive (pantry/event_archive.py holds its layout): every event the gate
accepted, buffered and written by a thread as parquet files by event day, like the feature log
(streaming/feature_log.py), so that neither the conversion nor the parquet encoding stalls the flow.

Nothing is lost on a crash: the sink is a Bytewax stateful sink whose snapshot, taken at the end of every epoch
before the epoch is committed, waits until every event handed to it so far is in a file. Events accepted after the
last committed epoch are processed again after a restart (the live source resumes from its snapshotted stream id,
the gate from its snapshotted `seen` ids) and archived again: at-least-once, and pantry.event_archive.read keeps one
row per event_id. Only the live flow archives: a replay's events are the data set itself (training reads it).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from operator import attrgetter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from pantry.event_archive import ACCEPTED_AT, ARCHIVE_SCHEMA, TIME_COLUMN, compact, prune
from pantry.featurestore.offline_log import LogWriter, micros_of_seconds
from pantry.settings import Settings
from streaming.epoch_clock import CLOCK
from streaming.features.event import FORGET, Ev

log = logging.getLogger("pantry.streaming.event_archive")

# The thread converts what it is handed to Arrow at once (the Evs are not GC-tracked, but the lists are), and writes
# a file per event day every ARCHIVE_EVERY_S: at most ~1,440 files a day, at any traffic (docs/DECISIONS.md).
ARCHIVE_HANDOFF_S = 1.0
ARCHIVE_EVERY_S = 60.0
ARCHIVE_MAX_PENDING = 20  # hand-offs waiting for the thread: a slower disk slows the flow instead of growing memory
ARCHIVE_MAX_EVENTS = 200_000  # buffered and handed since the last write: written at once past this
PARTITION = "archive"
ARCHIVE_LEAD_S = 2.0  # write the files this long before an epoch's close is due (streaming.epoch_clock)

Accepted = tuple[float, list[Ev]]  # (wall time the gate accepted them, the events): one gate batch

_QUANTITY_KINDS = pa.array(["purchase", "add_to_cart", "remove_from_cart"])
_PURCHASE_ONLY = ("basket_id", "sales_value", "discounts")


def archive_batch(accepted: list[Accepted]) -> pa.RecordBatch:
    """Gate batches as archive rows (ARCHIVE_SCHEMA): the compact events' fields, null where the event's type has
    no such field (an Ev holds 0 for a quantity or an amount it has not got)."""
    evs = [e for _t, batch in accepted for e in batch]
    n = len(evs)
    kind = pa.array(list(map(attrgetter("kind"), evs)), pa.string())
    columns: dict[str, pa.Array] = {"event_id": pa.array(list(map(attrgetter("event_id"), evs)), pa.string()),
                                    "type": kind}
    columns[TIME_COLUMN] = micros_of_seconds(pa.array(np.fromiter(map(attrgetter("t"), evs), np.float64, n)))
    at = np.repeat(np.array([t for t, _b in accepted], np.float64), [len(b) for _t, b in accepted])
    columns[ACCEPTED_AT] = micros_of_seconds(pa.array(at))
    for name in ("customer_id", "store_id", "product_id", "basket_id", "quantity", "on_hand", "coupon_upc",
                 "campaign_id", "original_product_id"):
        columns[name] = pa.array(list(map(attrgetter(name), evs)), pa.int64())
    for name in ("sales_value", "discounts"):
        columns[name] = pa.array(list(map(attrgetter(name), evs)), pa.float64())
    columns["accepted"] = pa.array(list(map(attrgetter("accepted"), evs)), pa.bool_())
    columns["decision_id"] = pa.array(list(map(attrgetter("decision_id"), evs)), pa.string())
    purchase = pc.equal(kind, "purchase")
    for name in _PURCHASE_ONLY:
        columns[name] = pc.if_else(purchase, columns[name], pa.scalar(None, columns[name].type))
    columns["quantity"] = pc.if_else(pc.is_in(kind, _QUANTITY_KINDS), columns["quantity"], pa.scalar(None, pa.int64()))
    substitution = pc.equal(kind, "substitution_feedback")  # the Ev's product_id is the substitute
    columns["substitute_product_id"] = pc.if_else(substitution, columns["product_id"], pa.scalar(None, pa.int64()))
    columns["product_id"] = pc.if_else(substitution, pa.scalar(None, pa.int64()), columns["product_id"])
    return pa.RecordBatch.from_arrays([columns[f.name] for f in ARCHIVE_SCHEMA], schema=ARCHIVE_SCHEMA)


class EventArchive:
    """Buffers accepted events and hands them to a writer thread every `handoff_s`; the thread converts them to
    Arrow record batches at once and writes files by event day every `write_every_s`, at `write()` and at `flush()`,
    which also waits for the files. When the events reach a new day, it deletes the day directories past retention
    and compacts each earlier day into one file (pantry.event_archive.compact)."""

    def __init__(self, settings: Settings, writer: str, handoff_s: float = ARCHIVE_HANDOFF_S,
                 write_every_s: float = ARCHIVE_EVERY_S):
        self.root = settings.event_archive_dir
        self.retention_days = settings.event_archive_retention_days
        self.handoff_s, self.write_every_s = handoff_s, write_every_s
        self.buffer: list[Accepted] = []
        self.n = 0  # events buffered
        self.n_handed = 0  # events handed to the thread since its last write
        self.last_write = self.last_handoff = time.monotonic()
        # (gate batches, write the files after converting them?) or None: the end
        self.pending: queue.Queue[tuple[list[Accepted], bool] | None] = queue.Queue(maxsize=ARCHIVE_MAX_PENDING)
        self.error: BaseException | None = None
        self.writer = LogWriter(self.root, writer, time_column=TIME_COLUMN)
        self.newest_day = ""
        self.thread = threading.Thread(target=self._run, name=f"event-archive-{writer}", daemon=True)
        self.thread.start()

    def append(self, accepted_at: float, events: list[Ev]) -> None:
        if events:
            self.buffer.append((accepted_at, events))
            self.n += len(events)
        now = time.monotonic()
        if self.n + self.n_handed >= ARCHIVE_MAX_EVENTS or now - self.last_write >= self.write_every_s:
            self.write()
        elif now - self.last_handoff >= self.handoff_s:
            self._hand_off(write=False)

    def write(self) -> None:
        """Hand the buffer to the thread, which writes every event handed to it so far to files."""
        self.last_write = time.monotonic()
        self._hand_off(write=True)

    def flush(self) -> None:
        """Write, and wait until every event appended so far is in a file."""
        self.write()
        self.pending.join()
        self._raise_error()

    def _hand_off(self, write: bool) -> None:
        self._raise_error()
        self.last_handoff = time.monotonic()
        if self.n or (write and self.n_handed):
            self.pending.put((self.buffer, write))
            self.buffer = []
            self.n_handed = 0 if write else self.n_handed + self.n
            self.n = 0

    def close(self) -> None:
        self.flush()
        self.pending.put(None)
        self.thread.join()
        self._raise_error()

    def _raise_error(self) -> None:
        if self.error is not None:
            raise RuntimeError("the event archive writer failed") from self.error

    def _run(self) -> None:
        batches: list[pa.RecordBatch] = []
        while (item := self.pending.get()) is not None:
            written = None
            try:
                accepted, write = item
                if accepted:
                    batches.append(archive_batch(accepted))
                del accepted, item  # the events are garbage now, not at the next hand-off
                if write and batches:
                    written = pa.Table.from_batches(batches, schema=ARCHIVE_SCHEMA)
                    batches = []
                    self.writer.write("", written)  # "": the day directories are the archive's root's
            except BaseException as exc:  # reported to the flow at its next hand-off
                self.error = exc
            finally:
                self.pending.task_done()
            # after task_done: a flush (an epoch's close, the flow's every step waiting) waits for the files, not for
            # the compaction of a day (~50 ms at the close measured in docs/DECISIONS.md "Forked snapshots")
            if written is not None:
                try:
                    self._prune(written)
                except Exception:  # housekeeping must never stop the flow; the next new day tries again
                    log.exception("event archive: retention or compaction")
        self.pending.task_done()

    def _prune(self, table: pa.Table) -> None:
        """When a new event day starts: delete the days past retention, compact the days before it."""
        newest = pc.max(table.column(TIME_COLUMN)).as_py().strftime("%Y-%m-%d")
        if newest > self.newest_day:
            self.newest_day = newest
            removed = prune(self.root, newest, self.retention_days)
            if removed:
                log.info("event archive: %d day(s) older than %d days before %s deleted", removed,
                         self.retention_days, newest)
            compact(self.root, newest)


class ArchivePartition(StatefulSinkPartition[Accepted, None]):
    def __init__(self, settings: Settings, worker: str):
        self.archive = EventArchive(settings, worker)
        self.written_ahead = False  # this epoch's files were written ahead of its close

    def write_batch(self, values: list[Accepted]) -> None:
        if not self.written_ahead and CLOCK.due(ARCHIVE_LEAD_S):  # the close then writes the last seconds'
            self.written_ahead = True
            self.archive.write()
        forgot = False
        for accepted_at, events in values:
            kept = [e for e in events if e.kind != FORGET]
            forgot = forgot or len(kept) < len(events)
            self.archive.append(accepted_at, kept)
        if forgot:  # an erasure (pantry.erasure) rewrites the files once the flow passed its marker: the erased
            self.archive.write()  # customer's events from before it must be in them by then

    def snapshot(self) -> None:
        # at the end of an epoch, before it is committed: what the epoch accepted is in files, or a restart (which
        # resumes after this epoch) would never process it again
        CLOCK.closed()
        self.written_ahead = False
        self.archive.flush()
        return None

    def close(self) -> None:
        self.archive.close()


class ArchiveSink(FixedPartitionedSink[Accepted, None]):
    """One partition (the gate is one key: its batches reach this sink in order, on the gate's worker or another)."""

    def __init__(self, settings: Settings):
        self.settings = settings

    def list_parts(self) -> list[str]:
        return [PARTITION]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> ArchivePartition:
        return ArchivePartition(self.settings, f"{os.getpid()}")
