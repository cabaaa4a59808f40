"""Feature logic as pure functions over small state objects: (state, event) -> state, (state, as_of) -> row.

No I/O here. Times are float epoch seconds (event time). A state object belongs to exactly one keyed step
of the dataflow, so the update functions change it in place (for speed) and return it; nothing else holds it.

Views (names and types are the contract in feature_repo/features.py):
  customer_session     session window, 30-minute gap
  customer_activity    baskets and spend over (as_of - 7d, as_of] and (as_of - 28d, as_of], last order, preferred store
  customer_repertoire  top 50 products by purchase count decayed with a 90-day half-life, plus the last 10
                       distinct products bought (so a purchase shows up in buy-again at once, even for big baskets)
  store_traffic        baskets and customers over 1 h / 24 h, sales over 24 h
  store_product        units over 7 d / 28 d, last sale, on_hand from inventory, in-stock probability
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable
from typing import Any

import msgspec

from pantry import events as ev_schema

MINUTE = 60.0
HOUR = 3600.0
DAY = 86400.0
LATENESS_S = 10 * MINUTE  # events older than (max event time seen - this) are late
SEEN_PRUNE_MIN = 50_000  # GateState.prune_at
SESSION_GAP_S = 30 * MINUTE
SESSION_PRODUCTS = 20
REPERTOIRE_TOP = 50
REPERTOIRE_RECENT = 10
REPERTOIRE_HALF_LIFE_S = 90 * DAY
REPERTOIRE_REF_T = 1483228800.0  # 2017-01-01T00:00Z: decayed counts are kept relative to this instant
NO_TIME = -1e300  # "never" as a float that msgpack and comparisons both handle
IN_STOCK_PRIOR = 0.9  # P(in stock) before looking at sales; see in_stock_probability

# Event kinds that belong to a customer's session (they name a product the customer touched).
SESSION_KINDS = frozenset({"purchase", "add_to_cart", "remove_from_cart", "product_view", "click"})

Values = dict[str, Any]


class Ev(msgspec.Struct, array_like=True, gc=False, frozen=True):
    """The flow's compact event: what the features need, with event time as epoch seconds."""

    event_id: str
    kind: str
    t: float
    customer_id: int | None = None
    store_id: int | None = None
    product_id: int | None = None
    basket_id: int | None = None
    quantity: int = 0
    sales_value: float = 0.0
    on_hand: int | None = None


def from_event(event: ev_schema.Event) -> Ev:
    """A validated pantry event as the flow's compact event."""
    kind = type(event).__struct_config__.tag
    t = event.ts.timestamp()
    match event:
        case ev_schema.Purchase():
            return Ev(event.event_id, kind, t, event.customer_id, event.store_id, event.product_id,
                      event.basket_id, event.quantity, event.sales_value)
        case ev_schema.AddToCart() | ev_schema.RemoveFromCart():
            return Ev(event.event_id, kind, t, event.customer_id, event.store_id, event.product_id,
                      None, event.quantity)
        case ev_schema.Inventory():
            return Ev(event.event_id, kind, t, event.customer_id, event.store_id, event.product_id,
                      on_hand=event.on_hand)
        case ev_schema.ProductView() | ev_schema.Click() | ev_schema.Impression():
            return Ev(event.event_id, kind, t, event.customer_id, event.store_id, getattr(event, "product_id", None))
        case _:
            return Ev(event.event_id, kind, t, event.customer_id, event.store_id)


def next_change(times: Iterable[float], as_of: float, windows: tuple[float, ...]) -> float:
    """The first instant after `as_of` at which an entry (event time) leaves a window (lengths ascending) that
    holds it at `as_of`: until then the windowed values stay as they are. inf if nothing is in a window.
    Computed from the state alone, so when a refresh re-evaluates an entity never depends on emission timing."""
    best = math.inf
    for t in times:
        if t > as_of:
            continue
        for w in windows:
            end = t + w
            if end > as_of:
                if end < best:
                    best = end
                break
    return best


def cached_next_change(st, compute) -> float:
    """next_change, remembered in the state until the state changes (refreshes then cost O(1) per entity)."""
    if st.nc is None:
        st.nc = compute(st)
    return st.nc


def customer_next_change(st: CustomerState) -> float:
    return next_change((b[0] for b in st.baskets.values()), st.as_of, (7 * DAY, 28 * DAY))


def store_next_change(st: StoreState) -> float:
    return min(next_change((b[0] for b in st.baskets.values()), st.as_of, (HOUR, DAY)),
               next_change((t for t, _ in st.sales), st.as_of, (DAY,)))


