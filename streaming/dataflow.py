"""The Bytewax dataflow: events -> gate (duplicates, lateness) -> keyed feature state -> online store + log.

Items are batches (a few thousand events), not single events: the engine's per-item cost then vanishes and the
per-event work is plain Python in streaming.features. State is sharded by entity id (NSHARDS customer shards,
NSHARDS store shards), so `-w N` spreads the shards over workers; the gate is one key, so event order (and with
it every result) is the same for any worker count. Step ids and NSHARDS never change (they name recovery state).

Run it: `pantry stream replay|live` (streaming/cli.py), or `python -m bytewax.run streaming.dataflow:flow`
with PANTRY_STREAM_MODE=replay|live, PANTRY_STREAM_UNTIL=YYYY-MM-DD, PANTRY_STREAM_SPEED=N.
"""

from __future__ import annotations

import os
import time
from array import array
from datetime import UTC, datetime
from functools import partial

import bytewax.operators as op
import msgspec
from bytewax.dataflow import Dataflow
from bytewax.operators import StatefulBatchLogic

from pantry.events import InvalidEvent, decode_msgpack
from pantry.online import OnlineLayout
from pantry.settings import Settings, get_settings
from streaming import features as F
from streaming.sinks import LIVE_LOG_HANDOFF_S, LOG_EVERY_S, Control, ControlSink, Flush, OnlineSink, Row
from streaming.sources import Batch, LiveSource, ReplaySource

NSHARDS = 16
ROLL_EVERY_S = 0.1  # spread refresh: 32 shards x refresh_slice entities this often (~5k rows/s at most)
CHECKS_PER_ROLL = 1000  # candidates looked at per shard per ROLL_EVERY_S (~0.3 ms; 50k per shard per refresh)
ROLL_MAX_EVENTS = 64  # a shard with more new events than this in one batch is behind: fresh events first, no roll
ROLLING_S = 5.0  # after a live refresh, every batch reaches every shard this long (spread refresh; == live period)
_encode = msgspec.msgpack.Encoder().encode


class StreamConfig(msgspec.Struct, frozen=True):
    mode: str = "replay"  # replay | live
    until: datetime | None = None
    speed: float | None = None
    flush_s: float = 0.1
    write_log: bool = True
    refresh_slice: int = 16  # per shard, rolled forward every ROLL_EVERY_S after a live refresh (0: all at once)
    # An unpaced replay (a backfill) sends its flushes' rows to the feature log only, and the online store gets one
    # row per entity at the end: its intermediate values would be overwritten within seconds, never read, and
    # writing them took more than a third of the replay's time (Redis shares the flow's cores).
    defer_online: bool = False


class Parsed:
    """A decoded batch on its way to the gate (pickled as msgpack when the gate is in another process, as Work)."""

    __slots__ = ("as_of", "dead", "events", "final", "refresh")

    def __init__(self, events: list[F.Ev], dead: list[tuple[str, bytes]], refresh: bool, as_of: float | None,
                 final: bool = False):
        self.events, self.dead, self.refresh, self.as_of, self.final = events, dead, refresh, as_of, final

    def __reduce__(self):
        return _parsed_from_msgpack, (_encode(self.events), self.dead, self.refresh, self.as_of, self.final)


class Gated(msgspec.Struct, gc=False):
    routes: dict[str, list[F.Ev]]
    refresh: bool
    as_of: float | None
    final: bool
    control: Control
    rolling: bool = False  # a spread refresh is under way: every shard gets (maybe empty) work to roll with


class Work:
    """A shard's share of a batch. Between worker threads it is passed as is; to another process (`--processes`)
    Bytewax pickles it, and then the events travel as one msgpack array (~0.3 us per event each way, where
    pickling the structs one by one costs ~5 us)."""

    __slots__ = ("as_of", "events", "final", "refresh")

    def __init__(self, events: list[F.Ev], refresh: bool, as_of: float | None, final: bool):
        self.events, self.refresh, self.as_of, self.final = events, refresh, as_of, final

    def __reduce__(self):
        return _work_from_msgpack, (_encode(self.events), self.refresh, self.as_of, self.final)


_events_decoder = msgspec.msgpack.Decoder(list[F.Ev])


def _parsed_from_msgpack(events: bytes, dead: list, refresh: bool, as_of: float | None, final: bool) -> Parsed:
    return Parsed(_events_decoder.decode(events), dead, refresh, as_of, final)


def _work_from_msgpack(events: bytes, refresh: bool, as_of: float | None, final: bool) -> Work:
    return Work(_events_decoder.decode(events), refresh, as_of, final)


