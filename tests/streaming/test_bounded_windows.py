"""The indexed window structures (streaming/features/windows.py and the indexes of the customer and store x product
states) against a full scan of everything the entity saw: random events, out of order within the lateness bound,
rows after each event and after quiet gaps (windows rolling and emptying, old entries forgotten, entries older than
the lateness bound folded into minutes)."""

from __future__ import annotations

import math

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from streaming.features import customer as C
from streaming.features import store_product as SP
from streaming.features.event import DAY, LATENESS_S, MINUTE, Ev, next_change
from streaming.features.windows import (
    GRAIN_S,
    Window,
    fold_before,
    grain_start,
    sorted_next_change,
    window_add,
    window_slide,
)

T0 = 1_500_000_000.0
# steps of the newest event time: window lengths among them, so entries land exactly on a window's edge
STEPS = [0.0, 1.0, 60.0, 10 * MINUTE, 29 * MINUTE, 30 * MINUTE, 31 * MINUTE, DAY, 7 * DAY, 21 * DAY, 28 * DAY]


def _times(draw, n: int) -> list[float]:
    """Event times: a newest time that moves forward by the STEPS, and events up to the lateness bound behind it
    (the gate drops later ones); exact window edges included."""
    newest, out = T0, []
    for _ in range(n):
        newest += draw(st.sampled_from(STEPS))
        late = draw(st.sampled_from([0.0, 0.0, 0.0, 1.0, LATENESS_S / 2, LATENESS_S]))
        out.append(newest - late)
    return out


@st.composite
def sorted_entries(draw):
    base = draw(st.lists(st.sampled_from([-40, -28, -27.5, -7, -6, -1, 0, 1]), max_size=12))
    jitter = draw(st.lists(st.sampled_from([0.0, -1.0, 1.0, 0.5]), min_size=len(base), max_size=len(base)))
    return sorted((T0 + d * DAY + j, i) for i, (d, j) in enumerate(zip(base, jitter, strict=True)))


@given(sorted_entries(), st.sampled_from([T0, T0 - 3 * DAY, T0 + 0.5]))
@settings(max_examples=400, deadline=None)
def test_sorted_next_change_is_next_change(order, as_of):
    for windows in ((7 * DAY, 28 * DAY), (3600.0, DAY), (DAY,)):
        assert sorted_next_change(order, as_of, windows) == next_change((t for t, _ in order), as_of, windows)


@given(sorted_entries(), st.lists(st.floats(T0 - 50 * DAY, T0 + 2 * DAY), min_size=1, max_size=6))
@settings(max_examples=300, deadline=None)
def test_window_slide_in_any_direction_equals_a_scan(order, cuts):
    w = Window()
    for t, i in order:
        window_add(w, t, i + 1)
    for lo in cuts:
        window_slide(w, order, lo, lambda e: e[1] + 1)
        inside = [i + 1 for t, i in order if t > lo]
        assert (w.n, w.total) == (len(inside), sum(inside))


# ---- store x product ----------------------------------------------------------------------------------------------


def _pair_by_scan(sales: list[tuple[float, int]], count: tuple[float, int | None] | None, as_of: float) -> tuple:
    """store_product_values by its definition from every sale and the latest count (time, on_hand): a sale is in a
    window while the start of its minute is."""
    lo7, lo28 = as_of - 7 * DAY, as_of - 28 * DAY
    u7 = sum(q for t, q in sales if lo7 < grain_start(t) and t <= as_of)
    u28 = sum(q for t, q in sales if lo28 < grain_start(t) and t <= as_of)
    n28 = sum(1 for t, _ in sales if lo28 < grain_start(t) and t <= as_of)
    last = max((t for t, _ in sales), default=None)
    on_hand = None
    if count is not None and count[1] is not None:
        on_hand = count[1] - sum(q for t, q in sales if t > count[0])
    if on_hand is not None:
        on_hand, prob = (on_hand, 1.0) if on_hand > 0 else (0, 0.0)
    elif last is None:
        prob = SP.IN_STOCK_PRIOR
    else:
        prob = SP.in_stock_probability(n28 / 28.0, (as_of - last) / DAY)
    return (u7, u28, last, on_hand, prob, None, None)