def store_product_next_change(st: StoreProductState) -> float:
    """next_change(sale times, as_of, (7 d, 28 d)) unrolled: a final refresh asks it of every store x product pair."""
    as_of = st.as_of
    best = math.inf
    for t, _ in st.sales:
        if t > as_of:
            continue
        end = t + _WEEK
        if end <= as_of:
            end = t + _FOUR_WEEKS
            if end <= as_of:
                continue
        if end < best:
            best = end
    return best


_WEEK, _FOUR_WEEKS = 7 * DAY, 28 * DAY


# ---- customer: session, activity, repertoire ------------------------------------------------------------------

SESSION, ACTIVITY, REPERTOIRE = 1, 2, 4  # dirty flags: which customer views an event changed


class CustomerState(msgspec.Struct, array_like=True):
    as_of: float = 0.0  # the latest event time of this customer (or the latest refresh)
    s_start: float | None = None
    s_last: float = 0.0
    s_events: int = 0
    s_products: dict[int, float] = msgspec.field(default_factory=dict)  # product -> latest time in this session
    s_cart: dict[int, int] = msgspec.field(default_factory=dict)  # added - removed - purchased (may go < 0)
    s_spend: float = 0.0
    baskets: dict[int, list] = msgspec.field(default_factory=dict)  # basket -> [time, spend] still in a window
    store_baskets: dict[int, int] = msgspec.field(default_factory=dict)  # store -> baskets ever
    last_order_at: float | None = None
    rep: dict[int, float] = msgspec.field(default_factory=dict)  # product -> sum 2 ** ((t - REF_T) / half-life)
    nc: float | None = None  # cached next_change of this state (None: recompute; any update clears it)
    recent: dict[int, float] = msgspec.field(default_factory=dict)  # the last REPERTOIRE_RECENT products bought


def customer_apply(st: CustomerState, e: Ev) -> int:
    """Fold one (non-late, non-duplicate) event into the customer's state; returns the dirty-view flags."""
    t = e.t
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
            b = st.baskets.get(e.basket_id)
            if b is None:
                st.baskets[e.basket_id] = [t, e.sales_value]
                if e.store_id is not None:
                    st.store_baskets[e.store_id] = st.store_baskets.get(e.store_id, 0) + 1
            else:
                b[0] = min(b[0], t)
                b[1] += e.sales_value
        if st.last_order_at is None or t > st.last_order_at:
            st.last_order_at = t
        if e.product_id is not None:
            weight = 2.0 ** ((t - REPERTOIRE_REF_T) / REPERTOIRE_HALF_LIFE_S)
            st.rep[e.product_id] = st.rep.get(e.product_id, 0.0) + weight
            _remember_recent(st.recent, e.product_id, t)
    return dirty


def _remember_recent(recent: dict[int, float], product_id: int, t: float) -> None:
    """Keep the REPERTOIRE_RECENT products with the newest purchase times (order-independent: the smallest
    (time, product) goes; a newcomer that would be the smallest is not taken in)."""
    held = recent.get(product_id)
    if held is not None:
        if t > held:
            recent[product_id] = t
    elif len(recent) < REPERTOIRE_RECENT:
        recent[product_id] = t
    else:
        oldest_t, oldest = min(zip(recent.values(), recent, strict=True))  # the smallest (time, product): one C pass
        if t > oldest_t or (t == oldest_t and product_id > oldest):
            del recent[oldest]
            recent[product_id] = t


def _session_apply(st: CustomerState, e: Ev) -> int:
    t = e.t
    if st.s_start is None or t > st.s_last + SESSION_GAP_S:
        # A gap of more than 30 minutes after the newest event: a new session.
        st.s_start, st.s_last, st.s_events, st.s_spend = t, t, 0, 0.0
        st.s_products, st.s_cart = {}, {}
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
        if t >= st.s_products.get(pid, -math.inf):
            st.s_products[pid] = t
        if e.kind == "add_to_cart":
            st.s_cart[pid] = st.s_cart.get(pid, 0) + e.quantity
        elif e.kind in ("remove_from_cart", "purchase"):
            st.s_cart[pid] = st.s_cart.get(pid, 0) - max(e.quantity, 1)
    if e.kind == "purchase":
        st.s_spend += e.sales_value
    return SESSION


