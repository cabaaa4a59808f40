"""Customer views: customer_session, customer_activity, customer_repertoire (see streaming/features/__init__.py).

(state, event) -> dirty flags, and (state, as_of) -> row; a state belongs to one keyed step of the dataflow, so the
update functions change it in place (for speed).
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import msgspec

from streaming.features.baskets import Baskets
from streaming.features.event import DAY, LATENESS_S, MINUTE, Ev, Values
from streaming.features.substitution import FEEDBACK as FEEDBACK_KIND
from streaming.features.substitution import customer_feedback_apply, customer_feedback_row
from streaming.features.top import Top, top_scores
from streaming.features.windows import Window, sorted_next_change, window_add, window_slide_columns

SESSION_GAP_S = 30 * MINUTE
SESSION_PRODUCTS = 20
# A session holds its newest SESSION_MAX_PRODUCTS products (by latest touch, then id); older ones are forgotten, with
# their cart counts. The Complete Journey's longest session has 161 distinct products, so this bounds a bot's or a
# scanner's session without changing a shopper's.
SESSION_MAX_PRODUCTS = 256
REPERTOIRE_TOP = 50
# A repertoire holds the REPERTOIRE_MAX highest-scored products (ties: the smaller id) and the recent ones: past
# REPERTOIRE_MAX + REPERTOIRE_SLACK the lowest are forgotten in one pass (amortised O(log n) a purchase). The Complete
# Journey's most varied household bought 2,151 distinct products in the data set's year, so a shopper's repertoire is
# unchanged, while a key's memory is bounded whatever it buys. A product forgotten and bought again starts again.
# REPERTOIRE_MAX >= REPERTOIRE_TOP: a row's top is never forgotten (the shards keep it between rows).
REPERTOIRE_MAX = 4096
REPERTOIRE_SLACK = 512
REPERTOIRE_RECENT = 10
REPERTOIRE_HALF_LIFE_S = 90 * DAY
REPERTOIRE_REF_T = 1483228800.0  # 2017-01-01T00:00Z: decayed counts are kept relative to this instant
# Event kinds that belong to a customer's session (they name a product the customer touched).
SESSION_KINDS = frozenset({"purchase", "add_to_cart", "remove_from_cart", "product_view", "click"})

SESSION, ACTIVITY, REPERTOIRE = 1, 2, 4  # dirty flags: which customer views an event changed
FEEDBACK = 8  # customer_substitution_feedback (streaming/features/substitution.py)


class CustomerState(msgspec.Struct, array_like=True):
    as_of: float = 0.0  # the latest event time of this customer (or the latest refresh)
    s_start: float | None = None
    s_last: float = 0.0
    s_events: int = 0
    s_products: dict[int, float] = msgspec.field(default_factory=dict)  # product -> latest time in this session
    s_cart: dict[int, int] = msgspec.field(default_factory=dict)  # added - removed - purchased (may go < 0)
    s_spend: float = 0.0
    # basket -> its time, or [time, spend]: only in a snapshot from before the baskets' columns (`bk`), moved there
    # at the state's first use (migrate_baskets)
    baskets: dict[int, float | list] = msgspec.field(default_factory=dict)
    store_baskets: dict[int, int] = msgspec.field(default_factory=dict)  # store -> baskets ever
    last_order_at: float | None = None
    rep: dict[int, float] = msgspec.field(default_factory=dict)  # product -> sum 2 ** ((t - REF_T) / half-life)
    nc: float | None = None  # cached next_change of this state (None: recompute; any update clears it)
    recent: dict[int, float] = msgspec.field(default_factory=dict)  # the last REPERTOIRE_RECENT products bought
    # substitution verdicts by (original, substitute) pair (streaming/features/substitution.py); appended, so older
    # snapshots decode with none
    feedback: list[list] = msgspec.field(default_factory=list)
    # Indexes, so an event and a row cost O(log n) in the session's products and the window's baskets instead of
    # a sort or a scan of them (a heavy shopper's session holds 100+ products, its 28 days 100+ baskets).
    # Appended: an older snapshot decodes with ix False and is indexed at its first use (_index).
    ix: bool = False
    s_order: list[tuple[float, int]] = msgspec.field(default_factory=list)  # (s_products time, product) sorted
    s_pos: set[int] = msgspec.field(default_factory=set)  # products with s_cart > 0
    b_order: list = msgspec.field(default_factory=list)  # only in a snapshot from before `bk` (always empty)
    b_micros: dict[int, int] = msgspec.field(default_factory=dict)  # `baskets`' spends, in a snapshot from before
    w7: Window = msgspec.field(default_factory=Window)  # baskets and spend with time > w7.cut (windows.py)
    w28: Window = msgspec.field(default_factory=Window)
    preferred: int | None = None  # the store of most baskets (tie: smaller id); counts only grow, so O(1)
    recent_sorted: bool = False  # `recent` iterates in (time, product) order (_remember_recent); appended
    # the baskets of the windows (each while its time is within 28 days and the lateness bound), their spend in
    # micro-units (exact sums in any order): streaming/features/baskets.py; appended
    bk: Baskets = msgspec.field(default_factory=Baskets)


def migrate_baskets(st: CustomerState) -> None:
    """A state from a snapshot from before the baskets' columns: its baskets moved into `bk`. Such a snapshot held
    a basket as its time with its spend in b_micros, or (older) as [time, spend], whose spend is in b_micros already
    if the state was indexed, else from the float spend (as the indexes were first built)."""
    if not st.baskets:
        return
    bk, micros = st.bk, st.b_micros
    for bid, b in sorted(st.baskets.items(), key=lambda kv: kv[0]):
        if isinstance(b, list):
            bk.add(bid, b[0], micros[bid] if st.ix and bid in micros else round(b[1] * 1e6))
        else:
            bk.add(bid, b, micros[bid])
    st.baskets, st.b_micros, st.b_order = {}, {}, []  # an indexed state's windows slide over the columns alike


@contextmanager
def indexes_left_out(states: Iterable[CustomerState]) -> Iterator[None]:
    """While a snapshot is encoded: the indexes that _index rebuilds from the rest of a state (s_order, s_pos; the
    windows' sums and the preferred store are small) are left out of it, and the state is rebuilt at its first use
    after a resume (as one from before the indexes). The baskets' columns go as they are (bytes)."""
    held = [(st, st.s_order, st.s_pos) for st in states if st.ix]
    for st, *_ in held:
        st.s_order, st.s_pos, st.ix = [], set(), False
    try:
        yield
    finally:
        for st, s_order, s_pos in held:
            st.s_order, st.s_pos, st.ix = s_order, s_pos, True


def _index(st: CustomerState) -> None:
    """Build the indexes from the state (a state from a snapshot from before them)."""
    migrate_baskets(st)
    st.s_order = sorted((t, p) for p, t in st.s_products.items())
    st.s_pos = {p for p, n in st.s_cart.items() if n > 0}
    spend, n = sum(st.bk.values), len(st.bk)
    st.w7, st.w28 = Window(n=n, total=spend), Window(n=n, total=spend)
    sb = st.store_baskets
    st.preferred = max(sb.items(), key=lambda kv: (kv[1], -kv[0]))[0] if sb else None
    st.ix = True


def customer_apply(st: CustomerState, e: Ev) -> int:
    """Fold one (non-late, non-duplicate) event into the customer's state; returns the dirty-view flags."""
    if e.kind == FEEDBACK_KIND:  # its own view only: as_of (activity, repertoire) stays the customer's shopping
        customer_feedback_apply(st.feedback, e)
        return FEEDBACK
    t = e.t
    # what can raise comes before any change (validate before mutate; streaming.features.event.admit keeps t in
    # range, so this cannot overflow for an admitted event)
    weight = 2.0 ** ((t - REPERTOIRE_REF_T) / REPERTOIRE_HALF_LIFE_S) if e.kind == "purchase" else 0.0
    micros = round(e.sales_value * 1e6) if e.kind == "purchase" else 0
    if not st.ix:
        _index(st)
    dirty = 0
    st.nc = None
    if t > st.as_of:
        st.as_of = t
        dirty = ACTIVITY | REPERTOIRE  # both are evaluated at as_of: moving it changes them
    if e.kind in SESSION_KINDS:
        dirty |= _session_apply(st, e)
    if e.kind == "purchase":
        dirty |= ACTIVITY | REPERTOIRE
        if e.basket_id is not None:
            _basket_line(st, e.basket_id, t, micros, e.store_id)
        if st.last_order_at is None or t > st.last_order_at:
            st.last_order_at = t
        if e.product_id is not None:
            st.rep[e.product_id] = st.rep.get(e.product_id, 0.0) + weight
            if not st.recent_sorted:  # a new state, or one from a snapshot of before the order was kept
                _sort_recent(st.recent)
                st.recent_sorted = True
            _remember_recent(st.recent, e.product_id, t)
            if len(st.rep) > REPERTOIRE_MAX + REPERTOIRE_SLACK:
                _forget_lowest(st)
    return dirty


def _forget_lowest(st: CustomerState) -> None:
    """Keep the REPERTOIRE_MAX highest-scored products of the repertoire (top_scores' order) and the recent ones."""
    rep = st.rep
    kept = top_scores(rep, REPERTOIRE_MAX).products
    st.rep = {p: rep[p] for p in (*kept, *(p for p in st.recent if p not in kept))}


def _basket_line(st: CustomerState, bid: int, t: float, micros: int, store_id: int | None) -> None:
    """A purchase line of basket `bid`: a new basket, more spend, or (an earlier line) an earlier basket time."""
    bk = st.bk
    old_t = bk.time_of(bid)
    w7, w28 = st.w7, st.w28
    if old_t is None:
        bk.add(bid, t, micros)
        if t > w28.cut:  # window_add of both windows, inlined: once per basket
            w28.n += 1
            w28.total += micros
            if t > w7.cut:  # w7's start is after w28's: both slide to the same as_of
                w7.n += 1
                w7.total += micros
        if store_id is not None:
            sb = st.store_baskets
            n = sb[store_id] = sb.get(store_id, 0) + 1
            best = st.preferred
            if best is None or n > sb[best] or (n == sb[best] and store_id < best):
                st.preferred = store_id
        return
    old_micros = bk.add_value(bid, old_t, micros)
    if t < old_t:  # the basket moves back: out of the windows at its old time, in at its new one
        bk.move(bid, old_t, t)
        for w in (w7, w28):
            window_add(w, old_t, -old_micros, -1)
            window_add(w, t, old_micros + micros)
    else:
        window_add(w7, old_t, micros, 0)
        window_add(w28, old_t, micros, 0)


def _remember_recent(recent: dict[int, float], product_id: int, t: float) -> None:
    """Keep the REPERTOIRE_RECENT products with the newest purchase times (order-independent: the smallest
    (time, product) goes; a newcomer that would be the smallest is not taken in).

    `recent` iterates in ascending (time, product) order (`_sort_recent` makes it so once per state), so the
    smallest is its first key: O(1), where a min over the ten cost 4% of a replay's CPU. A purchase newer than every
    held one (nearly all of them: events arrive in time order) is appended; any other re-sorts the ten."""
    held = recent.get(product_id)
    if held is not None:
        if t <= held:
            return
        del recent[product_id]
    elif len(recent) >= REPERTOIRE_RECENT:
        oldest = next(iter(recent))
        oldest_t = recent[oldest]
        if t < oldest_t or (t == oldest_t and product_id < oldest):
            return
        del recent[oldest]
    if recent:
        last = next(reversed(recent))
        last_t = recent[last]
        if t < last_t or (t == last_t and product_id < last):  # out of order: re-sort
            recent[product_id] = t
            _sort_recent(recent)
            return
    recent[product_id] = t


def _sort_recent(recent: dict[int, float]) -> None:
    """Re-insert in ascending (time, product) order."""
    ordered = sorted((t, p) for p, t in recent.items())
    recent.clear()
    for t, p in ordered:
        recent[p] = t


def _session_apply(st: CustomerState, e: Ev) -> int:
    t = e.t
    if st.s_start is None or t > st.s_last + SESSION_GAP_S:
        # A gap of more than 30 minutes after the newest event: a new session.
        st.s_start, st.s_last, st.s_events, st.s_spend = t, t, 0, 0.0
        st.s_products, st.s_cart, st.s_order, st.s_pos = {}, {}, [], set()
    elif t < st.s_start - SESSION_GAP_S:
        # Out of order and older than the current session by more than a gap: its session is closed.
        return 0
    else:
        if t < st.s_start:
            st.s_start = t
        if t > st.s_last:
            st.s_last = t
    st.s_events += 1
    pid = e.product_id
    if pid is not None:
        held = st.s_products.get(pid)
        if held is None or t >= held:
            st.s_products[pid] = t
            order = st.s_order
            if held is not None and held != t:
                del order[bisect_left(order, (held, pid))]
            if held != t:
                if not order or (t, pid) > order[-1]:
                    order.append((t, pid))
                else:
                    insort(order, (t, pid))
            if held is None and len(order) > SESSION_MAX_PRODUCTS:
                _, oldest = order.pop(0)
                del st.s_products[oldest]
                st.s_cart.pop(oldest, None)
                st.s_pos.discard(oldest)
                if oldest == pid:  # a late touch older than the newest SESSION_MAX_PRODUCTS: not held
                    pid = None
    if pid is not None:
        cart = st.s_cart
        if e.kind == "add_to_cart":
            n = cart[pid] = cart.get(pid, 0) + e.quantity
        elif e.kind in ("remove_from_cart", "purchase"):
            n = cart[pid] = cart.get(pid, 0) - max(e.quantity, 1)
        else:
            n = None
        if n is not None:
            if n > 0:
                st.s_pos.add(pid)
            else:
                st.s_pos.discard(pid)
    if e.kind == "purchase":
        st.s_spend += e.sales_value
    return SESSION


def session_row(st: CustomerState) -> Values:
    """Newest first (ties: the larger product id): the last SESSION_PRODUCTS of the sorted index, and the cart's
    products sorted alone: O(20 + cart) whatever the session holds."""
    if not st.ix:
        _index(st)
    order, products = st.s_order, st.s_products
    return {
        "session_events": st.s_events,
        "session_distinct_products": len(products),
        "session_product_ids": [p for _, p in order[:-SESSION_PRODUCTS - 1:-1]],
        "cart_product_ids": sorted(st.s_pos, key=lambda p: (-products[p], -p)),
        "session_spend": st.s_spend,
        "session_started_at": st.s_start,
    }


def activity_row(st: CustomerState, as_of: float) -> Values:
    """Orders (distinct baskets) and spend in (as_of - 7d, as_of] and (as_of - 28d, as_of]."""
    if not st.ix:
        _index(st)
    lo7, lo28 = as_of - 7 * DAY, as_of - 28 * DAY
    horizon = lo28 - LATENESS_S
    bk, w7, w28 = st.bk, st.w7, st.w28
    window_slide_columns(w7, bk.times, lo7, bk.values)  # first: the baskets forgotten below have left both windows
    window_slide_columns(w28, bk.times, lo28, bk.values)
    times = bk.times
    if times and times[0] <= horizon:  # forget what no window can hold again
        bk.forget_through(horizon)
    o7, s7, o28, s28 = w7.n, w7.total, w28.n, w28.total
    if times and times[-1] > as_of:  # a row asked for a time before some baskets (not the flow's: as_of is newest)
        values = bk.values
        for i in range(bk.after(as_of), len(times)):
            o28 -= 1
            s28 -= values[i]
            if times[i] > lo7:
                o7 -= 1
                s7 -= values[i]
    preferred = st.preferred
    return {
        "orders_7d": o7,
        "orders_28d": o28,
        "spend_7d": round(s7 / 1e6, 6),
        "spend_28d": round(s28 / 1e6, 6),
        "last_order_at": st.last_order_at,
        "preferred_store_id": preferred,
    }


def repertoire_row(st: CustomerState, as_of: float, top: Top | None = None) -> Values:
    """`top`: top_scores(st.rep, REPERTOIRE_TOP) if the caller keeps it up to date (streaming.features.top)."""
    decay = 2.0 ** (-(as_of - REPERTOIRE_REF_T) / REPERTOIRE_HALF_LIFE_S)
    if top is None:
        top = top_scores(st.rep, REPERTOIRE_TOP)
    negs, products = top.negs, top.products.tolist()
    chosen = set(products)
    missing = [p for p in st.recent if p not in chosen]
    if missing:  # recent purchases outside the top: ranked in among it
        ranked = sorted([*zip(negs, products, strict=True), *((-st.rep[p], p) for p in missing)])
        return {
            "repertoire_product_ids": [p for _, p in ranked],
            "repertoire_scores": [-neg * decay for neg, _ in ranked],
        }
    return {
        "repertoire_product_ids": products,
        "repertoire_scores": [-neg * decay for neg in negs],
    }


def customer_rows(st: CustomerState, dirty: int, top: Top | None = None
                  ) -> list[tuple[str, Values, float]]:
    """(view, values, row time): a session row is as of its newest event, the others as of the state's as_of.
    `top`: the customer's top_scores, if the caller keeps them (repertoire_row)."""
    out = []
    if dirty & SESSION:
        out.append(("customer_session", session_row(st), st.s_last))
    if dirty & ACTIVITY:
        out.append(("customer_activity", activity_row(st, st.as_of), st.as_of))
    if dirty & REPERTOIRE:
        out.append(("customer_repertoire", repertoire_row(st, st.as_of, top), st.as_of))
    if dirty & FEEDBACK and st.feedback:
        values, t = customer_feedback_row(st.feedback)
        out.append(("customer_substitution_feedback", values, t))
    return out


def customer_next_change(st: CustomerState) -> float:
    """next_change of the baskets' times (7 d, 28 d), by bisection of the sorted index."""
    if not st.ix:
        _index(st)
    return sorted_next_change(st.bk.times, st.as_of, (7 * DAY, 28 * DAY), columns=True)