@st.composite
def pair_events(draw):
    n = draw(st.integers(1, 60))
    times = _times(draw, n)
    out = []
    for i, t in enumerate(times):
        if draw(st.integers(0, 5)) == 0:
            out.append(Ev(f"i{i}", "inventory", t, None, 1, 7, None, 1, 0.0,
                          draw(st.sampled_from([None, 0, 3, 50]))))
        else:
            out.append(Ev(f"p{i}", "purchase", t, 1, 1, 7, i, draw(st.integers(1, 4)), 1.0))
    return out


def _same_values(got: tuple, want: tuple) -> bool:
    return got[:4] == want[:4] and math.isclose(got[4], want[4], rel_tol=1e-12) and got[5:] == want[5:]


@given(pair_events(), st.sampled_from([0.0, 1.0, 7 * DAY, 20 * DAY, 28 * DAY + LATENESS_S, 60 * DAY]))
@settings(max_examples=300, deadline=None)
def test_store_product_rows_equal_a_scan_of_every_sale(events, gap):
    sp = SP.StoreProductState()
    sales: list[tuple[float, int]] = []
    count: tuple[float, int | None] | None = None
    for e in events:
        SP.store_product_apply(sp, e)
        if e.kind == "purchase":
            sales.append((e.t, e.quantity))
        elif count is None or e.t >= count[0]:
            count = (e.t, e.on_hand)
        got = SP.store_product_values(sp, sp.as_of)
        want = _pair_by_scan(sales, count, sp.as_of)
        assert _same_values(got, want), (e, got, want)
        assert SP.store_product_next_change(sp) == next_change((grain_start(t) for t, _ in sales), sp.as_of,
                                                              (7 * DAY, 28 * DAY))
        _assert_pair_bounded(sp)
    # a refresh later (the windows roll, old sales are forgotten), and the state through a snapshot
    sp.as_of += gap
    assert _same_values(SP.store_product_values(sp, sp.as_of), _pair_by_scan(sales, count, sp.as_of))
    _assert_pair_bounded(sp)
    back = msgspec.msgpack.Decoder(SP.StoreProductState, dec_hook=SP.decode_column).decode(
        msgspec.msgpack.Encoder(enc_hook=SP.encode_column).encode(sp))
    assert back == sp
    assert len(sp.ts) == len(sp.qs) <= len(sales)


def _assert_pair_bounded(sp: SP.StoreProductState) -> None:
    """After a row: exact sales only from the lateness bound on, one folded entry per minute, nothing past 28 days
    and the lateness bound (or the last count)."""
    if sp.ix:
        assert all(t >= fold_before(sp.as_of) for t in sp.ts)
    minutes = list(sp.minutes.ms) if sp.minutes else []
    assert minutes == sorted(set(minutes)) and all(m % GRAIN_S == 0 for m in minutes)
    assert all(m > min(sp.as_of - 28 * DAY - LATENESS_S, sp.inv_t) for m in minutes)


def test_a_pair_selling_every_second_holds_its_last_minutes_exactly_and_one_entry_per_minute_before():
    """The hot pair: a sale a second for 3 hours, rows as the flow makes them (one a second): it holds the sales
    of the last lateness bound (and the minute it falls in) and one entry per minute before, and its rows equal the
    scan's."""
    sp, sales = SP.StoreProductState(), []
    for i in range(3 * 3600):
        e = Ev(f"p{i}", "purchase", T0 + i, 1, 1, 7, i, 1, 1.0)
        SP.store_product_apply(sp, e)
        sales.append((e.t, 1))
        got = SP.store_product_values(sp, sp.as_of)
    assert _same_values(got, _pair_by_scan(sales, None, sp.as_of))
    assert len(sp.ts) <= LATENESS_S + GRAIN_S
    assert len(sp.minutes.ms) == (3 * 3600 - len(sp.ts)) // GRAIN_S
    assert sum(sp.minutes.mu) + len(sp.ts) == 3 * 3600