def session_row(st: CustomerState) -> Values:
    newest_first = sorted(st.s_products.items(), key=lambda kv: (-kv[1], -kv[0]))
    return {
        "session_events": st.s_events,
        "session_distinct_products": len(st.s_products),
        "session_product_ids": [p for p, _ in newest_first[:SESSION_PRODUCTS]],
        "cart_product_ids": [p for p, _ in newest_first if st.s_cart.get(p, 0) > 0],
        "session_spend": st.s_spend,
        "session_started_at": st.s_start,
    }


def activity_row(st: CustomerState, as_of: float) -> Values:
    """Orders (distinct baskets) and spend in (as_of - 7d, as_of] and (as_of - 28d, as_of]."""
    lo7, lo28 = as_of - 7 * DAY, as_of - 28 * DAY
    horizon = lo28 - LATENESS_S
    o7 = o28 = 0
    s7 = s28 = 0.0
    stale = []
    for bid, (t, spend) in st.baskets.items():
        if t <= horizon:
            stale.append(bid)
            continue
        if lo28 < t <= as_of:
            o28 += 1
            s28 += spend
            if t > lo7:
                o7 += 1
                s7 += spend
    for bid in stale:
        del st.baskets[bid]
    store_baskets = st.store_baskets
    if len(store_baskets) == 1:
        preferred: int | None = next(iter(store_baskets))
    else:
        preferred = max(store_baskets.items(), key=lambda kv: (kv[1], -kv[0]))[0] if store_baskets else None
    return {
        "orders_7d": o7,
        "orders_28d": o28,
        "spend_7d": round(s7, 6),
        "spend_28d": round(s28, 6),
        "last_order_at": st.last_order_at,
        "preferred_store_id": preferred,
    }


def repertoire_row(st: CustomerState, as_of: float, top: list[tuple[int, float]] | None = None) -> Values:
    """`top`: top_scores(st.rep, REPERTOIRE_TOP) if the caller keeps it up to date (see top_update)."""
    decay = 2.0 ** (-(as_of - REPERTOIRE_REF_T) / REPERTOIRE_HALF_LIFE_S)
    if top is None:
        top = top_scores(st.rep, REPERTOIRE_TOP)
    chosen = {p for p, _ in top}
    missing = [p for p in st.recent if p not in chosen]
    if missing:
        top = sorted([*top, *((p, st.rep[p]) for p in missing)], key=lambda kv: (-kv[1], kv[0]))
    return {
        "repertoire_product_ids": [p for p, _ in top],
        "repertoire_scores": [s * decay for _, s in top],
    }


def top_scores(scores: dict[int, float], n: int) -> list[tuple[int, float]]:
    """The n (product, score) with the highest scores, ties to the smaller product id, highest first.

    The n-th highest score is found over bare floats (C comparisons); only the few entries at or above it are
    then sorted with the tie-break, instead of comparing (score, -product) keys across the whole dict."""
    if len(scores) > n:
        threshold = heapq.nlargest(n, scores.values())[-1]
        items = [(p, s) for p, s in scores.items() if s >= threshold]
    else:
        items = list(scores.items())
    items.sort(key=lambda kv: (-kv[1], kv[0]))
    return items[:n]


def top_merge(top: list[tuple[int, float]], changed: Iterable[int], scores: dict[int, float], n: int
              ) -> list[tuple[int, float]]:
    """top_scores(scores, n), given `top` == top_scores before the scores of `changed` rose (scores only ever
    rise: they are kept relative to a fixed instant). Every other product ranked below all of `top` and still
    does, so the new top n is among `top` and `changed`. `top` is already in rank order: the unchanged entries
    stay in it and each changed product is inserted by bisection (C comparisons of (-score, product) tuples),
    instead of sorting all of them again with a Python key function."""
    changed = changed if isinstance(changed, set | frozenset) else set(changed)
    ranked = [(-s, p) for p, s in top if p not in changed]
    if len(top) >= n:
        # every entry of `top` is still there with the same or a higher score, so nothing ranked below the old
        # n-th can make the new top n: most products of a big repertoire are skipped with one comparison
        last_p, last_s = top[-1]
        for p in changed:
            s = scores[p]
            if s > last_s or (s == last_s and p <= last_p):
                insort(ranked, (-s, p))
    else:
        for p in changed:
            insort(ranked, (-scores[p], p))
    del ranked[n:]
    return [(p, -neg) for neg, p in ranked]