# ---- small pure functions: the steps -----------------------------------------------------------------------------


def parse_batch(batch: Batch) -> Parsed:
    """Decode stream entries; schema failures and unknown types become (reason, payload) dead letters."""
    if not batch.raws:
        return Parsed(batch.events, [], batch.refresh, batch.as_of, batch.final)
    events = list(batch.events)
    dead: list[tuple[str, bytes]] = []
    for _entry_id, payload in batch.raws:
        if payload is None:
            dead.append(("missing field 'e'", b""))
            continue
        try:
            events.append(F.from_event(decode_msgpack(payload)))
        except InvalidEvent as exc:
            dead.append((f"invalid: {exc}", payload))
    return Parsed(events, dead, batch.refresh, batch.as_of, batch.final)


def customer_shard(customer_id: int) -> str:
    return f"c{customer_id % NSHARDS:02d}"


def store_shard(store_id: int) -> str:
    return f"s{store_id % NSHARDS:02d}"


ALL_SHARDS = tuple(f"{kind}{i:02d}" for kind in "cs" for i in range(NSHARDS))


def route(gated: Gated) -> list[tuple[str, Work]]:
    """Work for the shards that got events; for every shard on a refresh or at the end (so they emit what they
    hold). Idle shards get nothing: Bytewax snapshots only the keys that saw items in an epoch."""
    if gated.refresh or gated.final or gated.rolling:
        keys: tuple[str, ...] | list[str] = ALL_SHARDS
    else:
        keys = list(gated.routes)
    return [(k, Work(gated.routes.get(k, []), gated.refresh, gated.as_of, gated.final)) for k in keys]


class GateLogic(StatefulBatchLogic[Parsed, Gated, bytes]):
    """The one place that sees every event in order: duplicates, lateness, counters, routing to shards."""

    def __init__(self, resume: bytes | None):
        self.st: F.GateState = _gate_decoder.decode(resume) if resume else F.GateState()
        self.rolling_until = 0.0  # monotonic time until which shards still roll a spread refresh forward

    def on_batch(self, values: list[Parsed]) -> tuple[list[Gated], bool]:
        out = []
        st = self.st
        for parsed in values:
            accepted, late = F.gate_apply(st, parsed.events)
            st.counters["invalid"] += len(parsed.dead)
            by_customer: list[list[F.Ev]] = [[] for _ in range(NSHARDS)]  # customer_shard / store_shard by index
            by_store: list[list[F.Ev]] = [[] for _ in range(NSHARDS)]
            for e in accepted:
                if e.customer_id is not None:
                    by_customer[e.customer_id % NSHARDS].append(e)
                if e.store_id is not None:
                    by_store[e.store_id % NSHARDS].append(e)
            routes = {name: share for name, share in zip(ALL_SHARDS, by_customer + by_store, strict=True) if share}
            dead = parsed.dead + [(reason, _encode(e)) for reason, e in late]
            as_of = parsed.as_of if parsed.as_of is not None else st.max_t
            control = Control(dict(st.counters), st.max_t, dead)
            now = time.monotonic()
            if parsed.refresh and not parsed.final:
                self.rolling_until = now + ROLLING_S
            out.append(Gated(routes, parsed.refresh, as_of, parsed.final, control, now < self.rolling_until))
        return out, StatefulBatchLogic.RETAIN

    def snapshot(self) -> bytes:
        return _encode(self.st)


class CustomerShard(msgspec.Struct, array_like=True):
    states: dict[int, F.CustomerState] = msgspec.field(default_factory=dict)
    dirty: dict[int, int] = msgspec.field(default_factory=dict)  # customer -> views changed, not yet emitted
    online_behind: bool = False  # rows were logged but kept from the online store (defer_online)


class StoreShard(msgspec.Struct, array_like=True):
    stores: dict[int, F.StoreState] = msgspec.field(default_factory=dict)
    pairs: dict[int, F.StoreProductState] = msgspec.field(default_factory=dict)  # key: pair_key(store, product)
    dirty_stores: set[int] = msgspec.field(default_factory=set)
    dirty_pairs: set[int] = msgspec.field(default_factory=set)
    online_behind: bool = False  # rows were logged but kept from the online store (defer_online)


_gate_decoder = msgspec.msgpack.Decoder(F.GateState)
_customer_decoder = msgspec.msgpack.Decoder(CustomerShard)
_store_decoder = msgspec.msgpack.Decoder(StoreShard)


