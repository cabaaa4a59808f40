"""The keyed feature state: NSHARDS customer shards and NSHARDS store shards (Bytewax spreads them over workers).

Each shard folds its share of every batch into its entities' states (streaming.features) and emits the rows of the
entities that changed, at most every `flush_s`. NSHARDS never changes: it names the recovery state.
"""

from __future__ import annotations

import logging
import time
from array import array

import msgspec
from bytewax.operators import StatefulBatchLogic

from streaming.features import customer as C
from streaming.features import store as S
from streaming.features import store_product as SP
from streaming.features import substitution as F
from streaming.features import top as T
from streaming.features.event import FORGET, Ev, cached_next_change
from streaming.features.store_product import PAIR_MASK, PAIR_SHIFT, pair_key
from streaming.refresh import Refresh
from streaming.sinks import Dead, Flush, Row, failure

NSHARDS = 16
ALL_SHARDS = tuple(f"{kind}{i:02d}" for kind in "cs" for i in range(NSHARDS))  # c00..c15 customers, s00..s15 stores
ROLL_EVERY_S = 0.1  # spread refresh: 32 shards x refresh_slice entities this often (~5k rows/s at most)
CHECKS_PER_ROLL = 1000  # candidates looked at per shard per ROLL_EVERY_S (~0.3 ms; 50k per shard per refresh)
ROLL_MAX_EVENTS = 64  # a shard with more new events than this in one batch is behind: fresh events first, no roll
_encode = msgspec.msgpack.Encoder().encode
log = logging.getLogger("pantry.streaming")
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


class CustomerShard(msgspec.Struct, array_like=True):
    states: dict[int, C.CustomerState] = msgspec.field(default_factory=dict)
    dirty: dict[int, int] = msgspec.field(default_factory=dict)  # customer -> views changed, not yet emitted
    online_behind: bool = False  # rows were logged but kept from the online store (defer_online)


class StoreShard(msgspec.Struct, array_like=True):
    stores: dict[int, S.StoreState] = msgspec.field(default_factory=dict)
    pairs: dict[int, SP.StoreProductState] = msgspec.field(default_factory=dict)  # key: pair_key(store, product)
    dirty_stores: set[int] = msgspec.field(default_factory=set)
    dirty_pairs: set[int] = msgspec.field(default_factory=set)
    online_behind: bool = False  # rows were logged but kept from the online store (defer_online)
    # the pair keys' layout: store << pair_shift | product. A snapshot without the field is from before the
    # 44-bit layout (store << 32): decoded as 32 and re-keyed at once (migrate_pairs)
    pair_shift: int = 32
    # substitution feedback by original product (product_substitution_feedback, streaming/features/substitution.py):
    # original -> substitute -> [accepted, rejected, newest verdict time]. Store-independent; it lives in the store
    # shards (shard = original % NSHARDS, streaming.gate) as the catalogue side of the flow. Appended: older
    # snapshots decode with none
    subs: dict[int, dict[int, list]] = msgspec.field(default_factory=dict)
    dirty_subs: set[int] = msgspec.field(default_factory=set)


_customer_decoder = msgspec.msgpack.Decoder(CustomerShard)
_store_decoder = msgspec.msgpack.Decoder(StoreShard)


def migrate_pairs(shard: StoreShard) -> StoreShard:
    """Re-key a snapshot's store x product pairs to the current layout (PAIR_SHIFT). A pair that the current
    bounds cannot hold (a store id >= 2^19 that the old layout let in) is dropped, and logged."""
    if shard.pair_shift == PAIR_SHIFT:
        return shard
    old, mask = shard.pair_shift, (1 << shard.pair_shift) - 1
    if old != 32:
        raise ValueError(f"store shard snapshot with pair keys of an unknown layout (shift {old})")
    pairs: dict[int, SP.StoreProductState] = {}
    dropped = 0
    for key, sp in shard.pairs.items():
        sid, pid = key >> old, key & mask
        if sid >> (63 - PAIR_SHIFT):
            dropped += 1
            continue
        pairs[pair_key(sid, pid)] = sp
    dirty = {pair_key(k >> old, k & mask) for k in shard.dirty_pairs if not (k >> old) >> (63 - PAIR_SHIFT)}
    if dropped:
        log.warning("store shard snapshot: %d store x product pairs with store ids beyond the bounds dropped", dropped)
    shard.pairs, shard.dirty_pairs, shard.pair_shift = pairs, dirty, PAIR_SHIFT
    return shard


