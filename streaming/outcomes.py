"""The outcome join: what every answer did, counted per KPI key (pantry/kpis.py). Live flow only.

The decision log (`pantry:decisions`, written by serving) and the outcome events (after the gate: duplicates by
event_id and late events are already out) meet here, keyed by customer (OUTCOME_SHARDS: customer_id % 16). A shard
keeps, per customer, the recent decisions (at most `per_customer`, none older than the attribution window of event
time after the decision's `now`) with the products and coupon campaigns each one showed, and joins each outcome:

- with a decision_id: to that decision of the customer; one whose decision has not arrived yet (the two streams are
  read separately) waits in the state up to `pending_s` of wall time and is joined when it comes, else counted
  `unattributed`;
- without one: a purchase or add_to_cart to the latest decision that showed the product, a coupon_redemption to
  the latest offering the campaign, a substitution_feedback to the latest offering a substitute for the product,
  each within the window ([now - ATTRIBUTION_SLACK_S, now + window]); nothing found: `unmatched` (an ordinary
  purchase).

Each (decision, product or campaign, kind) counts once, however many events say so. Totals per key live in the state
(a killed flow resumes to the same totals) and go out absolute at most every `flush_s`, when changed.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import msgspec
from bytewax.operators import StatefulBatchLogic

from pantry.kpis import OUTCOME_SHARDS, Counts, KpiKey, latency_bucket
from streaming.features.event import DAY, FORGET, NO_TIME, Ev

ATTRIBUTION_SLACK_S = 300.0  # an outcome may carry a time this much before its decision's `now` (client clocks)
PENDING_MAX = 64  # outcomes waiting for their decision, per customer (the oldest is counted unattributed)
SWEEP_EVERY_S = 60.0  # wall seconds between sweeps of expired decisions and waiting outcomes over a whole shard
_MARK = {"impression": "i", "click": "c", "add_to_cart": "a", "purchase": "p", "coupon_redemption": "r",
         "substitution_feedback": "s"}
__all__ = ["OUTCOME_SHARDS", "Dec", "KpiFlush", "OutWork", "OutcomeJoin", "OutcomeShardLogic", "parse_decision"]
COUNTER_NAMES = ("decisions", "outcomes", "joined", "duplicate", "pending", "unattributed", "unmatched",
                 "outside_window", "decision_invalid", "decision_expired")


class Dec(msgspec.Struct, array_like=True, gc=False, frozen=True):
    """A decision as the join needs it (from one entry of the decision log)."""

    decision_id: str
    t: float  # the decision's `now` (event time in event mode), epoch seconds
    customer_id: int
    key: str  # KpiKey.field(): day of `now`, model, version, experiment, arm, surface
    products: frozenset[int] = frozenset()  # shown: recommended items, substitution originals, actions' products
    campaigns: frozenset[int] = frozenset()  # coupon campaigns offered
    fallback: str = ""
    elapsed_ms: float = 0.0
    coupons: int = 0  # coupon actions answered
    originals: frozenset[int] = frozenset()  # substitutions: the products a substitute was offered for


class _Cand(msgspec.Struct):
    product_id: int | None = None


class _Item(msgspec.Struct):
    """Any answer's item: a recommendation, a substitution (with candidates) or an action."""

    product_id: int | None = None
    candidates: list[_Cand] = msgspec.field(default_factory=list)
    action_type: str | None = None
    campaign_id: int | None = None


_items_decoder = msgspec.json.Decoder(list[_Item] | dict)  # dict: the {"truncated_bytes": N} marker
_str_decoder = msgspec.json.Decoder(str)


