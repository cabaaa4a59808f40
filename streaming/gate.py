"""The gate: the one step that sees every event of its stream partition in order (one gate per partition, keyed
pantry.partitions.gate_key). It rejects events out of bounds or too far ahead of the service clock (live), drops
duplicates, rejects late events, counts, and routes each accepted event to its customer shard and its store shard
(streaming.shards). A gate's lateness bound is against the newest event time of its own partition."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from pathlib import Path

import msgspec
import numpy as np
from bytewax.operators import StatefulBatchLogic

from pantry.clock import max_accepted_ts
from pantry.settings import ClockMode
from streaming import forked_snapshots
from streaming.features.event import FEATURE_KINDS, FORGET, LATENESS_S, NO_TIME, OUTCOME_KINDS, Ev, admit
from streaming.features.substitution import is_feedback
from streaming.forked_snapshots import FORK_MAX_EVENTS, ForkedState, Forks
from streaming.outcomes import OUTCOME_SHARDS, Dec, OutWork
from streaming.seen_ids import Recording, SeenIds
from streaming.shards import ALL_SHARDS, NSHARDS, Work
from streaming.sinks import Control, failure

ROLLING_S = 5.0  # after a live refresh, every shard gets work this long (spread refresh; == live period) ...
# ... at most this often: each shard rolls at most every ROLL_EVERY_S (0.1 s), and a batch sent to all 32 shards
# costs 32 activations whether or not they roll; a trickle of outcomes and decisions makes a batch each linger
# (20 a second), which sent to every shard doubled the idle flow's per-batch work. A little over ROLL_EVERY_S, so
# a shard whose previous work came a little late still rolls at each.
FANOUT_EVERY_S = 0.12
_encode = msgspec.msgpack.Encoder().encode
_events_decoder = msgspec.msgpack.Decoder(list[Ev])


class Parsed:
    """A decoded batch on its way to the gate (pickled as msgpack when the gate is in another process, like Work)."""

    __slots__ = ("as_of", "dead", "dead_decisions", "decisions", "events", "final", "partition", "position",
                 "refresh")

    def __init__(self, events: list[Ev], dead: list[tuple[str, bytes]], refresh: bool, as_of: float | None,
                 final: bool = False, position: str | None = None, decisions: list[Dec] | None = None,
                 dead_decisions: list[tuple[str, bytes]] | None = None, partition: int = 0):
        self.events, self.dead, self.refresh, self.as_of, self.final = events, dead, refresh, as_of, final
        self.position = position  # live: the last stream entry id in or before this batch
        self.decisions = decisions or []  # live: decision-log entries for the outcome join
        self.dead_decisions = dead_decisions or []  # decision-log entries that could not be read
        self.partition = partition  # the stream partition (pantry/partitions.py): which gate takes the batch

    def __reduce__(self):
        return _parsed_from_msgpack, (_encode(self.events), self.dead, self.refresh, self.as_of, self.final,
                                      self.position, _encode(self.decisions), self.dead_decisions, self.partition)


def _parsed_from_msgpack(events: bytes, dead: list, refresh: bool, as_of: float | None, final: bool,
                         position: str | None = None, decisions: bytes = b"\x90", dead_decisions=None,
                         partition: int = 0) -> Parsed:
    return Parsed(_events_decoder.decode(events), dead, refresh, as_of, final, position,
                  _decisions_decoder.decode(decisions), dead_decisions, partition)


_decisions_decoder = msgspec.msgpack.Decoder(list[Dec])


class GateState(msgspec.Struct, array_like=True, dict=True):
    """The gate's recovery state (msgpack, array-like: fields are only ever appended, so older snapshots decode).
    The ids accepted within lateness are `ids` (streaming/seen_ids.py), written to `seen_key`/`seen_minutes` by
    `for_snapshot`."""

    max_t: float = NO_TIME  # the greatest event time seen (none yet: before anything)
    seen: dict[str, float] = msgspec.field(default_factory=dict)  # an older snapshot's ids (-> `ids` at its load)
    counters: dict[str, int] = msgspec.field(
        default_factory=lambda: {"processed": 0, "duplicate": 0, "late": 0, "invalid": 0})
    prune_at: int = 0  # an older snapshot's; unused
    # live: outcome events (and erasure markers) and decisions held for the outcome shards until the next outcome
    # tick (GateLogic.outcome_tick_s), in arrival order; in the snapshot, as the source's position is past them
    held_events: list[Ev] = msgspec.field(default_factory=list)
    held_decisions: list[Dec] = msgspec.field(default_factory=list)
    seen_key: bytes = b""  # SeenIds.key
    seen_minutes: list[tuple[float, bytes]] = msgspec.field(default_factory=list)  # SeenIds.minutes()

    @property
    def ids(self) -> SeenIds:
        ids = self.__dict__.get("_ids")
        if ids is None:
            ids = self._ids = SeenIds(self.seen_key or None, self.seen_minutes)
            hashes = ids.hashes(list(self.seen))  # an older snapshot's
            ids.pending.update(hashes)
            ids.settle(-math.inf, zip(hashes, self.seen.values(), strict=True))
            self.seen, self.seen_minutes = {}, []
        return ids

    def encode(self, with_ids: bool = True) -> bytes:
        """The snapshot: with the ids as `seen_key` and `seen_minutes` for its length only (they are `ids`); without
        the minutes for a forked snapshot (GateSnapshots)."""
        ids = self.ids
        self.seen_key, self.seen_minutes = ids.key, ids.minutes() if with_ids else []
        try:
            return _encode(self)
        finally:
            self.seen_minutes = []

    @property
    def watermark(self) -> float:
        return self.max_t - LATENESS_S


class Skew(msgspec.Struct, frozen=True):
    """The live gate's clock-skew rule (pantry.clock.max_accepted_ts with these settings)."""

    mode: ClockMode
    wall_s: float  # Settings.event_skew_wall_s
    event_s: float  # Settings.event_skew_event_s

    def limit(self, max_t: float, wall: float) -> float:
        return max_accepted_ts(self.mode, wall, max_t if max_t > NO_TIME else None, self.wall_s, self.event_s)