def test_a_pair_from_a_snapshot_of_tuples_resumes_with_the_same_rows():
    """A recovery snapshot from before the columns held a pair's sales and folded minutes as tuples: the store
    shard moves them into columns at resume, and the rows are those of the pair that never went through it."""
    from streaming.store_shard import StoreShard, StoreShardLogic

    sp = SP.StoreProductState()
    for i in range(40):  # a sale every 50 s, a late one every 7th: exact sales and folded minutes, indexed
        SP.store_product_apply(sp, Ev(f"p{i}", "purchase", T0 + 50 * i - (120 if i % 7 == 6 else 0), 1, 1, 7, i,
                                      1 + i % 3, 1.0))
        SP.store_product_values(sp, sp.as_of)
    assert sp.ix and sp.minutes is not None and len(sp.minutes.ms) > 0 and len(sp.ts) > 0
    from streaming.features.small_pairs import encode_hook

    raw = msgspec.msgpack.decode(msgspec.msgpack.Encoder(enc_hook=encode_hook).encode(StoreShard({}, {5: sp})))
    fields = raw[1][5]
    del fields[-2:]  # no columns: the sales and the minutes as tuples, as written then
    fields[1] = list(zip(sp.ts, sp.qs, strict=True))
    fields[10] = [list(zip(sp.minutes.ms, sp.minutes.mu, sp.minutes.mn, strict=True)), *fields[10][1:3]]
    resumed = StoreShardLogic(msgspec.msgpack.encode(raw), 0.0).shard.pairs[5]
    assert resumed == sp
    for later in (0.0, 60.0, 7 * DAY, 28 * DAY):
        assert SP.store_product_values(resumed, sp.as_of + later) == SP.store_product_values(sp, sp.as_of + later)


# ---- customer -----------------------------------------------------------------------------------------------------


@st.composite
def customer_events(draw):
    n = draw(st.integers(1, 80))
    times = _times(draw, n)
    out = []
    for i, t in enumerate(times):
        kind = draw(st.sampled_from(["purchase"] * 4 + ["add_to_cart", "remove_from_cart", "product_view"]))
        pid = draw(st.sampled_from([None, 1, 2, 3, 4, 5, 2**40]))
        if kind == "purchase":
            out.append(Ev(f"e{i}", kind, t, 1, draw(st.sampled_from([None, 3, 4, 9])), pid,
                          draw(st.sampled_from([None, i, i, max(0, i - 1), max(0, i - 2)])), draw(st.integers(0, 3)),
                          draw(st.sampled_from([0.0, 1.25, 2.5, 19.99]))))
        else:
            out.append(Ev(f"e{i}", kind, t, 1, None, pid, None, draw(st.integers(0, 3))))
    return out


class _ActivityByScan:
    """Orders and spend by definition: a basket's time is its earliest line, its spend every line; the preferred
    store has the most baskets (tie: the smaller id), a basket counted at its first line's store. A basket is
    forgotten at a row once it is past every window and the lateness bound (what the flow keeps); a line of it
    after that opens it again."""

    def __init__(self) -> None:
        self.first: dict[int, float] = {}
        self.spend: dict[int, float] = {}
        self.stores: dict[int, int] = {}

    def add(self, e: Ev) -> None:
        if e.kind != "purchase" or e.basket_id is None:
            return
        bid = e.basket_id
        if bid not in self.first:
            self.first[bid], self.spend[bid] = e.t, 0.0
            if e.store_id is not None:
                self.stores[e.store_id] = self.stores.get(e.store_id, 0) + 1
        self.first[bid] = min(self.first[bid], e.t)
        self.spend[bid] += e.sales_value

    def row(self, as_of: float) -> dict:
        horizon = as_of - 28 * DAY - LATENESS_S
        for bid in [b for b, t in self.first.items() if t <= horizon]:
            del self.first[bid], self.spend[bid]
        out = {}
        for name, lo in (("7d", as_of - 7 * DAY), ("28d", as_of - 28 * DAY)):
            inside = [b for b, t in self.first.items() if lo < t <= as_of]
            out[f"orders_{name}"] = len(inside)
            out[f"spend_{name}"] = round(sum(self.spend[b] for b in inside), 6)
        stores = self.stores
        out["preferred_store_id"] = max(stores.items(), key=lambda kv: (kv[1], -kv[0]))[0] if stores else None
        return out