def parse_decision(fields: dict[bytes, bytes]) -> Dec:
    """A decision-log entry's fields (bytes) as a Dec; raises ValueError (or msgspec's errors) on a bad entry."""
    def text(name: bytes) -> str:
        return fields.get(name, b"").decode()

    now = datetime.fromisoformat(_str_decoder.decode(fields[b"now"]))
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    key = KpiKey(now.astimezone(UTC).date().isoformat(), text(b"model"), text(b"model_version"),
                 text(b"experiment_id"), text(b"arm"), text(b"surface"))
    items = _items_decoder.decode(fields.get(b"items") or b"[]")
    products: set[int] = set()
    originals: set[int] = set()
    campaigns: set[int] = set()
    coupons = 0
    for item in items if isinstance(items, list) else ():
        if item.product_id is not None:
            products.add(item.product_id)
        if item.candidates:
            if item.product_id is not None:
                originals.add(item.product_id)
            products.update(c.product_id for c in item.candidates if c.product_id is not None)
        if item.action_type == "coupon":
            coupons += 1
            if item.campaign_id is not None:
                campaigns.add(item.campaign_id)
    decision_id = text(b"decision_id")
    if not 0 < len(decision_id) <= 128:
        raise ValueError("decision_id missing or longer than 128 characters")
    if any("|" in part for part in (key.model, key.version, key.experiment, key.arm, key.surface)):
        raise ValueError("a key field holds '|' (the KPI field separator)")
    return Dec(decision_id, now.timestamp(), int(fields[b"customer_id"]), key.field(), frozenset(products),
               frozenset(campaigns), text(b"fallback"), float(fields.get(b"elapsed_ms") or 0.0), coupons,
               frozenset(originals))


class Recent(msgspec.Struct, array_like=True, gc=False):
    dec: Dec
    done: set[str] = msgspec.field(default_factory=set)  # kind mark + product/campaign id already counted
    converted: bool = False  # a purchase was attributed (converted counts decisions, not lines)


class Waiting(msgspec.Struct, array_like=True, gc=False):
    arrived: float  # wall epoch seconds (in the snapshot: a restart does not restart the wait)
    ev: Ev


class OutcomeState(msgspec.Struct, array_like=True):
    """One outcome shard's recovery state (msgpack; fields only appended)."""

    recent: dict[int, list[Recent]] = msgspec.field(default_factory=dict)  # customer -> oldest first
    pending: dict[int, list[Waiting]] = msgspec.field(default_factory=dict)
    totals: dict[str, Counts] = msgspec.field(default_factory=dict)  # KpiKey.field() -> running totals
    counters: dict[str, int] = msgspec.field(default_factory=lambda: dict.fromkeys(COUNTER_NAMES, 0))
    dirty: set[str] = msgspec.field(default_factory=set)  # keys changed since the last flush
    deleted: set[str] = msgspec.field(default_factory=set)  # keys dropped by retention, not yet deleted in Redis
    max_t: float = NO_TIME  # newest event time seen (the gate's)
    cutoff_day: str = ""  # days before this are dropped (retention)