class _Coalescing(Refresh, StatefulBatchLogic[Work, Flush, bytes]):
    """Changed entities are remembered (in the snapshot too) and emitted as rows at most every `flush_s`, at a
    refresh, and at the end of a replay: one row per entity per flush, however many events touched it. With
    `defer_online` (an unpaced replay) a flush's rows go to the feature log only; the first flush that writes
    online again (the end of the replay, or the first flush of a later run after an interrupted replay: the
    flag is in the snapshot) sends a row of every entity of the shard to the online store.

    Live refreshes: streaming.refresh.
    """

    shard: CustomerShard | StoreShard

    def __init__(self, flush_s: float, refresh_slice: int, defer_online: bool) -> None:
        self.flush_s = flush_s
        self.refresh_slice = refresh_slice
        self.defer_online = defer_online
        self.last_emit = self.last_roll = time.monotonic()
        Refresh.__init__(self, refresh_slice)
        self.dead: list[Dead] = []  # events whose update raised (and rows that could not be built), not yet emitted
        self.forgot = False  # an erased customer's state was dropped since the last flush

    def on_batch(self, values: list[Work]) -> tuple[list[Flush], bool]:
        force = final = False
        n_events = 0
        for work in values:
            n_events += len(work.events)
            try:
                self.apply(work.events)
            except Exception as exc:  # apply isolates each event; this is the last line
                self.dead.append(failure(exc, None, "batch"))
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

class CustomerShardLogic(_Coalescing):
    shard: CustomerShard

    def __init__(self, resume: bytes | None, flush_s: float, refresh_slice: int = 0, defer_online: bool = False):
        super().__init__(flush_s, refresh_slice, defer_online)
        self.shard = _customer_decoder.decode(resume) if resume else CustomerShard()
        # customer -> top_scores of its repertoire as of its last row, and the products bought since: the next
        # row merges them (top_merge) instead of ranking every product again; not in the snapshot (rebuilt)
        self.tops: dict[int, T.Top] = {}
        self.bought: dict[int, set[int]] = {}

    def apply(self, events: list[Ev]) -> None:
        states, dirty, tops, bought = self.shard.states, self.shard.dirty, self.tops, self.bought
        for e in events:
            if e.kind == FORGET:  # erased (pantry.erasure): nothing of theirs is kept or emitted again
                for held in (states, dirty, tops, bought):
                    held.pop(e.customer_id, None)
                self.forgot = True
                continue
            created = False
            try:
                st = states.get(e.customer_id)
                if st is None:
                    st = states[e.customer_id] = C.CustomerState(ix=True, recent_sorted=True)  # empty: indexed already
                    created = True
                flags = C.customer_apply(st, e)
            except Exception as exc:  # one event's failure must not stop the others
                self.dead.append(failure(exc, e, "customer"))
                if created:
                    del states[e.customer_id]
                continue
            if flags:
                dirty[e.customer_id] = dirty.get(e.customer_id, 0) | flags
                if e.kind == "purchase" and e.product_id is not None and e.customer_id in tops:
                    since = bought.get(e.customer_id)
                    if since is None:
                        since = bought[e.customer_id] = set()
                    since.add(e.product_id)

    def candidates(self) -> array:
        return array("q", self.shard.states)

    def entities(self) -> int:
        return len(self.shard.states)

    def changed(self) -> list[int]:
        return list(self.shard.dirty)

    def roll_one(self, cid: int, as_of: float) -> bool:
        st = self.shard.states.get(cid)
        if st is None:  # forgotten since the refresh listed it
            return False
        nc = cached_next_change(st, C.customer_next_change)
        if as_of > st.as_of and nc <= as_of:
            st.as_of, st.nc = as_of, None
            dirty = self.shard.dirty
            dirty[cid] = dirty.get(cid, 0) | C.ACTIVITY | C.REPERTOIRE  # both are evaluated at as_of
            return True
        self.file_timer(cid, nc)
        return False

    def rows(self) -> list[Row]:
        states = self.shard.states
        rows: list[Row] = []
        for cid, flags in self.shard.dirty.items():
            try:
                self._append_rows(rows, cid, states[cid], flags)
            except Exception as exc:  # one entity's row must not stop the others
                self.dead.append(failure(exc, None, f"row of customer {cid}"))
        if self.timed:
            self.touched.update(self.shard.dirty)
        self.shard.dirty = {}
        return rows

    def catch_up(self) -> Flush:
        """The changed customers' rows for the log; every view of every customer online (a session row only if it
        had a session): a changed customer's dirty views are only some of its views."""
        logged = self.rows()
        rows: list[Row] = []
        for cid, st in self.shard.states.items():
            # as_of 0: a customer known only by substitution feedback has no shopping rows
            flags = (C.ACTIVITY | C.REPERTOIRE if st.as_of > 0 else 0) | (C.SESSION if st.s_start is not None else 0) \
                | (C.FEEDBACK if st.feedback else 0)
            try:
                self._append_rows(rows, cid, st, flags)
            except Exception as exc:
                self.dead.append(failure(exc, None, f"row of customer {cid}"))
        return Flush(logged, rows)

    def _append_rows(self, rows: list[Row], cid: int, st: C.CustomerState, flags: int) -> None:
        top = None
        if flags & C.REPERTOIRE:
            tops = self.tops
            top = tops.get(cid)
            since = self.bought.pop(cid, None)
            if top is None:
                top = tops[cid] = T.top_scores(st.rep, C.REPERTOIRE_TOP)
            elif since:
                T.top_merge(top, since, st.rep, C.REPERTOIRE_TOP)
        for view, vals, t in C.customer_rows(st, flags, top):
            rows.append((view, (cid,), vals, t))

    def snapshot(self) -> bytes:
        return _encode(self.shard)