def customer_rows(st: CustomerState, dirty: int, top: list[tuple[int, float]] | None = None
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
    return out


# ---- store: traffic ----------------------------------------------------------------------------------------------


class StoreState(msgspec.Struct, array_like=True):
    as_of: float = 0.0
    baskets: dict[int, list] = msgspec.field(default_factory=dict)  # basket -> [first time, customer]
    sales: list[tuple[float, float]] = msgspec.field(default_factory=list)  # (time, sales_value), sorted
    nc: float | None = None
    # Indexes of `baskets`, so a traffic row costs O(log n) instead of a scan of the 24 h window (live recomputes
    # a store's row at every flush that touched it): (first time, basket) sorted, each customer's latest basket
    # time, and (latest time, customer) sorted. Rebuilt from `baskets` if they disagree (an older snapshot).
    by_time: list[tuple[float, int]] = msgspec.field(default_factory=list)
    latest: dict[int, float] = msgspec.field(default_factory=dict)
    customers_by_time: list[tuple[float, int]] = msgspec.field(default_factory=list)
    # The sum of `sales` in integer micro-units (exact in any order of additions and removals), so sales_24h costs
    # the few lines between the lateness horizon and the window's start, not every line of the day (tens of
    # thousands at a busy store). None: not known (an older snapshot), summed again.
    sales_micros: int | None = None


def _sorted_remove(items: list, item) -> None:
    del items[bisect_left(items, item)]


def _set_latest(st: StoreState, cid: int, t: float | None) -> None:
    """Customer `cid`'s latest basket time is now `t` (None: it has no basket left)."""
    old = st.latest.get(cid)
    if old == t:
        return
    if old is not None:
        _sorted_remove(st.customers_by_time, (old, cid))
    if t is None:
        del st.latest[cid]
    else:
        st.latest[cid] = t
        insort(st.customers_by_time, (t, cid))


def store_line(st: StoreState, t: float, basket_id: int | None, customer_id: int | None, sales_value: float) -> None:
    """Fold one purchase line into the store's traffic state (not as_of / nc: the callers do)."""
    sales = st.sales
    if st.sales_micros is None:
        st.sales_micros = _micros_sum(sales)
    if not sales or t >= sales[-1][0]:
        sales.append((t, sales_value))
    else:  # out of order (within the lateness bound)
        insort(sales, (t, sales_value))
    st.sales_micros += round(sales_value * 1e6)
    if basket_id is None:
        return
    if len(st.by_time) != len(st.baskets):
        _reindex(st)
    b = st.baskets.get(basket_id)
    if b is None:
        st.baskets[basket_id] = [t, customer_id]
        insort(st.by_time, (t, basket_id))
        if customer_id is not None:
            latest = st.latest.get(customer_id)
            if latest is None or t > latest:
                _set_latest(st, customer_id, t)
    elif t < b[0]:  # an earlier line of a basket seen before: its first time moves back
        old, b[0] = b[0], t
        _sorted_remove(st.by_time, (old, basket_id))
        insort(st.by_time, (t, basket_id))
        cid = b[1]
        if cid is not None and st.latest.get(cid) == old:
            _set_latest(st, cid, max(bt for bt, bc in st.baskets.values() if bc == cid))


def _reindex(st: StoreState) -> None:
    st.by_time = sorted((t, bid) for bid, (t, _) in st.baskets.items())
    st.latest = {}
    for t, cid in st.baskets.values():
        if cid is not None and t > st.latest.get(cid, -math.inf):
            st.latest[cid] = t
    st.customers_by_time = sorted((t, cid) for cid, t in st.latest.items())
    st.sales.sort()


def store_apply(st: StoreState, e: Ev) -> bool:
    """Fold a purchase into the store's traffic; True if store_traffic changed."""
    if e.kind != "purchase":
        return False
    t = e.t
    st.nc = None
    if t > st.as_of:
        st.as_of = t
    store_line(st, t, e.basket_id, e.customer_id, e.sales_value)
    return True


def traffic_row(st: StoreState, as_of: float) -> Values:
    """Baskets, distinct customers and sales in (as_of - 1 h, as_of] and (as_of - 24 h, as_of]; as_of is at or
    after every event time in the state (the store's newest event, or a later refresh). Counted by bisection in
    the sorted indexes: a customer is in a window iff its latest basket is."""
    if len(st.by_time) != len(st.baskets):
        _reindex(st)
    lo1, lo24 = as_of - HOUR, as_of - DAY
    horizon = lo24 - LATENESS_S
    by_time, customers = st.by_time, st.customers_by_time
    if by_time and by_time[0][0] <= horizon:  # forget what no window can hold again
        cut = bisect_right(by_time, (horizon, math.inf))
        for _, bid in by_time[:cut]:
            del st.baskets[bid]
        del by_time[:cut]
        cut = bisect_right(customers, (horizon, math.inf))
        for _, cid in customers[:cut]:
            del st.latest[cid]
        del customers[:cut]
    sales = st.sales
    total = st.sales_micros
    if total is None:
        total = _micros_sum(sales)
    if sales and sales[0][0] <= horizon:
        cut = bisect_right(sales, (horizon, math.inf))
        total -= _micros_sum(sales[:cut])
        del sales[:cut]
    st.sales_micros = total
    n, nc = len(by_time), len(customers)
    in24 = bisect_right(sales, (lo24, math.inf))  # lines before the 24 h window: only those within lateness
    return {"baskets_1h": n - bisect_right(by_time, (lo1, math.inf)),
            "customers_1h": nc - bisect_right(customers, (lo1, math.inf)),
            "baskets_24h": n - bisect_right(by_time, (lo24, math.inf)),
            "customers_24h": nc - bisect_right(customers, (lo24, math.inf)),
            "sales_24h": round((total - _micros_sum(sales[:in24])) / 1e6, 6)}


def _micros_sum(sales: list[tuple[float, float]]) -> int:
    return sum(round(v * 1e6) for _, v in sales)


# ---- store x product ------------------------------------------------------------------------------------------


class StoreProductState(msgspec.Struct, array_like=True):
    as_of: float = 0.0
    sales: list[tuple[float, int]] = msgspec.field(default_factory=list)  # (time, units)
    last_sold_at: float | None = None
    inv_on_hand: int | None = None  # the latest inventory count
    inv_t: float = NO_TIME  # its event time (none yet: before anything)
    nc: float | None = None


def store_product_apply(st: StoreProductState, e: Ev) -> bool:
    t = e.t
    st.nc = None
    if e.kind == "purchase":
        st.sales.append((t, e.quantity))
        if st.last_sold_at is None or t > st.last_sold_at:
            st.last_sold_at = t
    elif e.kind == "inventory":
        if t < st.inv_t:
            return False  # an older count than the one we hold
        st.inv_t, st.inv_on_hand = t, e.on_hand
    else:
        return False
    if t > st.as_of:
        st.as_of = t
    return True


def store_events_apply(stores: dict[int, StoreState], pairs: dict[int, StoreProductState], dirty_stores: set[int],
                       dirty_pairs: set[int], events: Iterable[Ev]) -> None:
    """store_apply and store_product_apply of a store shard's events (pair key: store_id << 32 | product_id), the
    changed stores and pairs added to the dirty sets: the same state as the two functions event by event (a test
    checks), with a purchase's two updates inlined (one per purchase event; no calls, no repeated kind checks)."""
    new_store, new_pair = StoreState, StoreProductState
    for e in events:
        kind = e.kind
        if kind == "purchase":
            t = e.t
            sid = e.store_id
            st = stores.get(sid)
            if st is None:
                st = stores[sid] = new_store()
            st.nc = None
            if t > st.as_of:
                st.as_of = t
            store_line(st, t, e.basket_id, e.customer_id, e.sales_value)
            dirty_stores.add(sid)
            pid = e.product_id
            if pid is not None:
                key = (sid << 32) | pid
                sp = pairs.get(key)
                if sp is None:
                    sp = pairs[key] = new_pair()
                sp.nc = None
                sp.sales.append((t, e.quantity))
                last = sp.last_sold_at
                if last is None or t > last:
                    sp.last_sold_at = t
                if t > sp.as_of:
                    sp.as_of = t
                dirty_pairs.add(key)
        elif kind == "inventory" and e.product_id is not None:
            key = (e.store_id << 32) | e.product_id
            sp = pairs.get(key)
            if sp is None:
                sp = pairs[key] = new_pair()
            if store_product_apply(sp, e):
                dirty_pairs.add(key)


def in_stock_probability(sales_per_day: float, days_since_sale: float | None) -> float:
    """P(in stock | no sale for `days_since_sale`), sales as a Poisson process while in stock.

    Out of stock, nothing sells; in stock, no sale over g days has probability exp(-rate * g). Bayes with a prior
    of IN_STOCK_PRIOR: a fast seller that stopped selling is probably out; a slow seller's silence says little.
    """
    if days_since_sale is None:
        return IN_STOCK_PRIOR
    quiet = math.exp(-sales_per_day * max(days_since_sale, 0.0))
    return IN_STOCK_PRIOR * quiet / (IN_STOCK_PRIOR * quiet + (1.0 - IN_STOCK_PRIOR))


_IN_STOCK_NO_RECENT_SALES = in_stock_probability(0.0, 1.0)

# The order of store_product_values (the view's schema order in feature_repo/features.py).
STORE_PRODUCT_FEATURES = ("units_7d", "units_28d", "last_sold_at", "on_hand", "in_stock_prob", "on_display",
                          "in_mailer")


def store_product_row(st: StoreProductState, as_of: float) -> Values:
    return dict(zip(STORE_PRODUCT_FEATURES, store_product_values(st, as_of), strict=True))


def store_product_values(st: StoreProductState, as_of: float) -> tuple:
    """store_product_row as a tuple in STORE_PRODUCT_FEATURES order: this is the row most replays write (one per
    store x product pair touched per flush, and every pair at the end), so no dict is built for it."""
    lo7, lo28 = as_of - 7 * DAY, as_of - 28 * DAY
    horizon = lo28 - LATENESS_S
    inv_t, inv_on_hand = st.inv_t, st.inv_on_hand
    if inv_on_hand is not None and inv_t < horizon:
        horizon = inv_t  # sales since the last count still matter for on_hand
    sales = st.sales
    if sales and sales[0][0] <= horizon:
        sales = st.sales = [s for s in sales if s[0] > horizon]
    u7 = u28 = n28 = sold_since_count = 0
    for t, q in sales:
        if t > inv_t:
            sold_since_count += q
        if lo28 < t <= as_of:
            u28 += q
            n28 += 1
            if t > lo7:
                u7 += q
    last_sold_at = st.last_sold_at
    if inv_on_hand is not None:
        on_hand: int | None = inv_on_hand - sold_since_count
        if on_hand > 0:
            prob = 1.0
        else:
            on_hand, prob = 0, 0.0
    else:
        on_hand = None
        if last_sold_at is None:
            prob = IN_STOCK_PRIOR
        elif n28 == 0:
            prob = _IN_STOCK_NO_RECENT_SALES  # exp(-0 * g) == 1: the same for every g
        else:
            prob = in_stock_probability(n28 / 28.0, (as_of - last_sold_at) / DAY)
    # on_display / in_mailer: promotions are batch data, not known to the stream
    return (u7, u28, last_sold_at, on_hand, prob, None, None)


# ---- the gate: duplicates and lateness ---------------------------------------------------------------------------


class GateState(msgspec.Struct, array_like=True):
    max_t: float = NO_TIME  # the greatest event time seen (none yet: before anything)
    seen: dict[str, float] = msgspec.field(default_factory=dict)  # event_id -> time, not yet past lateness
    counters: dict[str, int] = msgspec.field(
        default_factory=lambda: {"processed": 0, "duplicate": 0, "late": 0, "invalid": 0})
    # Drop the ids past lateness from `seen` once it holds this many; then at twice what is left (at least
    # SEEN_PRUNE_MIN): one O(n) pass per doubling. A fixed bound rescanned the whole dict at every batch once
    # more ids than that were within lateness (600 s of event time: 3M ids at 5,000 events/s), 36 % of the live
    # process at a sustained 2,500 events/s.
    prune_at: int = SEEN_PRUNE_MIN  # last: a snapshot from before it decodes

    @property
    def watermark(self) -> float:
        return self.max_t - LATENESS_S


def gate_apply(st: GateState, events: Iterable[Ev]) -> tuple[list[Ev], list[tuple[str, Ev]]]:
    """Split events into accepted ones and rejected (reason, event); duplicates are only counted."""
    accepted: list[Ev] = []
    late: list[tuple[str, Ev]] = []
    seen = st.seen
    counters = st.counters
    for e in events:
        if e.event_id in seen:
            counters["duplicate"] += 1
            continue
        if e.t < st.max_t - LATENESS_S:
            counters["late"] += 1
            late.append((f"late: {e.t - st.max_t:.0f}s behind the newest event (lateness bound {LATENESS_S:.0f}s)", e))
            continue
        if e.t > st.max_t:
            st.max_t = e.t
        seen[e.event_id] = e.t
        accepted.append(e)
    counters["processed"] += len(accepted)
    if len(seen) > st.prune_at:
        bound = st.max_t - LATENESS_S
        st.seen = {k: t for k, t in seen.items() if t >= bound}
        st.prune_at = max(SEEN_PRUNE_MIN, 2 * len(st.seen))
    return accepted, late
