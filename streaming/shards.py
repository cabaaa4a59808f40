"""The keyed feature state: NSHARDS customer shards (streaming/customer_shard.py) and NSHARDS store shards
(streaming/store_shard.py), spread by Bytewax over its workers; here what they share.

Each shard folds its share of every batch into its entities' states (streaming.features) and emits the rows of the
entities that changed, at most every `flush_s`. NSHARDS never changes: it names the recovery state.
"""

from __future__ import annotations

import time
from array import array

import msgspec
from bytewax.operators import StatefulBatchLogic

from streaming.features.event import Ev
from streaming.forked_snapshots import Forks, ShardSnapshots
from streaming.refresh import Refresh
from streaming.sinks import Dead, Flush, failure

NSHARDS = 16
ALL_SHARDS = tuple(f"{kind}{i:02d}" for kind in "cs" for i in range(NSHARDS))  # c00..c15 customers, s00..s15 stores
ROLL_EVERY_S = 0.1  # spread refresh: 32 shards x refresh_slice entities this often (~5k rows/s at most)
CHECKS_PER_ROLL = 1000  # candidates looked at per shard per ROLL_EVERY_S (~0.3 ms; 50k per shard per refresh)
ROLL_MAX_EVENTS = 64  # a shard with more new events than this in one batch is behind: fresh events first, no roll
_encode = msgspec.msgpack.Encoder().encode
_events_decoder = msgspec.msgpack.Decoder(list[Ev])


class Work:
    """A shard's share of a batch. Between worker threads it is passed as is; to another process (`--processes`)
    Bytewax pickles it, and then the events travel as one msgpack array (~0.3 us per event each way, where
    pickling the structs one by one costs ~5 us)."""

    __slots__ = ("as_of", "events", "final", "refresh")

    def __init__(self, events: list[Ev], refresh: bool, as_of: float | None, final: bool):
        self.events, self.refresh, self.as_of, self.final = events, refresh, as_of, final

    def __reduce__(self):
        return _work_from_msgpack, (_encode(self.events), self.refresh, self.as_of, self.final)


def _work_from_msgpack(events: bytes, refresh: bool, as_of: float | None, final: bool) -> Work:
    return Work(_events_decoder.decode(events), refresh, as_of, final)


class Coalescing(Refresh, StatefulBatchLogic[Work, Flush, bytes]):
    """Changed entities are remembered (in the snapshot too) and emitted as rows at most every `flush_s`, at a
    refresh, and at the end of a replay: one row per entity per flush, however many events touched it. With
    `defer_online` (an unpaced replay) a flush's rows go to the feature log only; the first flush that writes
    online again (the end of the replay, or the first flush of a later run after an interrupted replay: the
    flag is in the snapshot) sends a row of every entity of the shard to the online store.

    Live refreshes: streaming.refresh.
    """

    shard: msgspec.Struct  # streaming.customer_shard.CustomerShard or streaming.store_shard.StoreShard

    def __init__(self, flush_s: float, refresh_slice: int, defer_online: bool, forks: Forks | None = None,
                 resumed_from: str | None = None) -> None:
        self.flush_s = flush_s
        self.refresh_slice = refresh_slice
        self.defer_online = defer_online
        self.last_emit = self.last_roll = time.monotonic()
        Refresh.__init__(self, refresh_slice)
        self.dead: list[Dead] = []  # events whose update raised (and rows that could not be built), not yet emitted
        self.forgot = False  # an erased customer's state was dropped since the last flush
        # live: snapshots by a forked child (streaming/forked_snapshots.py); else the state encoded at the close
        self.snapshots = ShardSnapshots(forks, self.encode_state, resumed_from)

    def encode_state(self) -> bytes:
        raise NotImplementedError

    def snapshot(self) -> bytes:
        return self.snapshots.snapshot()

    def on_batch(self, values: list[Work]) -> tuple[list[Flush], bool]:
        force = final = False
        n_events = 0
        self.snapshots.before_batch()
        for work in values:
            n_events += len(work.events)
            try:
                self.apply(work.events)
            except Exception as exc:  # apply isolates each event; this is the last line
                self.dead.append(failure(exc, None, "batch"))
            self.snapshots.applied(work.events)
            if work.refresh and work.as_of is not None:
                if work.final or self.refresh_slice <= 0:
                    self.due = array("q")
                    self.roll_all(work.as_of)
                    force = True
                else:
                    self.due, self.due_as_of = self.refresh_candidates(work.as_of), work.as_of
            final = final or work.final
        force = force or final or self.forgot
        now = time.monotonic()
        if self.due and now - self.last_roll >= ROLL_EVERY_S and n_events <= ROLL_MAX_EVENTS:
            self.last_roll = now
            self.roll(self.refresh_slice, CHECKS_PER_ROLL)
        if force or now - self.last_emit >= self.flush_s:
            self.last_emit = now
            flush = self.flush(final)
            if self.dead:
                flush, self.dead = flush._replace(dead=self.dead), []
            if self.forgot:
                self.forgot, flush = False, flush._replace(forgot=True)
            return [flush], StatefulBatchLogic.RETAIN
        if self.dead:  # dead letters go out with the batch that found them, not at the next flush
            dead, self.dead = self.dead, []
            return [Flush([], [], dead)], StatefulBatchLogic.RETAIN
        return [], StatefulBatchLogic.RETAIN

    def flush(self, final: bool) -> Flush:
        """The rows of the entities changed since the last flush (for the log) and the rows for the online store:
        the same; none while deferred; or, when the online store is behind, every row of every entity (as of its
        own time: what its last logged row said)."""
        shard = self.shard
        if self.defer_online and not final:
            rows = self.rows()
            if rows:
                shard.online_behind = True
            return Flush(rows, [])
        if not shard.online_behind:
            rows = self.rows()
            return Flush(rows, rows)
        shard.online_behind = False
        return self.catch_up()

def is_customer_shard(item: tuple[str, Work]) -> bool:
    return item[0][0] == "c"