class StoreShardLogic(_Coalescing):
    shard: StoreShard

    def __init__(self, resume: bytes | None, flush_s: float, refresh_slice: int = 0, defer_online: bool = False):
        super().__init__(flush_s, refresh_slice, defer_online)
        self.shard = migrate_pairs(_store_decoder.decode(resume)) if resume else StoreShard(pair_shift=PAIR_SHIFT)

    def apply(self, events: list[Ev]) -> None:
        sh = self.shard
        feedback = [e for e in events if e.kind == F.FEEDBACK]
        if feedback:
            events = [e for e in events if e.kind != F.FEEDBACK]
            self.apply_feedback(feedback)
        for e, exc in S.store_events_apply(sh.stores, sh.pairs, sh.dirty_stores, sh.dirty_pairs, events):
            self.dead.append(failure(exc, e, "store"))

    def apply_feedback(self, events: list[Ev]) -> None:
        subs, dirty = self.shard.subs, self.shard.dirty_subs
        for e in events:
            created = False
            try:
                held = subs.get(e.original_product_id)
                if held is None:
                    held = subs[e.original_product_id] = {}
                    created = True
                F.product_feedback_apply(held, e)
                dirty.add(e.original_product_id)
            except Exception as exc:  # one event's failure must not stop the others
                self.dead.append(failure(exc, e, "substitution feedback"))
                if created:
                    del subs[e.original_product_id]

    def candidates(self) -> array:
        # store ids are negated (-1 - id) so that one array holds both kinds; pair keys are >= 0
        due = array("q", self.shard.pairs)
        due.extend(-1 - sid for sid in self.shard.stores)
        return due

    def entities(self) -> int:
        return len(self.shard.pairs) + len(self.shard.stores)

    def changed(self) -> list[int]:
        sh = self.shard
        return [*sh.dirty_pairs, *(-1 - sid for sid in sh.dirty_stores)]

    def roll_one(self, key: int, as_of: float) -> bool:
        sh = self.shard
        if key < 0:
            sid = -1 - key
            st = sh.stores.get(sid)
            if st is None:
                return False
            nc = cached_next_change(st, S.store_next_change)
            if as_of > st.as_of and nc <= as_of:
                st.as_of, st.nc = as_of, None
                sh.dirty_stores.add(sid)
                return True
        else:
            sp = sh.pairs.get(key)
            if sp is None:
                return False
            nc = cached_next_change(sp, SP.store_product_next_change)
            if as_of > sp.as_of and nc <= as_of:
                sp.as_of, sp.nc = as_of, None
                sh.dirty_pairs.add(key)
                return True
        self.file_timer(key, nc)
        return False

    def roll_all(self, as_of: float) -> None:
        """roll_one of every store and pair, the pairs (~265k on Jan-Mar, ~630k on the full year: nearly all of
        them are due at the end of a replay) in one loop without a candidate list or a call per pair."""
        sh = self.shard
        for sid in list(sh.stores):
            self.roll_one(-1 - sid, as_of)
        dirty_pairs, next_change = sh.dirty_pairs, SP.store_product_next_change
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
            try:
                rows.append(("store_traffic", (sid,), S.traffic_row(st, st.as_of), st.as_of))
            except Exception as exc:  # one entity's row must not stop the others
                self.dead.append(failure(exc, None, f"row of store {sid}"))
        pairs, values = sh.pairs, SP.store_product_values
        append = rows.append
        for key in sh.dirty_pairs:  # the most frequent row: values as a tuple (sinks.TUPLE_VIEWS)
            sp = pairs[key]
            try:
                append(("store_product", (key >> PAIR_SHIFT, key & PAIR_MASK), values(sp, sp.as_of), sp.as_of))
            except Exception as exc:
                self.dead.append(failure(exc, None, f"row of store x product {key >> PAIR_SHIFT}, {key & PAIR_MASK}"))
        self._feedback_rows(rows, sh.dirty_subs)
        if self.timed:
            self.touched.update(sh.dirty_pairs)
            self.touched.update([-1 - sid for sid in sh.dirty_stores])
        sh.dirty_stores, sh.dirty_pairs, sh.dirty_subs = set(), set(), set()
        return rows

    def _feedback_rows(self, rows: list[Row], originals) -> None:
        subs = self.shard.subs
        for orig in originals:
            held = subs.get(orig)
            if not held:
                continue
            try:
                values, t = F.product_feedback_row(held)
                rows.append(("product_substitution_feedback", (orig,), values, t))
            except Exception as exc:
                self.dead.append(failure(exc, None, f"row of substitutes for {orig}"))

    def catch_up(self) -> Flush:
        """The changed stores' and pairs' rows for the log; those and a row of every other store and pair online
        (each a view of its own: a changed entity's row is all of its row)."""
        sh = self.shard
        dirty_stores, dirty_pairs = sh.dirty_stores, sh.dirty_pairs  # rows() replaces them with empty sets
        dirty_subs = sh.dirty_subs
        logged = self.rows()
        rows = list(logged)
        for sid, st in sh.stores.items():
            if sid not in dirty_stores:
                try:
                    rows.append(("store_traffic", (sid,), S.traffic_row(st, st.as_of), st.as_of))
                except Exception as exc:  # one entity's row must not stop the others
                    self.dead.append(failure(exc, None, f"row of store {sid}"))
        values = SP.store_product_values
        for key, sp in sh.pairs.items():
            if key not in dirty_pairs:
                try:
                    rows.append(("store_product", (key >> PAIR_SHIFT, key & PAIR_MASK), values(sp, sp.as_of),
                                 sp.as_of))
                except Exception as exc:
                    self.dead.append(failure(exc, None, f"row of store x product {key}"))
        self._feedback_rows(rows, [orig for orig in sh.subs if orig not in dirty_subs])
        return Flush(logged, rows)

    def snapshot(self) -> bytes:
        return _encode(self.shard)


def is_customer_shard(item: tuple[str, Work]) -> bool:
    return item[0][0] == "c"