def pair_key(store_id: int, product_id: int) -> int:
    return (store_id << 32) | product_id


def pair_of(key: int) -> tuple[int, int]:
    return key >> 32, key & 0xFFFFFFFF


class _Coalescing(StatefulBatchLogic[Work, Flush, bytes]):
    """Changed entities are remembered (in the snapshot too) and emitted as rows at most every `flush_s`, at a
    refresh, and at the end of a replay: one row per entity per flush, however many events touched it. With
    `defer_online` (an unpaced replay) a flush's rows go to the feature log only; the first flush that writes
    online again (the end of the replay, or the first flush of a later run after an interrupted replay: the
    flag is in the snapshot) sends a row of every entity of the shard to the online store.

    A live refresh is spread: it lists every entity as a candidate, and every ROLL_EVERY_S a batch checks at most
    CHECKS_PER_ROLL candidates (O(1) each from the cached next-change time) and rolls at most `refresh_slice` due
    ones forward, so rolling windows never stall fresh events (after a long gap, e.g. live after a replay, the
    backlog drains over several refreshes); a shard that got more than ROLL_MAX_EVENTS events in a batch is
    behind the stream and skips rolling until it has caught up. The candidate list is not snapshotted:
    rolled-forward entities are in the state, the rest stay due and the next refresh after a restart lists them
    again. A final refresh (end of a replay) rolls everything at once."""

    shard: CustomerShard | StoreShard

    def __init__(self, flush_s: float, refresh_slice: int, defer_online: bool) -> None:
        self.flush_s = flush_s
        self.refresh_slice = refresh_slice
        self.defer_online = defer_online
        self.last_emit = self.last_roll = time.monotonic()
        # candidates to roll forward to due_as_of (newest refresh), popped from the end: an int64 array, not a list,
        # so the young-generation GC does not visit every entity id in it (~20k per store shard)
        self.due = array("q")
        self.due_as_of = 0.0

    def on_batch(self, values: list[Work]) -> tuple[list[Flush], bool]:
        force = final = False
        n_events = 0
        for work in values:
            n_events += len(work.events)
            self.apply(work.events)
            if work.refresh and work.as_of is not None:
                if work.final or self.refresh_slice <= 0:
                    self.due = array("q")
                    self.roll_all(work.as_of)
                    force = True
                else:
                    self.due, self.due_as_of = self.candidates(), work.as_of
            final = final or work.final
        force = force or final
        now = time.monotonic()
        if self.due and now - self.last_roll >= ROLL_EVERY_S and n_events <= ROLL_MAX_EVENTS:
            self.last_roll = now
            self.roll(self.refresh_slice, CHECKS_PER_ROLL)
        if force or now - self.last_emit >= self.flush_s:
            self.last_emit = now
            return [self.flush(final)], StatefulBatchLogic.RETAIN
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
        rows = self.rows()
        if not shard.online_behind:
            return Flush(rows, rows)
        shard.online_behind = False
        return Flush(rows, self.every_row())

    def roll_all(self, as_of: float) -> None:
        """Roll every due entity forward to as_of at once (the final refresh of a replay)."""
        self.due, self.due_as_of = self.candidates(), as_of
        self.roll(len(self.due), len(self.due))
        self.due = array("q")

    def roll(self, n: int, max_checks: int) -> None:
        """Roll up to n due entities forward to due_as_of, looking at no more than max_checks candidates: the
        refresh lists every entity (C speed) and the check whether one is due (O(1) from the cached next-change
        time) is spread over the batches too; a scan of all entities at once stalled the live flow for 100+ ms
        every refresh, which was the p99 of freshness at 1,000 events/s."""
        due, as_of, roll_one = self.due, self.due_as_of, self.roll_one
        rolled = checked = 0
        while due and rolled < n and checked < max_checks:
            checked += 1
            if roll_one(due.pop(), as_of):
                rolled += 1