def _session_by_scan(events: list[Ev]) -> dict | None:
    """The session of the newest event, by definition: events within 30 minutes of each other (out-of-order events
    more than a gap before the session are left out, as the flow does)."""
    start = last = None
    products: dict[int, float] = {}
    cart: dict[int, int] = {}
    for e in events:
        if e.kind not in C.SESSION_KINDS:
            continue
        t = e.t
        if start is None or t > last + C.SESSION_GAP_S:
            start = last = t
            products, cart = {}, {}
        elif t < start - C.SESSION_GAP_S:
            continue
        else:
            start, last = min(start, t), max(last, t)
        if e.product_id is not None:
            products[e.product_id] = max(t, products.get(e.product_id, t))
            if e.kind == "add_to_cart":
                cart[e.product_id] = cart.get(e.product_id, 0) + e.quantity
            elif e.kind in ("remove_from_cart", "purchase"):
                cart[e.product_id] = cart.get(e.product_id, 0) - max(e.quantity, 1)
    if start is None:
        return None
    newest = sorted(products, key=lambda p: (-products[p], -p))
    return {"session_distinct_products": len(products), "session_product_ids": newest[:C.SESSION_PRODUCTS],
            "cart_product_ids": [p for p in newest if cart.get(p, 0) > 0], "session_started_at": start}


def test_an_earlier_line_of_a_basket_tied_in_time_with_a_lower_id_moves_it_back():
    """Baskets 30 then 29 at the same second, then an earlier line of 30: its entry is found and moved (the time
    order once appended 29 after 30 by time alone, and the bisection for 30 then fell off the end: IndexError, found
    by the property test below)."""
    state = C.CustomerState()
    t = 1_500_000_000.0
    for i, (bid, when) in enumerate(((30, t), (29, t), (30, t - 1))):
        C.customer_apply(state, Ev(f"e{i}", "purchase", when, 1, None, None, bid, 0, 1.0))
    bk = state.bk
    assert list(zip(bk.times, bk.ids, strict=True)) == [(t - 1, 30), (t, 29)]
    assert bk.time_of(30) == t - 1 and bk.value(30, t - 1) == 2_000_000
    assert C.activity_row(state, state.as_of)["orders_7d"] == 2


@given(customer_events(), st.sampled_from([1.0, 7 * DAY, 28 * DAY, 28 * DAY + LATENESS_S + 1, 90 * DAY]))
@settings(max_examples=300, deadline=None)
def test_customer_rows_equal_a_scan_of_every_event(events, gap):
    state = C.CustomerState()
    seen: list[Ev] = []
    scan = _ActivityByScan()
    for e in events:
        C.customer_apply(state, e)
        seen.append(e)
        scan.add(e)
        row = C.activity_row(state, state.as_of)
        want = scan.row(state.as_of)
        assert {k: row[k] for k in want} == want, (e, row, want)
        session = _session_by_scan(seen)
        if session is not None:
            got = C.session_row(state)
            assert {k: got[k] for k in session} == session
        baskets = list(state.bk.times)
        assert C.customer_next_change(state) == next_change(baskets, state.as_of, (7 * DAY, 28 * DAY))
    later = state.as_of + gap
    row = C.activity_row(state, later)
    want = scan.row(later)
    assert {k: row[k] for k in want} == want
    # what the state holds is bounded by the windows: nothing at or before the horizon is kept
    bk = state.bk
    assert all(t > later - 28 * DAY - LATENESS_S for t in bk.times)
    # the id order holds the same baskets at the same times
    assert sorted(zip(bk.ids, bk.times, strict=True)) == list(zip(bk.by_id, bk.id_times, strict=True))


@given(customer_events(), st.sampled_from([1, 2, 3, 5]))
@settings(max_examples=300, deadline=None)
def test_a_session_holds_its_newest_products_up_to_the_bound(events, bound):
    """With SESSION_MAX_PRODUCTS = `bound` (6 products in the events): the session holds the `bound` newest products
    by latest touch (then id) of a scan of every event, never more; a session that never went past the bound is
    exactly the scan's, cart included."""
    kept, C.SESSION_MAX_PRODUCTS = C.SESSION_MAX_PRODUCTS, bound
    try:
        state = C.CustomerState()
        seen: list[Ev] = []
        for e in events:
            C.customer_apply(state, e)
            seen.append(e)
            assert len(state.s_products) == len(state.s_order) <= bound
            session = _session_by_scan(seen)
            if session is None:
                continue
            got = C.session_row(state)
            distinct = session["session_distinct_products"]
            assert got["session_distinct_products"] == min(distinct, bound)
            assert got["session_product_ids"] == session["session_product_ids"][:bound]
            assert got["session_started_at"] == session["session_started_at"]
            if distinct <= bound:
                assert got["cart_product_ids"] == session["cart_product_ids"]
    finally:
        C.SESSION_MAX_PRODUCTS = kept


