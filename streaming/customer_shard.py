"""The customer shards (c00..c15, customer_id % NSHARDS): customer_session, customer_activity,
customer_repertoire and customer_substitution_feedback (streaming/features/customer.py) of their customers."""

from __future__ import annotations

from array import array

import msgspec

from streaming import forked_snapshots
from streaming.features import customer as C
from streaming.features import top as T
from streaming.features.baskets import decode_hook, encode_hook
from streaming.features.event import FORGET, Ev, cached_next_change
from streaming.forked_snapshots import Forks
from streaming.shards import Coalescing
from streaming.sinks import Flush, Row, failure

_encode = msgspec.msgpack.Encoder(enc_hook=encode_hook).encode


class CustomerShard(msgspec.Struct, array_like=True):
    states: dict[int, C.CustomerState] = msgspec.field(default_factory=dict)
    dirty: dict[int, int] = msgspec.field(default_factory=dict)  # customer -> views changed, not yet emitted
    online_behind: bool = False  # rows were logged but kept from the online store (defer_online)


_customer_decoder = msgspec.msgpack.Decoder(CustomerShard, dec_hook=decode_hook)


class CustomerShardLogic(Coalescing):
    shard: CustomerShard

    def __init__(self, resume: bytes | None, flush_s: float, refresh_slice: int = 0, defer_online: bool = False,
                 forks: Forks | None = None):
        state, replay = forked_snapshots.read(resume)
        super().__init__(flush_s, refresh_slice, defer_online, forks, forked_snapshots.path_of(resume))
        self.shard = _customer_decoder.decode(state) if state else CustomerShard()
        for st in self.shard.states.values():  # a snapshot from before the baskets' columns
            C.migrate_baskets(st)
        # customer -> top_scores of its repertoire as of its last row, and the products bought since: the next
        # row merges them (top_merge) instead of ranking every product again; not in the snapshot (rebuilt)
        self.tops: dict[int, T.Top] = {}
        self.bought: dict[int, set[int]] = {}
        if replay:  # applied after the snapshot's fork
            self.apply(replay)

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

    def encode_state(self) -> bytes:
        with C.indexes_left_out(self.shard.states.values()):  # rebuilt at resume: a third of the bytes
            return _encode(self.shard)
