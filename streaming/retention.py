"""Bounded `pantry:events`: the live flow trims what its committed recovery snapshots no longer need.

After a crash Bytewax resumes every step from its snapshot in the last committed epoch; the live source then XREADs
after that snapshot's `stream_id` (streaming.sources.SourceState). Bytewax deletes a superseded snapshot only once a
later one is committed by every worker (and `backup_interval` has passed, for archived copies of the recovery
store), so the OLDEST `events` source snapshot still in any recovery partition is at or before every point the
flow could resume from: with any number of workers, processes and recovery partitions, and with backups. The
stream is trimmed (exact XTRIM MINID) below that id minus the margins of the settings: `stream_retention_margin_s`
of time and `stream_retention_margin_events` entries, whichever keeps more. No snapshot of the live source yet
(a fresh store, or only a replay's state: stream id 0-0) trims nothing. Each partition of the stream
(pantry/partitions.py) is trimmed by its own source partition's snapshots, by the flow process that reads it.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path

from pantry.partitions import counters_key, events_stream, source_partition
from pantry.settings import Settings

log = logging.getLogger("pantry.streaming.retention")

# The walk back to the entry margin reads the stream in pages: one XREVRANGE of 100,001 entries held Redis and, while
# redis-py built its 200,000 lists, the flow process's GIL (and then a young-generation collection) for a few hundred
# ms, every trim (docs/DECISIONS.md "Forked snapshots")
TRIM_PAGE = 5_000
TRIM_PAUSE_S = 0.01
SOURCE_STEP_SUFFIX = ".events"  # the flow's input step ("pantry_stream.events"), see streaming.dataflow


def recovery_dir(settings: Settings) -> Path:
    """The Bytewax recovery store (streaming.runner creates it)."""
    return settings.data_dir / "stream" / "recovery"


def _ms(stream_id: str) -> int:
    return int(stream_id.split("-", 1)[0])


def _key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


# Run in a child process: the recovery store is SQLite, written by Bytewax's own (Rust) copy of SQLite in the flow's
# process, and a second SQLite library in one process breaks its POSIX locks (closing our file descriptor releases the
# process's locks on the file): reading it from the flow's process stalled the flow's epochs. Standard library only;
# the snapshot is unpickled without importing pantry (a msgspec Struct pickles as its class + field values).
_READ_SNAPSHOTS = r"""
import glob, io, json, pickle, sqlite3, sys

class Fields(pickle.Unpickler):
    def find_class(self, module, name):
        return lambda *args, **kw: list(args)

ids = []
for db in sorted(glob.glob(sys.argv[1] + "/part-*.sqlite3")):
    conn = sqlite3.connect(db, timeout=5.0)  # read-write: after a crash the first reader rebuilds the WAL index
    try:
        conn.execute("PRAGMA query_only = 1")
        rows = conn.execute("SELECT step_id, ser_change FROM snaps WHERE state_key = ?", (sys.argv[2],)).fetchall()
    finally:
        conn.close()
    for step_id, blob in rows:
        if step_id.endswith(sys.argv[3]) and blob is not None:
            ids.append(Fields(io.BytesIO(blob)).load()[2])  # SourceState(replay_offset, replay_until, stream_id)
print(json.dumps(ids))
"""


def snapshot_stream_ids(recovery_dir: Path, partition: str = "events") -> list[str]:
    """The `stream_id` of every snapshot of the live source's partition still in the recovery store (read by a
    child process, see _READ_SNAPSHOTS)."""
    if not Path(recovery_dir).is_dir():
        return []
    args = [sys.executable, "-I", "-c", _READ_SNAPSHOTS, str(recovery_dir), partition, SOURCE_STEP_SUFFIX]
    out = subprocess.run(args, capture_output=True, text=True, timeout=30, check=True)
    return json.loads(out.stdout)


_READ_PARTITIONS = r"""
import glob, json, sqlite3, sys

names = set()
for db in sorted(glob.glob(sys.argv[1] + "/part-*.sqlite3")):
    conn = sqlite3.connect(db, timeout=5.0)
    try:
        conn.execute("PRAGMA query_only = 1")
        names.update(key for step_id, key in conn.execute("SELECT DISTINCT step_id, state_key FROM snaps")
                     if step_id.endswith(sys.argv[2]))
    finally:
        conn.close()
print(json.dumps(sorted(names)))
"""


def recovered_source_partitions(recovery_dir: Path) -> list[str]:
    """The names of the source partitions that have state in the recovery store (a child process, as above)."""
    if not Path(recovery_dir).is_dir():
        return []
    args = [sys.executable, "-I", "-c", _READ_PARTITIONS, str(recovery_dir), SOURCE_STEP_SUFFIX]
    out = subprocess.run(args, capture_output=True, text=True, timeout=30, check=True)
    return json.loads(out.stdout)


def resume_floor(recovery_dir: Path, partition: int = 0) -> str | None:
    """The oldest id of the partition's stream the flow could resume after (None: no snapshot, nothing may be
    trimmed)."""
    ids = snapshot_stream_ids(recovery_dir, source_partition(partition))
    if not ids:
        return None
    oldest = min(ids, key=_key)
    return None if _key(oldest) == (0, 0) else oldest


def trim_point(client, floor: str, margin_s: float, margin_events: int, stream: str = events_stream(0)) -> str:
    """The MINID: `floor` moved back by the time margin and by the entry margin, whichever is further back."""
    ms, seq = _key(floor)
    margin_ms = int(margin_s * 1000)
    point = (ms, seq) if margin_ms <= 0 else (max(0, ms - margin_ms), 0)
    if margin_events > 0:
        last = _entry_back(client, stream, floor, margin_events + 1)
        # fewer than margin+1 entries at or before the floor: keep all of them
        point = min(point, _key(last) if last is not None else (0, 0))
    return f"{point[0]}-{point[1]}"


def _entry_back(client, stream: str, floor: str, n: int) -> str | None:
    """The id of the n-th entry counting back from `floor` (the first: the newest at or before it), or None when
    there are fewer; read TRIM_PAGE entries at a time."""
    top, left = floor, n
    while True:
        page = client.xrevrange(stream, max=top, min="-", count=min(TRIM_PAGE, left))
        if not page:
            return None
        last = page[-1][0]
        last = last.decode() if isinstance(last, bytes) else last
        left -= len(page)
        if left == 0:
            return last
        if len(page) < min(TRIM_PAGE, left + len(page)):
            return None
        top = f"({last}"
        time.sleep(TRIM_PAUSE_S)


def trim_events(client, settings: Settings, recovery_dir: Path, partition: int = 0) -> int:
    """Trim the partition's stream to what the committed snapshots still need plus the margins; returns entries
    removed."""
    floor = resume_floor(recovery_dir, partition)
    return 0 if floor is None else trim_below(client, settings, floor, partition)


def trim_below(client, settings: Settings, floor: str, partition: int = 0) -> int:
    """Trim the partition's stream below `floor` (a resume floor) minus the margins; returns entries removed."""
    stream = events_stream(partition)
    minid = trim_point(client, floor, settings.stream_retention_margin_s, settings.stream_retention_margin_events,
                       stream)
    if _key(minid) == (0, 0):
        return 0
    removed = int(client.xtrim(stream, minid=minid, approximate=False))
    if removed:  # counted, so that XLEN + trimmed - seen stays the flow's lag (streaming.runner.Progress)
        client.hincrby(counters_key(partition), "trimmed", removed)
        log.info("%s: %d entries before %s trimmed (resume floor %s)", stream, removed, minid, floor)
    return removed