@given(customer_events())
@settings(max_examples=100, deadline=None)
def test_a_customer_state_without_indexes_gives_the_same_rows(events):
    """A state from a snapshot taken before the indexes (ix False, none of the appended fields) is indexed at its
    first use and gives the rows of a state indexed all along."""

    class OldState(msgspec.Struct, array_like=True):  # CustomerState's fields before the indexes
        as_of: float = 0.0
        s_start: float | None = None
        s_last: float = 0.0
        s_events: int = 0
        s_products: dict[int, float] = {}
        s_cart: dict[int, int] = {}
        s_spend: float = 0.0
        baskets: dict[int, list] = {}
        store_baskets: dict[int, int] = {}
        last_order_at: float | None = None
        rep: dict[int, float] = {}
        nc: float | None = None
        recent: dict[int, float] = {}
        feedback: list[list] = []

    state = C.CustomerState()
    for e in events:
        C.customer_apply(state, e)
    fields = {f: getattr(state, f) for f in OldState.__struct_fields__}
    fields["baskets"] = _as_lists(state)
    old = msgspec.msgpack.decode(msgspec.msgpack.encode(OldState(**fields)), type=C.CustomerState)
    assert not old.ix
    assert C.customer_next_change(old) == C.customer_next_change(state)
    for as_of in (state.as_of, state.as_of + 10 * DAY):
        assert C.activity_row(old, as_of) == C.activity_row(state, as_of)
    assert C.session_row(old) == C.session_row(state)
    # indexed, but each basket still [time, spend] (the layout before baskets were their times): migrated at resume
    from streaming.customer_shard import CustomerShardLogic

    class IndexedState(OldState, array_like=True):  # with the indexes, baskets as [time, spend]
        ix: bool = True
        s_order: list = msgspec.field(default_factory=list)
        s_pos: set[int] = msgspec.field(default_factory=set)
        b_order: list = msgspec.field(default_factory=list)
        b_micros: dict[int, int] = msgspec.field(default_factory=dict)
        w7: C.Window = msgspec.field(default_factory=C.Window)
        w28: C.Window = msgspec.field(default_factory=C.Window)
        preferred: int | None = None
        recent_sorted: bool = False

    bk = state.bk
    fields = {f: getattr(state, f) for f in OldState.__struct_fields__} | {"baskets": _as_lists(state)}
    indexed = IndexedState(**fields, b_order=sorted(zip(bk.times, bk.ids, strict=True)),
                           b_micros=dict(zip(bk.ids, bk.values, strict=True)), w7=state.w7, w28=state.w28,
                           s_order=state.s_order, s_pos=state.s_pos, preferred=state.preferred,
                           recent_sorted=state.recent_sorted)

    class OldShard(msgspec.Struct, array_like=True):
        states: dict[int, IndexedState]

    resumed = CustomerShardLogic(msgspec.msgpack.encode(OldShard({1: indexed})), 0.0).shard.states[1]
    assert resumed.bk == state.bk and not resumed.baskets and not resumed.b_micros
    for as_of in (state.as_of, state.as_of + 10 * DAY):
        assert C.activity_row(resumed, as_of) == C.activity_row(state, as_of)


def _as_lists(state: C.CustomerState) -> dict[int, list]:
    bk = state.bk
    return {bid: [t, micros / 1e6] for t, bid, micros in zip(bk.times, bk.ids, bk.values, strict=True)}


@st.composite
def purchases(draw):
    """Purchases of products 1..12 (some over and over), out of order within the lateness bound."""
    n = draw(st.integers(1, 120))
    return [Ev(f"p{i}", "purchase", t, 1, 3, draw(st.integers(1, 12)), i, 1, 1.0)
            for i, t in enumerate(_times(draw, n))]


