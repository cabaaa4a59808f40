"""The live shards' recovery snapshots, written by a forked child ahead of the epoch's close, so that the close costs
the flow the events of the last few seconds instead of the whole state (docs/DECISIONS.md "Forked snapshots").

Encoding a shard's state for Bytewax at the close takes time in O(state): the worker thread, and with it every step
of the process, stops for it (0.3-0.7 s at 10,000 events/s after five minutes, and growing), and Bytewax then
writes the bytes into its recovery store in the same thread. Instead, FORK_LEAD_S before the close is due
(streaming.epoch_clock), the first shard logic of a worker thread to get a batch forks the process, as Redis does
for its snapshots: the child encodes the state of every shard logic of that thread to a file each (written, fsynced,
renamed) and exits, while the parent goes on and each logic keeps the events it applies after the fork. At the close,
a logic's snapshot waits for the child (long done, normally) and is the file's path plus those events. A resume
decodes the file and applies the events again, in their order: the state the logic had at the close. (Refresh
rolls are not replayed; as after any restart, the first refresh lists every entity again.)

Anything else falls back to the snapshot as before, the state encoded at the close: no fork yet (the first epoch of
a logic built after the fork), more than FORK_MAX_EVENTS events since the fork (the close came much later than
expected), a child that failed or was still writing FORK_WAIT_S after the close (then killed).

Files: `<recovery dir>/forked/<pid>-<ns>/<i>.snap`, one directory per fork. A logic deletes the file of its
snapshot before last when it takes a new one (by then the one before it has been committed: an epoch is minutes);
files no snapshot in the recovery store refers to (a crash between a fork and its close) are swept by the first
process at its start (`sweep`). A cluster across machines keeps each process's files on its machine: resume it with
the same processes (Bytewax places a key by its hash over the worker count), or turn this off
(PANTRY_STREAM_FORK_SNAPSHOTS=0).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path

import msgspec

from pantry.settings import Settings
from streaming.epoch_clock import CLOCK
from streaming.features.event import Ev
from streaming.retention import recovery_dir

log = logging.getLogger("pantry.streaming.forked_snapshots")

FORK_LEAD_S = 10.0  # fork this long before the close is due: the child takes ~1-2 s (more while the machine is busy)
FORK_NICE = 19  # the child's niceness, added to the flow's (a child at the flow's priority delayed its events)
FORK_MAX_EVENTS = 200_000  # events applied after the fork, per logic, past which it gives the fork up
FORK_WAIT_S = 60.0  # how long a close waits for a child still writing
FORKED = b"pantry-forked-"  # every forked snapshot: a line naming its kind, its file's path, a newline, the rest
MAGIC = FORKED + b"snapshot-1\n"  # then the file's path, a newline, the events (msgpack). A state never
# starts so: it is a msgpack array (0x9_, 0xdc)
_encode_events = msgspec.msgpack.Encoder().encode
_decode_events = msgspec.msgpack.Decoder(list[Ev]).decode


def directory_of(settings: Settings) -> Path:
    return recovery_dir(settings) / "forked"


def forks_of(settings: Settings) -> Forks | None:
    """The live flow's forks (None: PANTRY_STREAM_FORK_SNAPSHOTS=0, the state encoded at the close)."""
    return Forks(directory_of(settings)) if settings.stream_fork_snapshots else None


def read(resume: bytes | None) -> tuple[bytes | None, list[Ev]]:
    """A snapshot as (the state's bytes, events to apply to it after decoding it)."""
    if resume is None or not resume.startswith(MAGIC):
        return resume, []
    path, _, events = resume[len(MAGIC):].partition(b"\n")
    try:
        state = Path(path.decode()).read_bytes()
    except FileNotFoundError as exc:
        raise missing(path.decode()) from exc
    return state, _decode_events(events)


def missing(path: str) -> RuntimeError:
    return RuntimeError(f"the recovery snapshot's state file {path} is missing: resume on the machine and with the "
                        "processes that wrote it, or reset the flow (`pantry stream reset`)")


def path_of(snapshot: bytes | None) -> str | None:
    """The state file a snapshot refers to (None: the state is in the snapshot)."""
    return snapshot[len(MAGIC):].partition(b"\n")[0].decode() if snapshot and snapshot.startswith(MAGIC) else None