def gate_apply(st: GateState, events: Iterable[Ev], skew: Skew | None = None, wall: float | None = None
               ) -> tuple[list[Ev], list[tuple[str, Ev]]]:
    """Split events into accepted ones and rejected (reason, event); duplicates are only counted. With `skew`
    (live), an event later than the skew rule allows (against the newest event time accepted so far, and the wall
    clock `wall`) is rejected (`future`) and never moves max_t. Any exception on one event rejects that event."""
    accepted: list[Ev] = []
    late: list[tuple[str, Ev]] = []
    ids = st.ids
    pending = ids.pending
    batch = events if isinstance(events, list) else list(events)
    hashes = ids.hashes(_event_ids(batch))
    sealed = ids.sealed_hits(hashes)
    added: list[tuple[int, float]] = []
    counters = st.counters
    limit = skew.limit(st.max_t, time.time() if wall is None else wall) if skew is not None else None
    forgotten = 0
    for i, e in enumerate(batch):
        try:
            if e.kind == FORGET:  # an erasure marker (not an event): in stream order, for the customer's shard only
                forgotten += 1
                accepted.append(e)
                continue
            why = admit(e)
            if why is not None:
                counters["invalid"] += 1
                late.append((f"invalid: {why}", e))
                continue
            h = hashes[i]
            if sealed[i] or h in pending:
                counters["duplicate"] += 1
                continue
            if e.t < st.max_t - LATENESS_S:
                counters["late"] += 1
                late.append((f"late: {st.max_t - e.t:.0f}s behind the newest event (lateness bound "
                             f"{LATENESS_S:.0f}s)", e))
                continue
            if limit is not None and e.t > limit:
                counters["future"] = counters.get("future", 0) + 1
                late.append((f"future: ts {e.t:.3f} is past the newest accepted time {limit:.3f} ("
                             f"{skew.mode} clock, skew {skew.event_s if skew.mode == 'event' else skew.wall_s:.0f}s)",
                             e))
                continue
            if e.t > st.max_t:
                st.max_t = e.t
                if skew is not None:
                    limit = skew.limit(st.max_t, time.time() if wall is None else wall)
            pending.add(h)
            added.append((h, e.t))
            accepted.append(e)
        except Exception as exc:  # one event's failure must not stop the others
            counters["invalid"] += 1
            late.append((failure(exc, None, "gate")[0], e))
    counters["processed"] += len(accepted) - forgotten
    if forgotten:
        counters["forgotten"] = counters.get("forgotten", 0) + forgotten
    ids.settle(st.max_t - LATENESS_S, added)
    return accepted, late


def _event_ids(batch: list[Ev]) -> list[str]:
    try:
        return [e.event_id for e in batch]
    except AttributeError:  # not an event (a bug upstream): it alone fails, in gate_apply's loop
        return [getattr(e, "event_id", "") for e in batch]