class CustomerShardLogic(_Coalescing):
    shard: CustomerShard

    def __init__(self, resume: bytes | None, flush_s: float, refresh_slice: int = 0, defer_online: bool = False):
        super().__init__(flush_s, refresh_slice, defer_online)
        self.shard = _customer_decoder.decode(resume) if resume else CustomerShard()
        # customer -> top_scores of its repertoire as of its last row, and the products bought since: the next
        # row merges them (F.top_merge) instead of ranking every product again; not in the snapshot (rebuilt)
        self.tops: dict[int, list[tuple[int, float]]] = {}
        self.bought: dict[int, set[int]] = {}

    def apply(self, events: list[F.Ev]) -> None:
        states, dirty, tops, bought = self.shard.states, self.shard.dirty, self.tops, self.bought
        for e in events:
            st = states.get(e.customer_id)
            if st is None:
                st = states[e.customer_id] = F.CustomerState()
            flags = F.customer_apply(st, e)
            if flags:
                dirty[e.customer_id] = dirty.get(e.customer_id, 0) | flags
                if e.kind == "purchase" and e.product_id is not None and e.customer_id in tops:
                    since = bought.get(e.customer_id)
                    if since is None:
                        since = bought[e.customer_id] = set()
                    since.add(e.product_id)

    def candidates(self) -> array:
        return array("q", self.shard.states)

    def roll_one(self, cid: int, as_of: float) -> bool:
        st = self.shard.states[cid]
        if as_of > st.as_of and F.cached_next_change(st, F.customer_next_change) <= as_of:
            st.as_of, st.nc = as_of, None
            dirty = self.shard.dirty
            dirty[cid] = dirty.get(cid, 0) | F.ACTIVITY | F.REPERTOIRE  # both are evaluated at as_of
            return True
        return False

    def rows(self) -> list[Row]:
        states = self.shard.states
        rows: list[Row] = []
        for cid, flags in self.shard.dirty.items():
            self._append_rows(rows, cid, states[cid], flags)
        self.shard.dirty = {}
        return rows

    def every_row(self) -> list[Row]:
        """Rows of every view of every customer (a session row only if it had a session)."""
        rows: list[Row] = []
        for cid, st in self.shard.states.items():
            flags = F.ACTIVITY | F.REPERTOIRE | (F.SESSION if st.s_start is not None else 0)
            self._append_rows(rows, cid, st, flags)
        return rows

    def _append_rows(self, rows: list[Row], cid: int, st: F.CustomerState, flags: int) -> None:
        top = None
        if flags & F.REPERTOIRE:
            tops = self.tops
            top = tops.get(cid)
            since = self.bought.pop(cid, None)
            if top is None:
                top = tops[cid] = F.top_scores(st.rep, F.REPERTOIRE_TOP)
            elif since:
                top = tops[cid] = F.top_merge(top, since, st.rep, F.REPERTOIRE_TOP)
        for view, vals, t in F.customer_rows(st, flags, top):
            rows.append((view, (cid,), vals, t))

    def snapshot(self) -> bytes:
        return _encode(self.shard)


class StoreShardLogic(_Coalescing):
    shard: StoreShard

    def __init__(self, resume: bytes | None, flush_s: float, refresh_slice: int = 0, defer_online: bool = False):
        super().__init__(flush_s, refresh_slice, defer_online)
        self.shard = _store_decoder.decode(resume) if resume else StoreShard()

    def apply(self, events: list[F.Ev]) -> None:
        sh = self.shard
        F.store_events_apply(sh.stores, sh.pairs, sh.dirty_stores, sh.dirty_pairs, events)

    def candidates(self) -> array:
        # store ids are negated (-1 - id) so that one array holds both kinds; pair keys are >= 0
        due = array("q", self.shard.pairs)
        due.extend(-1 - sid for sid in self.shard.stores)
        return due

    def roll_one(self, key: int, as_of: float) -> bool:
        sh = self.shard
        if key < 0:
            sid = -1 - key
            st = sh.stores[sid]
            if as_of > st.as_of and F.cached_next_change(st, F.store_next_change) <= as_of:
                st.as_of, st.nc = as_of, None
                sh.dirty_stores.add(sid)
                return True
        else:
            sp = sh.pairs[key]
            if as_of > sp.as_of and F.cached_next_change(sp, F.store_product_next_change) <= as_of:
                sp.as_of, sp.nc = as_of, None
                sh.dirty_pairs.add(key)
                return True
        return False

    def roll_all(self, as_of: float) -> None:
        """roll_one of every store and pair, the pairs (~265k on Jan-Mar, ~630k on the full year: nearly all of
        them are due at the end of a replay) in one loop without a candidate list or a call per pair."""
        sh = self.shard
        for sid in list(sh.stores):
            self.roll_one(-1 - sid, as_of)
        dirty_pairs, next_change = sh.dirty_pairs, F.store_product_next_change
        for key, sp in sh.pairs.items():
            if as_of > sp.as_of:
                nc = sp.nc
                if nc is None:
                    nc = sp.nc = next_change(sp)
                if nc <= as_of:
                    sp.as_of, sp.nc = as_of, None
                    dirty_pairs.add(key)

    def rows(self) -> list[Row]:
        sh = self.shard
        rows: list[Row] = []
        for sid in sh.dirty_stores:
            st = sh.stores[sid]
            rows.append(("store_traffic", (sid,), F.traffic_row(st, st.as_of), st.as_of))
        pairs, values = sh.pairs, F.store_product_values
        append = rows.append
        for key in sh.dirty_pairs:  # the most frequent row: values as a tuple (see sinks.RowEncoder)
            sp = pairs[key]
            append(("store_product", (key >> 32, key & 0xFFFFFFFF), values(sp, sp.as_of), sp.as_of))
        sh.dirty_stores, sh.dirty_pairs = set(), set()
        return rows

    def every_row(self) -> list[Row]:
        """Rows of every store and every store x product pair."""
        sh = self.shard
        rows: list[Row] = [("store_traffic", (sid,), F.traffic_row(st, st.as_of), st.as_of)
                           for sid, st in sh.stores.items()]
        values = F.store_product_values
        rows += [("store_product", (key >> 32, key & 0xFFFFFFFF), values(sp, sp.as_of), sp.as_of)
                 for key, sp in sh.pairs.items()]
        return rows

    def snapshot(self) -> bytes:
        return _encode(self.shard)