class _Child:
    """A forked child writing the files of one fork."""

    def __init__(self, pid: int) -> None:
        self.pid, self.ok = pid, None

    def wait(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self.ok is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.ok = os.waitstatus_to_exitcode(status) == 0
                if not self.ok:
                    log.warning("forked snapshot child %d failed (%s): this close encodes in the flow", pid, status)
            elif time.monotonic() >= deadline:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
                self.ok = False
                log.warning("forked snapshot child %d still writing after %.0f s: killed", self.pid, timeout_s)
            else:
                time.sleep(0.002)
        return self.ok


class _Thread:
    def __init__(self) -> None:
        self.shards: weakref.WeakSet[ForkedState] = weakref.WeakSet()  # the thread's logics' (shards, gates)
        self.forked_in = -1  # the epoch of its last fork (EpochClock.closes)


_THREADS: dict[int, _Thread] = {}


class Forks:
    """The forks of one flow process: where their files go, and per worker thread the shard logics it runs (a fork
    copies them all in a consistent state only between their batches, which a thread's own logics always are)."""

    def __init__(self, directory: Path, lead_s: float = FORK_LEAD_S) -> None:
        self.directory, self.lead_s = Path(directory), lead_s

    @staticmethod
    def _thread() -> _Thread:
        # by thread id, not a threading.local: Bytewax's worker threads are Rust's, whose Python thread state (and
        # with it a local's values) can go whenever they release the GIL (measured: every batch saw an empty one)
        return _THREADS.setdefault(threading.get_ident(), _Thread())

    def register(self, shard: ForkedState) -> None:
        self._thread().shards.add(shard)

    def maybe_fork(self) -> None:
        t = self._thread()
        if t.forked_in != CLOCK.closes and CLOCK.due(self.lead_s):
            t.forked_in = CLOCK.closes
            self._fork(list(t.shards))

    def _fork(self, shards: list[ForkedState]) -> None:
        if not shards:
            return
        where = self.directory / f"{os.getpid()}-{time.time_ns()}"
        where.mkdir(parents=True)
        paths = [where / f"{i:03d}.snap" for i in range(len(shards))]
        pid = os.fork()
        if pid == 0:  # the child: write the files and go, touching nothing else of the parent's (threads, sockets)
            code = 1
            try:
                gc.disable()  # its state is the parent's, frozen: nothing to collect, and every object would be copied
                os.nice(FORK_NICE)  # it has seconds to write: the flow's own work comes first
                for shard, path in zip(shards, paths, strict=True):
                    try:
                        _write(path, shard.encode_state())
                    except Exception as exc:  # that logic's close finds no file and encodes; the others go on
                        sys.stderr.write(f"forked snapshot {path}: {type(exc).__name__}: {exc}\n")
                _fsync(where)
                code = 0
            except BaseException as exc:
                sys.stderr.write(f"forked snapshot: {type(exc).__name__}: {exc}\n")
            finally:
                os._exit(code)
        child = _Child(pid)
        for shard, path in zip(shards, paths, strict=True):
            shard.forked(child, path)


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ForkedState:
    """What a fork writes for one logic: `encode_state()` is called in the child; `forked(child, path)` in the parent
    right after the fork; `taken()` at the close: the file, once the child wrote it (None: encode at the close)."""

    def __init__(self, forks: Forks | None, encode_state: Callable[[], bytes], resumed_from: str | None = None):
        self.forks, self.encode_state = forks, encode_state
        self.child: _Child | None = None
        self.path: Path | None = None
        self.files = [resumed_from] if resumed_from else []  # the files of its newest snapshots, oldest first
        if forks is not None:
            forks.register(self)

    def before_batch(self) -> None:
        if self.forks is not None:
            self.forks.maybe_fork()

    def forked(self, child: _Child, path: Path) -> None:
        self.child, self.path = child, path

    def given_up(self) -> None:
        self.child = None

    def taken(self) -> str | None:
        CLOCK.closed()
        child, path = self.child, self.path
        self.child, self.path = None, None
        if child is None or path is None or not child.wait(FORK_WAIT_S) or not path.exists():
            return None
        self.files.append(str(path))
        while len(self.files) > 2:  # the one before last is committed by now: an epoch ago (minutes)
            _delete_later(self.files.pop(0))
        return str(path)


class ShardSnapshots(ForkedState):
    """One shard logic's snapshots. The logic calls `before_batch()` before it applies a batch, `applied(events)`
    after, and returns `snapshot()` from its own; `resumed_from` is the file its resume state came from. The events
    applied since a fork are encoded batch by batch as they come, so that the close only joins bytes (encoding them
    all at the close took 5-15 ms a shard, the flow's every step waiting)."""

    def __init__(self, forks: Forks | None, encode_state: Callable[[], bytes], resumed_from: str | None = None):
        super().__init__(forks, encode_state, resumed_from)
        self.events: list[bytes] = []  # each batch's events, a msgpack array's items without its header
        self.n = 0

    def forked(self, child: _Child, path: Path) -> None:
        super().forked(child, path)
        self.events, self.n = [], 0

    def applied(self, events: list[Ev]) -> None:
        if self.child is not None and events:
            self.events.append(_array_items(_encode_events(events)))
            self.n += len(events)
            if self.n > FORK_MAX_EVENTS:
                self.given_up()

    def snapshot(self) -> bytes:
        events, n = self.events, self.n
        self.events, self.n = [], 0
        path = self.taken()
        if path is None:
            return self.encode_state()
        return b"".join([MAGIC, path.encode(), b"\n", _array_header(n), *events])


def _array_items(encoded: bytes) -> bytes:
    """A msgpack array without its header: its items, as encoded."""
    first = encoded[0]
    return encoded[1:] if first & 0xF0 == 0x90 else encoded[3:] if first == 0xDC else encoded[5:]


def _array_header(n: int) -> bytes:
    """The header of a msgpack array of `n` items (fixarray, array 16, array 32)."""
    if n < 16:
        return bytes([0x90 | n])
    return b"\xdc" + n.to_bytes(2, "big") if n < 1 << 16 else b"\xdd" + n.to_bytes(4, "big")


# Superseded files are deleted by a thread of the flow's process, not by the close: unlinking a file of a shard's state
# took 5-30 ms each, ~60 ms a close in all, with every step of the process waiting (docs/DECISIONS.md "Forked
# snapshots"). A file left when the process ends first is swept at the next start (`sweep`).
_SUPERSEDED: queue.Queue[str] = queue.Queue()
_janitor: threading.Thread | None = None


def _delete_later(path: str) -> None:
    global _janitor
    if _janitor is None or not _janitor.is_alive():
        _janitor = threading.Thread(target=_delete_superseded, name="forked-snapshots-janitor", daemon=True)
        _janitor.start()
    _SUPERSEDED.put(path)


def _delete_superseded() -> None:
    while True:
        path = _SUPERSEDED.get()
        try:
            _unlink(path)
        finally:
            _SUPERSEDED.task_done()


def deleted() -> None:
    """Wait until the superseded files handed to the thread are gone."""
    _SUPERSEDED.join()


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
        os.rmdir(os.path.dirname(path))  # the fork's directory, once its last file is gone
    except OSError:  # gone already, or other files left in the directory
        pass


# Run in a child process, as streaming.retention reads the store (Bytewax's own SQLite is in the flow's process).
_READ_PATHS = r"""
import glob, io, json, pickle, sqlite3, sys

class Plain(pickle.Unpickler):  # a snapshot of bytes needs no class
    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"{module}.{name}")

magic = sys.argv[2].encode()
paths = []
for db in sorted(glob.glob(sys.argv[1] + "/part-*.sqlite3")):
    conn = sqlite3.connect(db, timeout=5.0)
    try:
        conn.execute("PRAGMA query_only = 1")
        rows = conn.execute("SELECT ser_change FROM snaps WHERE instr(ser_change, ?) > 0", (magic,)).fetchall()
    finally:
        conn.close()
    for (blob,) in rows:
        snap = Plain(io.BytesIO(blob)).load()
        if isinstance(snap, bytes) and snap.startswith(magic):
            paths.append(snap.split(b"\n", 2)[1].decode())
print(json.dumps(paths))
"""


def referenced_in(snapshots: list[bytes]) -> set[str]:
    """The files these snapshots refer to, parsed as the store's reader (_READ_PATHS) parses them."""
    return {s.split(b"\n", 2)[1].decode() for s in snapshots if s.startswith(FORKED)}


def referenced(recovery_dir: Path) -> set[str]:
    """The state files the snapshots in the recovery store refer to."""
    args = [sys.executable, "-I", "-c", _READ_PATHS, str(recovery_dir), FORKED.decode()]
    return set(json.loads(subprocess.run(args, capture_output=True, text=True, timeout=60, check=True).stdout))


def sweep(recovery_dir: Path, directory: Path) -> int:
    """Delete the state files no snapshot in the recovery store refers to; run before the flow starts (nothing of this
    run has forked yet). Returns the files deleted."""
    if not directory.is_dir() or not any(Path(recovery_dir).glob("part-*.sqlite3")):
        return 0
    kept = referenced(recovery_dir)
    removed = 0
    for path in directory.glob("*/*"):
        if str(path) not in kept:
            _unlink(str(path))
            removed += 1
    for where in directory.iterdir():
        if where.is_dir() and not any(where.iterdir()):
            where.rmdir()
    if removed:
        log.info("forked snapshots: %d unreferenced state file(s) deleted", removed)
    return removed