class Gated(msgspec.Struct, gc=False):
    routes: dict[str, list[Ev]]
    refresh: bool
    as_of: float | None
    final: bool
    control: Control
    rolling: bool = False  # a spread refresh is under way: every shard gets (maybe empty) work to roll with (and flush)
    outcomes: dict[str, OutWork] = msgspec.field(default_factory=dict)  # live: outcome shard -> its work
    # live: every event accepted (and erasure marker passed), and the wall time then, for the event archive
    archived: list[Ev] = msgspec.field(default_factory=list)
    accepted_at: float = 0.0


def route(gated: Gated) -> list[tuple[str, Work | OutWork]]:
    """Work for the shards that got events; for every shard on a refresh or at the end (so they emit what they
    hold). Idle shards get nothing: Bytewax snapshots only the keys that saw items in an epoch. Live: the outcome
    shards' work after it."""
    if gated.refresh or gated.final or gated.rolling:
        keys: tuple[str, ...] | list[str] = ALL_SHARDS
    else:
        keys = list(gated.routes)
    out: list[tuple[str, Work | OutWork]] = [
        (k, Work(gated.routes.get(k, []), gated.refresh, gated.as_of, gated.final)) for k in keys]
    if gated.outcomes:
        out.extend(gated.outcomes.items())
    return out


def outcome_routes(accepted: list[Ev], decisions: list[Dec], as_of: float | None, tick: bool) -> dict[str, OutWork]:
    """The outcome shards' work: outcome events, erasure markers and decisions by customer (o00..o15 =
    customer_id % 16; an outcome without a customer goes to o00, which counts it unattributed); every shard on a
    tick (so each flushes its totals and expires what waited too long)."""
    n = len(OUTCOME_SHARDS)
    events: list[list[Ev]] = [[] for _ in range(n)]
    decs: list[list[Dec]] = [[] for _ in range(n)]
    for e in accepted:
        if e.kind in OUTCOME_KINDS or e.kind == FORGET:
            events[0 if e.customer_id is None else e.customer_id % n].append(e)
    for d in decisions:
        decs[d.customer_id % n].append(d)
    return {name: OutWork(events[i], decs[i], as_of) for i, name in enumerate(OUTCOME_SHARDS)
            if tick or events[i] or decs[i]}


_gate_decoder = msgspec.msgpack.Decoder(GateState)


def _dead(reason: str, e: Ev) -> tuple[str, bytes]:
    try:
        return reason, _encode(e)
    except Exception:  # a value msgpack cannot hold (an int beyond 64 bits): keep its repr
        return reason, repr(e)[:500].encode()


class ForkedGate(msgspec.Struct, array_like=True):
    """A live gate's snapshot (after FORKED_GATE, the path of the file in which a forked child wrote its seen ids'
    minutes, and a newline): the ids added since the fork, and the rest of its state (small) as it was at the close
    (streaming/forked_snapshots.py)."""

    hashes: bytes  # uint64: the ids added since the fork, in order
    times: bytes  # float64: their event times
    state: bytes  # GateState at the close, without the minutes


FORKED_GATE = forked_snapshots.FORKED + b"gate-1\n"
_forked_gate_decoder = msgspec.msgpack.Decoder(ForkedGate)
_minutes_decoder = msgspec.msgpack.Decoder(list[tuple[float, bytes]])


def gate_state(resume: bytes | None) -> tuple[GateState, str | None]:
    """A gate's state from its snapshot, and the file of its seen ids (a forked snapshot's)."""
    if resume is None:
        return GateState(), None
    if not resume.startswith(FORKED_GATE):
        return _gate_decoder.decode(resume), None
    path, _, rest = resume[len(FORKED_GATE):].partition(b"\n")
    forked = _forked_gate_decoder.decode(rest)
    st = _gate_decoder.decode(forked.state)
    try:
        st.seen_minutes = _minutes_decoder.decode(Path(path.decode()).read_bytes())
    except FileNotFoundError as exc:
        raise forked_snapshots.missing(path.decode()) from exc
    hashes = np.frombuffer(forked.hashes, dtype=np.uint64).tolist()
    ids = st.ids
    ids.pending.update(hashes)
    ids.settle(st.watermark, zip(hashes, np.frombuffer(forked.times, dtype=np.float64).tolist(), strict=True))
    return st, path.decode()


class GateSnapshots(ForkedState):
    """A live gate's snapshots: a fork writes its seen ids (12 MB a gate after five minutes at 10,000 events/s), the
    ids record what they add after it, and the close encodes the rest of the state."""

    def __init__(self, forks: Forks | None, st: GateState, resumed_from: str | None):
        self.st = st
        super().__init__(forks, lambda: _encode(st.ids.minutes()), resumed_from)

    def forked(self, child, path) -> None:
        super().forked(child, path)
        self.st.ids.recording = Recording()

    def given_up(self) -> None:
        super().given_up()
        self.st.ids.recording = None

    def after_batch(self) -> None:
        recording = self.st.ids.recording
        if recording is not None and len(recording) > FORK_MAX_EVENTS:
            self.given_up()

    def snapshot(self) -> bytes:
        ids = self.st.ids
        added, ids.recording = ids.recording, None
        path = self.taken()
        if path is None or added is None:
            return self.st.encode()
        return FORKED_GATE + path.encode() + b"\n" + _encode(ForkedGate(added.hashes.tobytes(), added.times.tobytes(),
                                                                        self.st.encode(False)))