class OutcomeJoin:
    """The pure join of one shard (no Bytewax, no Redis): decisions and outcomes in, totals out."""

    def __init__(self, state: OutcomeState | None = None, *, window_s: float = DAY, per_customer: int = 64,
                 pending_s: float = 30.0, retention_days: int = 90) -> None:
        self.st = state or OutcomeState()
        self.window_s, self.per_customer, self.pending_s = window_s, per_customer, pending_s
        self.retention_days = retention_days
        self.last_sweep = self.last_wait_check = time.time()

    # ---- decisions -------------------------------------------------------------------------------------------

    def add_decision(self, dec: Dec, wall: float) -> None:
        st = self.st
        if dec.key < st.cutoff_day:  # older than the retention: its key is already gone
            st.counters["decision_expired"] += 1
            return
        recent = st.recent.setdefault(dec.customer_id, [])
        # in `now` order (the log is in serving's wall order; workers' clocks agree to ms): latest last, so the
        # place is found from the end, in a step or two
        i = len(recent)
        while i and recent[i - 1].dec.t > dec.t:
            i -= 1
        j = i
        while j and recent[j - 1].dec.t == dec.t:  # the same entry again has the same `now`: only those can be it
            j -= 1
            if recent[j].dec.decision_id == dec.decision_id:
                return  # (cannot happen with the source's position; ruled out without a scan of the customer's)
        c = self._counts(dec.key)
        c.decisions += 1
        st.counters["decisions"] += 1
        if dec.fallback:
            c.fallbacks += 1
            if dec.fallback == "model_error":
                c.model_errors += 1
        c.latency[latency_bucket(dec.elapsed_ms)] += 1
        c.coupons_offered += dec.coupons
        r = Recent(dec)
        recent.insert(i, r)
        if len(recent) > self.per_customer:
            del recent[0]
        waiting = st.pending.get(dec.customer_id)
        if waiting:
            keep = []
            for w in waiting:
                if w.ev.decision_id == dec.decision_id:
                    st.counters["pending"] -= 1
                    self._count(r, w.ev)
                else:
                    keep.append(w)
            if keep:
                st.pending[dec.customer_id] = keep
            else:
                del st.pending[dec.customer_id]

    # ---- outcomes --------------------------------------------------------------------------------------------

    def add_outcome(self, ev: Ev, wall: float) -> None:
        st = self.st
        st.counters["outcomes"] += 1
        cid = ev.customer_id
        recent = st.recent.get(cid, ()) if cid is not None else ()
        if ev.decision_id is not None:
            for r in reversed(recent):  # ids are unique in the list; an outcome is most often of a recent answer
                if r.dec.decision_id == ev.decision_id:
                    self._count(r, ev)
                    return
            if cid is None:  # no customer, no way to find its decision
                st.counters["unattributed"] += 1
                return
            waiting = st.pending.setdefault(cid, [])
            waiting.append(Waiting(wall, ev))
            st.counters["pending"] += 1
            if len(waiting) > PENDING_MAX:
                del waiting[0]
                st.counters["pending"] -= 1
                st.counters["unattributed"] += 1
            return
        r = self._latest_showing(recent, ev)
        if r is None:
            st.counters["unmatched"] += 1
        else:
            self._count(r, ev)

    def _latest_showing(self, recent, ev: Ev) -> Recent | None:
        kind, t, window = ev.kind, ev.t, self.window_s
        for r in reversed(recent):
            d = r.dec
            if not d.t - ATTRIBUTION_SLACK_S <= t <= d.t + window:
                continue
            if kind in ("purchase", "add_to_cart"):
                if ev.product_id in d.products:
                    return r
            elif kind == "coupon_redemption":
                if ev.campaign_id in d.campaigns:
                    return r
            elif kind == "substitution_feedback" and ev.original_product_id in d.originals:
                return r
        return None

    def _count(self, r: Recent, ev: Ev) -> None:
        st = self.st
        d = r.dec
        if ev.t > d.t + self.window_s:
            st.counters["outside_window"] += 1
            return
        kind = ev.kind
        what = ev.campaign_id if kind == "coupon_redemption" else \
            ev.original_product_id if kind == "substitution_feedback" else ev.product_id
        if kind == "impression" and what is None and d.products:
            self._whole_answer_shown(r)
            return
        mark = f"{_MARK[kind]}{'' if what is None else what}"
        if mark in r.done:
            st.counters["duplicate"] += 1
            return
        r.done.add(mark)
        st.counters["joined"] += 1
        c = self._counts(d.key)
        if kind == "impression":
            c.impressions += 1
        elif kind == "click":
            c.clicks += 1
        elif kind == "add_to_cart":
            c.add_to_carts += 1
        elif kind == "purchase":
            c.purchases += 1
            c.revenue += ev.sales_value
            if not r.converted:
                r.converted = True
                c.converted += 1
        elif kind == "coupon_redemption":
            c.coupons_redeemed += 1
        elif ev.accepted:
            c.subs_accepted += 1
        else:
            c.subs_rejected += 1

    def _whole_answer_shown(self, r: Recent) -> None:
        """An impression without a product: every product the decision showed was seen (one event per answer, as an
        analytics SDK reports a list view, instead of one per item), each counted once with per-item impressions."""
        st = self.st
        marks = [m for m in (f"i{p}" for p in r.dec.products) if m not in r.done]
        if not marks:
            st.counters["duplicate"] += 1
            return
        r.done.update(marks)
        st.counters["joined"] += 1
        self._counts(r.dec.key).impressions += len(marks)

    def _counts(self, key: str) -> Counts:
        st = self.st
        st.dirty.add(key)
        c = st.totals.get(key)
        if c is None:
            c = st.totals[key] = Counts()
            st.deleted.discard(key)
        return c

    # ---- erasure, expiry, retention --------------------------------------------------------------------------

    def forget(self, customer_id: int) -> None:
        """Erasure: the customer's decisions and waiting outcomes go (the totals hold no one's data)."""
        self.st.recent.pop(customer_id, None)
        waiting = self.st.pending.pop(customer_id, None)
        if waiting:
            self.st.counters["pending"] -= len(waiting)

    def advance(self, max_t: float, wall: float) -> None:
        """The newest event time moved: retention of days; every SWEEP_EVERY_S, expired decisions and outcomes."""
        st = self.st
        if max_t > st.max_t:
            st.max_t = max_t
            cutoff = datetime.fromtimestamp(max_t - self.retention_days * DAY, UTC).date().isoformat()
            if cutoff > st.cutoff_day:
                st.cutoff_day = cutoff
                for key in [k for k in st.totals if k < cutoff]:  # "YYYY-MM-DD|..." < "YYYY-MM-DD"
                    del st.totals[key]
                    st.dirty.discard(key)
                    st.deleted.add(key)
        if wall - self.last_sweep >= SWEEP_EVERY_S:
            self.sweep(wall)

    def sweep(self, wall: float) -> None:
        st = self.st
        self.last_sweep = wall
        oldest = st.max_t - self.window_s
        for cid in list(st.recent):
            kept = [r for r in st.recent[cid] if r.dec.t >= oldest]
            if kept:
                st.recent[cid] = kept
            else:
                del st.recent[cid]
        self.expire_pending(wall)

    def expire_pending(self, wall: float) -> None:
        st = self.st
        self.last_wait_check = wall
        for cid in list(st.pending):
            kept = [w for w in st.pending[cid] if wall - w.arrived < self.pending_s]
            gone = len(st.pending[cid]) - len(kept)
            if gone:
                st.counters["pending"] -= gone
                st.counters["unattributed"] += gone
            if kept:
                st.pending[cid] = kept
            else:
                del st.pending[cid]

    def take_changes(self) -> tuple[dict[str, Counts], list[str]]:
        """The totals changed since the last call (absolute) and the keys dropped by retention."""
        st = self.st
        changed = {k: st.totals[k] for k in st.dirty}
        deleted = sorted(st.deleted)
        st.dirty, st.deleted = set(), set()
        return changed, deleted