def is_customer_shard(item: tuple[str, Work]) -> bool:
    return item[0][0] == "c"


def control_of(item: tuple[str, Gated]) -> Control:
    return item[1].control


# ---- the flow ------------------------------------------------------------------------------------------------


def build_flow(settings: Settings, config: StreamConfig, stop_flag=None,
               layout: OnlineLayout | None = None) -> Dataflow:
    flow = Dataflow("pantry_stream")
    if config.mode == "live":
        source = LiveSource(settings, stop_flag)
    else:
        source = ReplaySource(settings, config.until, config.speed)
    batches = op.input("events", flow, source)
    # Batch(events | raw stream entries, refresh?)
    parsed = op.map("parse", batches, parse_batch)
    # Parsed(events: [Ev], dead: [(reason, payload)], refresh, as_of)
    keyed = op.key_on("gate_key", parsed, lambda _: "gate")
    # ("gate", Parsed)
    gated = op.stateful_batch("gate", keyed, GateLogic)
    # ("gate", Gated(routes {shard: [Ev]}, refresh, as_of, control))
    work = op.flat_map("route", gated, lambda kv: route(kv[1]))
    # (shard key "c03" | "s11", Work(events, refresh, as_of))
    split = op.branch("split", work, is_customer_shard)
    # trues: customer shards, falses: store shards
    shard_args = {"flush_s": config.flush_s, "refresh_slice": config.refresh_slice,
                  "defer_online": config.defer_online}
    customer_rows = op.stateful_batch("customers", split.trues, partial(CustomerShardLogic, **shard_args))
    # (shard, Flush(log: [Row], online: [Row])) rows of customer_session / customer_activity / customer_repertoire
    store_rows = op.stateful_batch("stores", split.falses, partial(StoreShardLogic, **shard_args))
    # (shard, Flush) rows of store_traffic / store_product
    rows = op.map("rows", op.merge("merge", customer_rows, store_rows), lambda kv: kv[1])
    # Flush; a Row is (view, join values, features, event time)
    log_handoff_s = LIVE_LOG_HANDOFF_S if config.mode == "live" else LOG_EVERY_S
    op.output("online", rows, OnlineSink(settings, config.write_log, layout, log_handoff_s))
    # -> HSET in Feast's layout + parquet feature log
    controls = op.map("control", gated, control_of)
    # Control(counters, max event time, dead letters)
    op.output("control_out", controls, ControlSink(settings))
    # -> watermark, counters, dead-letter stream
    return flow


def config_from_env(env: dict[str, str] | None = None) -> StreamConfig:
    env = dict(os.environ if env is None else env)
    until = env.get("PANTRY_STREAM_UNTIL")
    speed = env.get("PANTRY_STREAM_SPEED")
    return StreamConfig(
        mode=env.get("PANTRY_STREAM_MODE", "replay"),
        until=datetime.fromisoformat(until).replace(tzinfo=UTC) if until else None,
        speed=float(speed) if speed else None,
    )


def __getattr__(name: str) -> Dataflow:
    # `python -m bytewax.run streaming.dataflow:flow` reads `flow`; build it only when asked for.
    if name == "flow":
        return build_flow(get_settings(), config_from_env())
    raise AttributeError(name)