def _repertoire_by_rule(events: list[Ev], bound: int, slack: int) -> dict[int, float]:
    """The documented rule, by brute force: scores summed purchase by purchase; once more than bound + slack
    products are held, only the `bound` highest-scored (ties: the smaller id) and the recent ones stay."""
    scores: dict[int, float] = {}
    times: dict[int, float] = {}
    for e in events:
        scores[e.product_id] = scores.get(e.product_id, 0.0) + 2.0 ** ((e.t - C.REPERTOIRE_REF_T) /
                                                                      C.REPERTOIRE_HALF_LIFE_S)
        times[e.product_id] = max(times.get(e.product_id, -math.inf), e.t)
        if len(scores) > bound + slack:
            ranked = sorted(scores, key=lambda p: (-scores[p], p))
            recent = sorted(times, key=lambda p: (times[p], p))[-C.REPERTOIRE_RECENT:]
            scores = {p: scores[p] for p in {*ranked[:bound], *recent}}
    return scores


@given(purchases(), st.sampled_from([(1, 0), (2, 1), (3, 2), (5, 3), (50, 10)]))
@settings(max_examples=300, deadline=None)
def test_a_repertoire_holds_its_highest_scored_products_up_to_the_bound(events, bounds):
    """With REPERTOIRE_MAX, REPERTOIRE_SLACK = `bounds`: the repertoire is the rule's (a brute-force scan), never
    holds more than the bound, its slack and the recent products, and one that never passed the bound is exactly
    the unbounded scores; the customer shard's kept tops give the rows of a fresh ranking, products forgotten
    included."""
    from streaming.customer_shard import CustomerShardLogic
    from streaming.shards import Work

    kept = C.REPERTOIRE_MAX, C.REPERTOIRE_SLACK, C.REPERTOIRE_TOP
    # a row's top n within what is held, as with the real bounds (50 of 8,192)
    C.REPERTOIRE_MAX, C.REPERTOIRE_SLACK = bounds
    C.REPERTOIRE_TOP = bounds[0]
    try:
        bound, slack = bounds
        state = C.CustomerState()
        for e in events:
            C.customer_apply(state, e)
            assert len(state.rep) <= bound + max(slack, C.REPERTOIRE_RECENT)
        assert state.rep == _repertoire_by_rule(events, bound, slack)
        shard = CustomerShardLogic(None, 0.0)
        for lo in range(0, len(events), 3):  # a row after every 3 events: several products bought between rows
            shard.on_batch([Work(events[lo:lo + 3], False, None, False)])
        if len({e.product_id for e in events}) <= bound + slack:
            assert state.rep == _repertoire_by_rule(events, 10**9, 0)
        held = shard.shard.states[1]
        top = shard.tops.get(1)
        assert C.repertoire_row(held, held.as_of, top) == C.repertoire_row(held, held.as_of)
    finally:
        C.REPERTOIRE_MAX, C.REPERTOIRE_SLACK, C.REPERTOIRE_TOP = kept


@st.composite
def basket_lines(draw):
    """Lines of baskets 1..30, out of order, each an (id, time, value) to add or to merge into a held basket."""
    n = draw(st.integers(1, 200))
    return [(draw(st.integers(1, 30)), float(draw(st.integers(0, 50))), draw(st.integers(0, 9))) for _ in range(n)]


@given(basket_lines(), st.integers(-1, 50))
@settings(max_examples=300, deadline=None)
def test_baskets_columns_hold_what_a_dict_of_baskets_holds(lines, horizon):
    """Baskets (streaming/features/baskets.py) against a dict: a line of a held basket adds its value and moves the
    basket to an earlier time; forget_through drops what is at or before the horizon; both orders and a snapshot's
    round trip agree with the dict."""
    from streaming.features.baskets import Baskets

    bk, want = Baskets(), {}
    for bid, t, value in lines:
        held = bk.time_of(bid)
        assert held == (want[bid][0] if bid in want else None)
        if held is None:
            bk.add(bid, t, value)
            want[bid] = [t, value]
            continue
        assert bk.add_value(bid, held, value) == want[bid][1]
        want[bid][1] += value
        if t < held:
            bk.move(bid, held, t)
            want[bid][0] = t
    bk.forget_through(horizon)
    want = {bid: tv for bid, tv in want.items() if tv[0] > horizon}
    assert list(zip(bk.times, bk.ids, bk.values, strict=True)) == sorted((t, bid, v) for bid, (t, v) in want.items())
    assert list(zip(bk.by_id, bk.id_times, strict=True)) == sorted((bid, t) for bid, (t, _) in want.items())
    assert bk.count_after(10.0) == sum(t > 10.0 for t, _ in want.values())
    assert Baskets.from_columns(bk.columns()) == bk