# ---- the Bytewax step ----------------------------------------------------------------------------------------


class OutWork(msgspec.Struct, array_like=True, gc=False):
    """An outcome shard's share of a batch: the decisions first (their outcomes may be in the same batch)."""

    events: list[Ev]
    decisions: list[Dec]
    as_of: float | None


class KpiFlush(msgspec.Struct, array_like=True, gc=False):
    """What an outcome shard writes (the step emits (shard, KpiFlush)): its changed keys' totals (absolute), keys to
    delete, its counters."""

    totals: dict[str, Counts]
    deleted: list[str]
    counters: dict[str, int]


_state_decoder = msgspec.msgpack.Decoder(OutcomeState)
_encode = msgspec.msgpack.Encoder().encode


class OutcomeShardLogic(StatefulBatchLogic[OutWork, KpiFlush, bytes]):
    def __init__(self, resume: bytes | None, *, flush_s: float, window_s: float, per_customer: int,
                 pending_s: float, retention_days: int) -> None:
        self.join = OutcomeJoin(_state_decoder.decode(resume) if resume else None, window_s=window_s,
                                per_customer=per_customer, pending_s=pending_s, retention_days=retention_days)
        # resumed: every key is written again at the first flush (the hash may be older or newer than the snapshot)
        self.join.st.dirty.update(self.join.st.totals)
        self.flush_s = flush_s
        self.last_emit = 0.0
        self.last_counters: dict[str, int] = {}

    def on_batch(self, values: list[OutWork]) -> tuple[list[KpiFlush], bool]:
        join, wall = self.join, time.time()
        for work in values:
            for dec in work.decisions:
                join.add_decision(dec, wall)
            for ev in work.events:
                if ev.kind == FORGET:
                    join.forget(ev.customer_id)
                else:
                    join.add_outcome(ev, wall)
            if work.as_of is not None:
                join.advance(work.as_of, wall)
        st = join.st
        if st.pending and wall - join.last_wait_check >= join.pending_s / 4:
            join.expire_pending(wall)  # waiting outcomes are judged within a quarter of their wait
        now = time.monotonic()
        if now - self.last_emit < self.flush_s:
            return [], StatefulBatchLogic.RETAIN
        if not st.dirty and not st.deleted and st.counters == self.last_counters:
            return [], StatefulBatchLogic.RETAIN
        self.last_emit = now
        totals, deleted = join.take_changes()
        self.last_counters = dict(st.counters)
        return [KpiFlush(totals, deleted, dict(st.counters))], StatefulBatchLogic.RETAIN

    def snapshot(self) -> bytes:
        return _encode(self.join.st)
