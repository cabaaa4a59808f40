"""Where events come from: the dataset replay (parquet, event-time order) and the live Redis Stream.

The replay is one Bytewax source partition named `events`; the live source has one per partition of the stream
(pantry/partitions.py: `events`, `events-1`, ...), each reading its own stream from its own resume state. They share
the resume state's type, so a live run resumes from the state a replay left behind (same recovery store): partition
0 from the replay's offset, then from its stream's last entry id.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta

import msgspec
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from pantry.erasure import FORGET_FIELD
from pantry.keys import DECISIONS_STREAM, EVENT_FIELD
from pantry.partitions import SOURCE_PARTITION, events_stream, partition_of_source, source_partition
from pantry.settings import Settings
from streaming.features.event import Ev
from streaming.redis_retry import REDIS_DOWN, Backoff

log = logging.getLogger("pantry.streaming.sources")

FORGET_PREFIX = b"\x00forget:"  # + customer id: an erasure marker (pantry.erasure), never a msgpack event

REPLAY_BATCH = 4096
LIVE_BATCH = 2000
LIVE_BLOCK_MS = 20
TICK_EVERY_S = 0.1  # an idle live source still emits an empty batch this often, so the sinks flush
REFRESH_EVERY_S = 5.0  # how often live windows are rolled forward to the newest event time


class Batch(msgspec.Struct, gc=False):
    """One source item: events (replay) or undecoded stream entries (live), and maybe a refresh request.

    `refresh` asks every shard to re-evaluate the windows that have rolled by `as_of` (None = the newest event
    time seen); every batch also reaches every sink, which lets them flush while the stream is idle."""

    events: list[Ev] = msgspec.field(default_factory=list)
    raws: list[tuple[bytes, bytes | None]] = msgspec.field(default_factory=list)  # (entry id, payload)
    refresh: bool = False
    as_of: float | None = None
    final: bool = False  # the last batch of a replay
    position: str | None = None  # live: the last stream entry id handed to the flow (with this batch)
    decisions: list[dict[bytes, bytes]] = msgspec.field(default_factory=list)  # live: decision-log entries' fields
    partition: int = 0  # live: the stream partition the entries come from (pantry/partitions.py)


class SourceState(msgspec.Struct):
    """Resume state of the `events` partition (pickled by Bytewax)."""

    replay_offset: int = 0  # events of the dataset consumed so far
    replay_until: float | None = None
    stream_id: str = "0-0"  # last stream entry handed to the flow
    decisions_id: str = "0-0"  # live: last pantry:decisions entry handed to the flow (the outcome join)


class ReplayPartition(StatefulSourcePartition[Batch, SourceState]):
    def __init__(self, settings: Settings, until: datetime | None, speed: float | None, state: SourceState):
        from pantry.dataset import read_events

        self.state = state
        table = read_events(settings, until=until)
        self.n = table.num_rows
        offset = state.replay_offset if state.replay_offset <= self.n else self.n
        cols = {}
        table = table.slice(offset)
        for name in ("event_id", "type", "customer_id", "store_id", "product_id", "basket_id", "quantity",
                     "sales_value"):
            cols[name] = table.column(name).to_pylist()
        ts = table.column("ts").cast("int64").to_numpy() / 1e6
        self.t = ts.tolist()
        self.cols = cols
        self.base = offset
        self.pos = 0
        self.until = until.timestamp() if until else None
        self.last_t = self.t[-1] if self.t else None
        self.speed = speed
        self.wall0 = time.monotonic()
        self.t0 = self.t[0] if self.t else 0.0
        self.done = offset >= self.n

    def next_batch(self) -> list[Batch]:
        if self.done:
            raise StopIteration
        remaining = len(self.t) - self.pos
        if remaining <= 0:
            self.done = True
            as_of = self.until if self.until is not None else self.last_t
            return [Batch(refresh=True, as_of=as_of, final=True)]
        end = self.pos + min(REPLAY_BATCH, remaining)
        if self.speed:
            # Pace by event time: emit only what `speed` x the elapsed wall time has reached.
            horizon = self.t0 + (time.monotonic() - self.wall0) * self.speed
            lo, hi = self.pos, end
            while lo < hi:
                mid = (lo + hi) // 2
                if self.t[mid] <= horizon:
                    lo = mid + 1
                else:
                    hi = mid
            end = lo
            if end == self.pos:
                return []
        c = self.cols
        s = slice(self.pos, end)
        batch = [
            Ev(eid, kind, t, cid, sid, pid, bid, q or 0, sv if sv == sv and sv is not None else 0.0)
            for eid, kind, t, cid, sid, pid, bid, q, sv in zip(
                c["event_id"][s], c["type"][s], self.t[s], c["customer_id"][s], c["store_id"][s],
                c["product_id"][s], c["basket_id"][s], c["quantity"][s], c["sales_value"][s], strict=True,
            )
        ]
        self.pos = end
        return [Batch(events=batch)]

    def next_awake(self):
        return None

    def snapshot(self) -> SourceState:
        return SourceState(self.base + self.pos, self.until, self.state.stream_id, self.state.decisions_id)


class ReplaySource(FixedPartitionedSource[Batch, SourceState]):
    def __init__(self, settings: Settings, until: datetime | None = None, speed: float | None = None):
        self.settings, self.until, self.speed = settings, until, speed

    def list_parts(self) -> list[str]:
        return [SOURCE_PARTITION]

    def build_part(self, step_id: str, for_part: str, resume_state: SourceState | None) -> ReplayPartition:
        return ReplayPartition(self.settings, self.until, self.speed, resume_state or SourceState())


class LivePartition(StatefulSourcePartition[Batch, SourceState]):
    """XREAD from the partition's stream after the last entry handed on; resumes there after a restart. Partition 0
    also reads the decision log (one reader: the outcome shards are keyed by customer, not by partition)."""

    def __init__(self, settings: Settings, state: SourceState, stop_flag, partition: int = 0,
                 shared_worker: bool = False):
        from pantry.redis_server import sync_client
        from streaming.retention import recovery_dir

        # no retries inside redis-py (it would block this call for seconds): next_batch backs off itself
        self.client = sync_client(settings, timeout_s=5.0, retries=0)
        self.backoff = Backoff()
        self.state = state
        self.last_tick = self.last_refresh = self.last_trim = time.monotonic()
        self.stop_flag = stop_flag
        self.settings = settings
        self.recovery_dir = recovery_dir(settings)
        self.trimmer: threading.Thread | None = None
        self.trimmed_below: str | None = None  # the resume floor of the last trim
        self.linger_s = max(0, settings.live_linger_ms) / 1000
        self.read_after = 0.0  # monotonic time before which the next read waits (the linger)
        self.partition = partition
        self.stream = events_stream(partition)
        self.reads_decisions = partition == 0
        # With other workers, this one's waits must not stop it: they route work to its shards meanwhile. So it
        # waits in the engine (next_awake) and reads without blocking (see `linger`).
        self.shared_worker = shared_worker

    def next_batch(self) -> list[Batch]:
        if self.stop_flag is not None and self.stop_flag():
            raise StopIteration
        wait = self.read_after - time.monotonic()
        if wait > 0:
            if self.shared_worker:  # woken early (next_awake is a hint): not yet
                return []
            time.sleep(wait)
        try:
            reply = self.client.xread({self.stream: self.state.stream_id}, count=LIVE_BATCH,
                                      block=None if self.shared_worker else LIVE_BLOCK_MS)
            # then the decision log, without waiting (its own XREAD: on a Redis Cluster the two streams are in
            # different slots). After the events: every decision logged before one of these events was written is
            # in this batch or an earlier one, and the outcome shards take a batch's decisions first, so an outcome
            # finds a decision that was logged before it (one logged later waits for it: streaming/outcomes.py)
            decided = self.client.xread({DECISIONS_STREAM: self.state.decisions_id}, count=LIVE_BATCH) \
                if self.reads_decisions else None
        except REDIS_DOWN as exc:  # killed, restarting or hung: no batch meanwhile, the position is kept
            time.sleep(self.backoff.failed("live source", exc))
            self.client.connection_pool.disconnect()
            return []
        if self.backoff.since is not None:
            self.backoff.ok("live source")
        now = time.monotonic()
        if now - self.last_trim >= self.settings.stream_trim_every_s:
            self.last_trim = now
            self.trim()
        refresh = now - self.last_refresh >= REFRESH_EVERY_S
        if refresh:
            self.last_refresh = now
        decisions: list[dict[bytes, bytes]] = []
        if decided:
            decision_entries = decided[0][1]
            decisions = [fields for _entry_id, fields in decision_entries]
            self.state = msgspec.structs.replace(self.state, decisions_id=decision_entries[-1][0].decode())
        if not reply:
            if decisions or refresh or now - self.last_tick >= TICK_EVERY_S:
                self.last_tick = now
                self.linger(now, 0 < len(decisions) < LIVE_BATCH)
                return [Batch(refresh=refresh, position=self.state.stream_id, decisions=decisions,
                              partition=self.partition)]
            if self.shared_worker:  # nothing in the stream: look again after XREAD's block time, from the engine
                self.read_after = now + LIVE_BLOCK_MS / 1000
            return []
        entries = reply[0][1]
        self.linger(now, len(entries) < LIVE_BATCH and len(decisions) < LIVE_BATCH)
        raws = [(entry_id, fields.get(EVENT_FIELD) if FORGET_FIELD not in fields
                 else FORGET_PREFIX + fields[FORGET_FIELD]) for entry_id, fields in entries]
        self.state = msgspec.structs.replace(self.state, stream_id=entries[-1][0].decode())
        self.last_tick = now
        return [Batch(raws=raws, refresh=refresh, position=self.state.stream_id, decisions=decisions,
                      partition=self.partition)]

    def trim(self) -> None:
        """Bound the partition's stream to what the committed recovery snapshots still need (streaming.retention), in a
        thread: reading the recovery store takes a child process, which the flow does not wait for."""
        if self.trimmer is not None and self.trimmer.is_alive():
            return
        self.trimmer = threading.Thread(target=self._trim, name="pantry-events-trim", daemon=True)
        self.trimmer.start()

    def _trim(self) -> None:
        from streaming.retention import resume_floor, trim_below

        try:
            floor = resume_floor(self.recovery_dir, self.partition)
            # the floor moves only when an epoch is committed (minutes live): until then there is nothing new to trim
            if floor is not None and floor != self.trimmed_below:
                trim_below(self.client, self.settings, floor, self.partition)
                self.trimmed_below = floor
        except Exception:  # retention must never stop the flow; the next period tries again
            log.exception("trimming %s", self.stream)

    def linger(self, now: float, partial: bool) -> None:
        """After a batch that did not fill, the next read waits until `live_linger_ms` after this one: what trickles
        in meanwhile makes one batch, not one per read, and each batch costs the whole flow's per-batch work. A full
        batch reads again at once (a backlog drains at full speed); a read that found nothing blocks in XREAD, so the
        first event after a quiet spell is not delayed. The wait is a sleep in this call, like XREAD's block: a
        Bytewax `next_awake` instead parks the worker in 1-ms steps (~700 wake-ups a second, measured). Not in a
        flow of several workers: there the sleep left waiting the work the others routed to this one, so the wait
        is a `next_awake`, and an empty stream is looked at again every LIVE_BLOCK_MS the same way
        (docs/DECISIONS.md "Live batches linger")."""
        self.read_after = now + self.linger_s if partial else 0.0

    def next_awake(self):
        if not self.shared_worker:
            return None
        wait = self.read_after - time.monotonic()
        return datetime.now(UTC) + timedelta(seconds=wait) if wait > 0 else None

    def snapshot(self) -> SourceState:
        return self.state

    def close(self) -> None:
        if self.trimmer is not None:
            self.trimmer.join(timeout=30)
        self.client.close()


def live_partitions(settings: Settings) -> int:
    """How many stream partitions the live flow reads: `stream_partitions`, or more when a higher partition still
    has a stream in Redis or a state in the recovery store (the count was lowered: Bytewax refuses to start with a
    recovered source partition it is not given, and what is left in the stream is read to its end, not lost)."""
    from pantry.partitions import events_stream, partition_of_source
    from pantry.redis_server import sync_client
    from pantry.settings import MAX_STREAM_PARTITIONS
    from streaming.retention import recovered_source_partitions, recovery_dir

    n = settings.stream_partitions
    recovered = [partition_of_source(name) for name in recovered_source_partitions(recovery_dir(settings))]
    n = max([n, *(p + 1 for p in recovered)])
    try:
        client = sync_client(settings, timeout_s=5.0, retries=0)
        pipe = client.pipeline(transaction=False)
        higher = range(n, MAX_STREAM_PARTITIONS)
        for p in higher:
            pipe.exists(events_stream(p))
        n = max([n, *(p + 1 for p, found in zip(higher, pipe.execute(), strict=True) if found)])
        client.close()
    except REDIS_DOWN as exc:  # Redis not up yet: the configured and recovered partitions (the source waits for it)
        log.warning("live source: could not look for streams of higher partitions (%s)", exc)
    if n > settings.stream_partitions:
        log.warning("live source: reading %d stream partitions, PANTRY_STREAM_PARTITIONS is %d (a higher partition "
                    "has a stream or a recovered state)", n, settings.stream_partitions)
    return n


class LiveSource(FixedPartitionedSource[Batch, SourceState]):
    def __init__(self, settings: Settings, stop_flag=None, workers: int = 1):
        self.settings = settings
        self.stop_flag = stop_flag  # a callable; True ends the flow cleanly (SIGINT/SIGTERM)
        self.workers = workers  # in the whole flow (every process): above 1, a partition waits in the engine

    def list_parts(self) -> list[str]:
        return [source_partition(p) for p in range(live_partitions(self.settings))]

    def build_part(self, step_id: str, for_part: str, resume_state: SourceState | None) -> LivePartition:
        return LivePartition(self.settings, resume_state or SourceState(), self.stop_flag,
                             partition_of_source(for_part), shared_worker=self.workers > 1)
