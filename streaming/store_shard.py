"""The store shards (s00..s15, store_id % NSHARDS): store_traffic (streaming/features/store.py) and store_product
(streaming/features/store_product.py) of their stores, and product_substitution_feedback of the originals
(original_product_id % NSHARDS, streaming/features/substitution.py)."""

from __future__ import annotations

import logging
from array import array

import msgspec

from streaming import forked_snapshots
from streaming.features import store as S
from streaming.features import store_product as SP
from streaming.features import substitution as F
from streaming.features.event import Ev, cached_next_change
from streaming.features.small_pairs import SmallPairs, decode_hook, encode_hook
from streaming.features.store_product import PAIR_MASK, PAIR_SHIFT, pair_key
from streaming.forked_snapshots import Forks
from streaming.shards import Coalescing
from streaming.sinks import Flush, Row, failure

_encode = msgspec.msgpack.Encoder(enc_hook=encode_hook).encode

log = logging.getLogger("pantry.streaming")


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
    # pairs that sold once, as (time, units, as_of), in a snapshot from before `small` (moved there at resume)
    singles: dict[int, tuple[float, int, float]] = msgspec.field(default_factory=dict)
    # the small pairs (streaming/features/small_pairs.py): a pair is in `pairs` or here, not both. Appended: older
    # snapshots decode with none
    small: SmallPairs = msgspec.field(default_factory=SmallPairs)

    def pair(self, key: int) -> SP.StoreProductState | None:
        """The pair's state, whichever way it is held (a small pair as the state it stands for)."""
        sp = self.pairs.get(key)
        if sp is None and key in self.small:
            return self.small.state(key)
        return sp


_store_decoder = msgspec.msgpack.Decoder(StoreShard, dec_hook=decode_hook)


def migrate_pairs(shard: StoreShard) -> StoreShard:
    """A snapshot's store x product pairs in the current layout: their sales in columns (SP.migrate_pair), the
    pairs that sold once into the small pairs, and the keys re-keyed to PAIR_SHIFT. A pair that the current bounds
    cannot hold (a store id >= 2^19 that the old layout let in) is dropped, and logged."""
    for sp in shard.pairs.values():
        SP.migrate_pair(sp)
    for key, (t, q, as_of) in shard.singles.items():
        shard.small.put(key, SP.StoreProductState(as_of=as_of, last_sold_at=t, ts=SP.Times((t,)), qs=SP.Counts((q,))))
    shard.singles = {}
    if shard.pair_shift == PAIR_SHIFT:
        return shard
    old, mask = shard.pair_shift, (1 << shard.pair_shift) - 1
    if old != 32:
        raise ValueError(f"store shard snapshot with pair keys of an unknown layout (shift {old})")
    pairs: dict[int, SP.StoreProductState] = {}
    dropped = 0
    for key, sp in shard.pairs.items():  # (an old snapshot has no singles)
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


class StoreShardLogic(Coalescing):
    shard: StoreShard

    def __init__(self, resume: bytes | None, flush_s: float, refresh_slice: int = 0, defer_online: bool = False,
                 forks: Forks | None = None):
        state, replay = forked_snapshots.read(resume)
        super().__init__(flush_s, refresh_slice, defer_online, forks, forked_snapshots.path_of(resume))
        self.shard = migrate_pairs(_store_decoder.decode(state)) if state else StoreShard(pair_shift=PAIR_SHIFT)
        if replay:  # applied after the snapshot's fork
            self.apply(replay)

    def apply(self, events: list[Ev]) -> None:
        sh = self.shard
        feedback = [e for e in events if e.kind == F.FEEDBACK]
        if feedback:
            events = [e for e in events if e.kind != F.FEEDBACK]
            self.apply_feedback(feedback)
        for e, exc in S.store_events_apply(sh.stores, sh.pairs, sh.small, sh.dirty_stores, sh.dirty_pairs, events):
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
        due.extend(self.shard.small)
        due.extend(-1 - sid for sid in self.shard.stores)
        return due

    def entities(self) -> int:
        return len(self.shard.pairs) + len(self.shard.small) + len(self.shard.stores)

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
        elif (sp := sh.pairs.get(key)) is not None:
            nc = cached_next_change(sp, SP.store_product_next_change)
            if as_of > sp.as_of and nc <= as_of:
                sp.as_of, sp.nc = as_of, None
                sh.dirty_pairs.add(key)
                return True
        else:
            small = sh.small
            if key not in small:
                return False
            nc = small.next_change(key)
            if as_of > small.as_of_of(key) and nc <= as_of:
                small.roll(key, as_of)
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
        small = sh.small
        for key in small:
            if as_of > small.as_of_of(key) and small.next_change(key) <= as_of:
                small.roll(key, as_of)
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
        pairs, small, values = sh.pairs, sh.small, SP.store_product_values
        append = rows.append
        for key in sh.dirty_pairs:  # the most frequent row: values as a tuple (sinks.TUPLE_VIEWS)
            try:
                sp = pairs.get(key)
                if sp is not None:
                    append(("store_product", (key >> PAIR_SHIFT, key & PAIR_MASK), values(sp, sp.as_of), sp.as_of))
                else:
                    row_values, as_of = small.row(key)
                    append(("store_product", (key >> PAIR_SHIFT, key & PAIR_MASK), row_values, as_of))
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
        small = sh.small
        for key in small:
            if key not in dirty_pairs:
                row_values, as_of = small.row(key)
                rows.append(("store_product", (key >> PAIR_SHIFT, key & PAIR_MASK), row_values, as_of))
        self._feedback_rows(rows, [orig for orig in sh.subs if orig not in dirty_subs])
        return Flush(logged, rows)

    def encode_state(self) -> bytes:
        with S.indexes_left_out(self.shard.stores.values()):  # rebuilt at resume: a third of the bytes
            return _encode(self.shard)