class GateLogic(StatefulBatchLogic[Parsed, Gated, bytes]):
    def __init__(self, resume: bytes | None, skew: Skew | None = None, outcome_tick_s: float | None = None,
                 archive: bool = False, forks: Forks | None = None):
        self.st, resumed_from = gate_state(resume)
        # live: the seen ids snapshotted by a forked child (streaming/forked_snapshots.py)
        self.snapshots = GateSnapshots(forks, self.st, resumed_from)
        self.archive = archive  # live: hand the accepted events on to the event archive (streaming/event_archive.py)
        self.skew = skew  # live: the clock-skew rule; replay (the data set, in event-time order): none
        self.rolling_until = 0.0  # monotonic time until which shards still roll a spread refresh forward
        self.last_fanout = 0.0  # monotonic time of the last batch routed to every shard
        # live: outcome shards get work (outcomes and decisions), and all of them a tick this often; None: no
        # outcome shards (a replay has no decisions)
        self.outcome_tick_s = outcome_tick_s
        self.last_outcome_tick = 0.0

    def on_batch(self, values: list[Parsed]) -> tuple[list[Gated], bool]:
        out = []
        st = self.st
        self.snapshots.before_batch()
        for parsed in values:
            accepted, late = gate_apply(st, parsed.events, self.skew)
            st.counters["invalid"] += len(parsed.dead)
            by_customer: list[list[Ev]] = [[] for _ in range(NSHARDS)]  # customer_shard / store_shard by index
            by_store: list[list[Ev]] = [[] for _ in range(NSHARDS)]
            for e in accepted:
                if e.kind not in FEATURE_KINDS and e.kind != FORGET:
                    if is_feedback(e):  # substitution feedback: its customer's shard, and its original's store shard
                        if e.customer_id is not None:
                            by_customer[e.customer_id % NSHARDS].append(e)
                        by_store[e.original_product_id % NSHARDS].append(e)
                    continue  # for the outcome join only
                if e.customer_id is not None:
                    by_customer[e.customer_id % NSHARDS].append(e)
                if e.store_id is not None:
                    by_store[e.store_id % NSHARDS].append(e)
            routes = {name: share for name, share in zip(ALL_SHARDS, by_customer + by_store, strict=True) if share}
            dead = parsed.dead + [_dead(reason, e) for reason, e in late]
            if parsed.dead_decisions:
                st.counters["decision_invalid"] = st.counters.get("decision_invalid", 0) + len(parsed.dead_decisions)
                dead += parsed.dead_decisions
            as_of = parsed.as_of if parsed.as_of is not None else st.max_t
            control = Control(dict(st.counters), st.max_t, dead, parsed.position, parsed.partition)
            now = time.monotonic()
            if parsed.refresh and not parsed.final:
                self.rolling_until = now + ROLLING_S
            rolling = now < self.rolling_until and now - self.last_fanout >= FANOUT_EVERY_S
            if rolling or parsed.refresh or parsed.final:
                self.last_fanout = now
            gated = Gated(routes, parsed.refresh, as_of, parsed.final, control, rolling)
            if self.archive and accepted:
                gated.archived, gated.accepted_at = accepted, time.time()
            if self.outcome_tick_s is not None:
                # The outcome shards get their work at each tick only: the totals go out at most every
                # kpi_flush_s anyway, and a trickle of outcomes spread over 16 shards otherwise woke most of them
                # at every batch (docs/DECISIONS.md "Live batches linger")
                st.held_events.extend(e for e in accepted if e.kind in OUTCOME_KINDS or e.kind == FORGET)
                st.held_decisions.extend(parsed.decisions)
                if now - self.last_outcome_tick >= self.outcome_tick_s:
                    self.last_outcome_tick = now
                    gated.outcomes = outcome_routes(st.held_events, st.held_decisions,
                                                    st.max_t if st.max_t > NO_TIME else None, True)
                    st.held_events, st.held_decisions = [], []
            out.append(gated)
        self.snapshots.after_batch()
        return out, StatefulBatchLogic.RETAIN

    def snapshot(self) -> bytes:
        return self.snapshots.snapshot()
