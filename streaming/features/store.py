"""The store_traffic view (per store; see streaming/features/__init__.py): baskets and customers over 1 h / 24 h,
sales over 24 h counted to the minute; and the shard's update of both store views at once (store_events_apply).
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import msgspec
import numpy as np

from streaming.features.baskets import NO_CUSTOMER, Baskets
from streaming.features.event import DAY, HOUR, LATENESS_S, Ev, Values
from streaming.features.small_pairs import SmallPairs
from streaming.features.store_product import PAIR_SHIFT, StoreProductState, pair_sale, store_product_apply
from streaming.features.windows import GRAIN_S, fold_before, sorted_next_change


class StoreState(msgspec.Struct, array_like=True):
    as_of: float = 0.0
    # basket -> (first time, customer): only in a snapshot from before the baskets' columns (`bk`), moved there at
    # the state's first use (_reindex)
    baskets: dict[int, tuple[float, int | None]] = msgspec.field(default_factory=dict)
    # (time, sales_value) lines, sorted: only in a snapshot from before lines joined their minute at once (below);
    # folded at the state's next row
    sales: list[tuple[float, float]] = msgspec.field(default_factory=list)
    nc: float | None = None
    # Indexes of the baskets, so a traffic row costs O(log n) instead of a scan of the 24 h window (live recomputes
    # a store's row at every flush that touched it): each customer's latest basket time, and (latest time,
    # customer) sorted. Rebuilt from the baskets at the state's first use after a resume (`ix`). `by_time`: only in
    # a snapshot from before the baskets' columns (always empty).
    by_time: list = msgspec.field(default_factory=list)
    latest: dict[int, float] = msgspec.field(default_factory=dict)
    customers_by_time: list[tuple[float, int]] = msgspec.field(default_factory=list)
    # The sum of `sales` in integer micro-units (exact in any order of additions and removals), so sales_24h costs
    # the few lines between the lateness horizon and the window's start, not every line of the day (tens of
    # thousands at a busy store). None: not known (an older snapshot), summed again. It covers `sales_folded` too.
    sales_micros: int | None = None
    # The sales per minute (minute start, micro-units), sorted: sales_24h counts time to the minute
    # (streaming/features/windows.py), so a line joins its minute at once (a late one merges at its place) and a
    # store holds at most the 1,440 minutes of a day and the lateness bound's, however busy. Appended: an older
    # snapshot decodes with none.
    sales_folded: list[tuple[float, int]] = msgspec.field(default_factory=list)
    # the baskets of the windows (each while its time is within 24 hours and the lateness bound), their customer
    # (NO_CUSTOMER: none): streaming/features/baskets.py; appended, as `ix` (the customer indexes are built)
    bk: Baskets = msgspec.field(default_factory=Baskets)
    ix: bool = False


def _sorted_remove(items: list, item) -> None:
    del items[bisect_left(items, item)]


def _count_after(order: list[tuple], lo: float) -> int:
    """How many entries are later than lo: all of them when the first is (a window longer than what is held), with
    no bisection."""
    if not order or order[0][0] > lo:
        return len(order)
    return len(order) - bisect_right(order, (lo, math.inf))


def _set_latest(st: StoreState, cid: int, t: float | None) -> None:
    """Customer `cid`'s latest basket time is now `t` (None: it has no basket left). An entry after the last
    (events in time order: nearly all) is appended without a bisection, whose probes into a long list of tuples
    spread over the heap miss the CPU's caches; so are the baskets' (store_line)."""
    old = st.latest.get(cid)
    if old == t:
        return
    if old is not None:
        _sorted_remove(st.customers_by_time, (old, cid))
    if t is None:
        del st.latest[cid]
    else:
        st.latest[cid] = t
        order, entry = st.customers_by_time, (t, cid)
        if not order or entry >= order[-1]:  # in time order: no bisection
            order.append(entry)
        else:
            insort(order, entry)


def store_line(st: StoreState, t: float, basket_id: int | None, customer_id: int | None, sales_value: float) -> None:
    """Fold one purchase line into the store's traffic state (not as_of / nc: the callers do)."""
    sales = st.sales
    micros = round(sales_value * 1e6)  # before any change: a value that cannot be rounded changes nothing
    if st.sales_micros is None:
        st.sales_micros = _micros_sum(sales) + _folded_sum(st.sales_folded)
    _add_to_minute(st.sales_folded, t // GRAIN_S * GRAIN_S, micros)  # sales_24h counts minutes: no line is kept
    st.sales_micros += micros
    if basket_id is None:
        return
    if not st.ix:
        _reindex(st)
    bk = st.bk
    old = bk.time_of(basket_id)
    if old is None:
        bk.add(basket_id, t, NO_CUSTOMER if customer_id is None else customer_id)
        if customer_id is not None:
            latest = st.latest.get(customer_id)
            if latest is None or t > latest:
                _set_latest(st, customer_id, t)
    elif t < old:  # an earlier line of a basket seen before: its first time moves back (its customer: the first's)
        cid = bk.value(basket_id, old)
        bk.move(basket_id, old, t)
        if cid != NO_CUSTOMER and st.latest.get(cid) == old:
            _set_latest(st, cid, _latest_basket(bk, cid))


def _latest_basket(bk: Baskets, cid: int) -> float:
    """The latest time of customer `cid`'s baskets (it has one): a scan of the columns, only when a customer's
    latest basket moves back."""
    customers, times = np.frombuffer(bk.values, np.int64), np.frombuffer(bk.times, np.float64)
    latest = float(times[customers == cid].max())
    del customers, times  # the buffer exports end: the columns may be resized again
    return latest


@contextmanager
def indexes_left_out(states: Iterable[StoreState]) -> Iterator[None]:
    """While a snapshot is encoded: the customer indexes of the baskets are left out of it (latest,
    customers_by_time), and rebuilt by _reindex at the state's first use after a resume."""
    held = [(st, st.latest, st.customers_by_time) for st in states if st.ix and st.latest]
    for st, *_ in held:
        st.latest, st.customers_by_time, st.ix = {}, [], False
    try:
        yield
    finally:
        for st, latest, customers_by_time in held:
            st.latest, st.customers_by_time, st.ix = latest, customers_by_time, True


def _reindex(st: StoreState) -> None:
    """The customer indexes from the baskets (and a snapshot's baskets from before the columns into them)."""
    bk = st.bk
    for bid, (t, cid) in sorted(st.baskets.items(), key=lambda kv: kv[0]):
        bk.add(bid, t, NO_CUSTOMER if cid is None else cid)
    st.baskets, st.by_time = {}, []
    st.latest = {}
    for t, cid in zip(bk.times, bk.values, strict=True):  # time order: the last seen is the latest
        if cid != NO_CUSTOMER:
            st.latest[cid] = t
    st.customers_by_time = sorted((t, cid) for cid, t in st.latest.items())
    st.sales.sort()
    st.ix = True


def store_apply(st: StoreState, e: Ev) -> bool:
    """Fold a purchase into the store's traffic; True if store_traffic changed."""
    if e.kind != "purchase":
        return False
    t = e.t
    store_line(st, t, e.basket_id, e.customer_id, e.sales_value)
    st.nc = None
    if t > st.as_of:
        st.as_of = t
    return True


def traffic_row(st: StoreState, as_of: float) -> Values:
    """Baskets, distinct customers and sales in (as_of - 1 h, as_of] and (as_of - 24 h, as_of]; as_of is at or
    after every event time in the state (the store's newest event, or a later refresh). Counted by bisection in
    the sorted indexes: a customer is in a window iff its latest basket is."""
    if not st.ix:
        _reindex(st)
    lo1, lo24 = as_of - HOUR, as_of - DAY
    horizon = lo24 - LATENESS_S
    bk, customers = st.bk, st.customers_by_time
    if bk.times and bk.times[0] <= horizon:  # forget what no window can hold again
        bk.forget_through(horizon)
        cut = bisect_right(customers, (horizon, math.inf))
        for _, cid in customers[:cut]:
            del st.latest[cid]
        del customers[:cut]
    sales, folded = st.sales, st.sales_folded
    total = st.sales_micros
    if total is None:
        total = _micros_sum(sales) + _folded_sum(folded)
    before = fold_before(as_of)
    if sales and sales[0][0] < before:
        _sales_fold(st, before)
    if sales and sales[0][0] <= horizon:
        cut = bisect_right(sales, (horizon, math.inf))
        total -= _micros_sum(sales[:cut])
        del sales[:cut]
    if folded and folded[0][0] <= horizon:
        cut = bisect_right(folded, (horizon, math.inf))
        total -= _folded_sum(folded[:cut])
        del folded[:cut]
    st.sales_micros = total
    # what is held but before the 24 h window: lines within lateness of its start, and their minutes
    out = _micros_sum(sales[:len(sales) - _count_after(sales, lo24)])
    if folded:
        out += _folded_sum(folded[:len(folded) - _count_after(folded, lo24)])
    return {"baskets_1h": bk.count_after(lo1),
            "customers_1h": _count_after(customers, lo1),
            "baskets_24h": bk.count_after(lo24),
            "customers_24h": _count_after(customers, lo24),
            "sales_24h": round((total - out) / 1e6, 6)}


def _micros_sum(sales: list[tuple[float, float]]) -> int:
    return sum(round(v * 1e6) for _, v in sales)


def _folded_sum(folded: list[tuple[float, int]]) -> int:
    return sum(micros for _, micros in folded)


def _sales_fold(st: StoreState, before: float) -> None:
    """Fold the sales lines earlier than `before` (windows.fold_before) into per-minute entries (the total is
    unchanged: the same micro-units, per minute)."""
    sales, folded = st.sales, st.sales_folded
    cut = bisect_left(sales, (before,))
    for t, v in sales[:cut]:
        _add_to_minute(folded, t // GRAIN_S * GRAIN_S, round(v * 1e6))
    del sales[:cut]


def _add_to_minute(folded: list[tuple[float, int]], m: float, micros: int) -> None:
    if folded and folded[-1][0] == m:
        folded[-1] = (m, folded[-1][1] + micros)
    elif not folded or m > folded[-1][0]:
        folded.append((m, micros))
    else:  # out of order (within the lateness bound): merged at its place
        i = bisect_left(folded, (m,))
        if i < len(folded) and folded[i][0] == m:
            folded[i] = (m, folded[i][1] + micros)
        else:
            folded.insert(i, (m, micros))


def store_next_change(st: StoreState) -> float:
    """next_change of the baskets' first times (1 h, 24 h) and the sales' times (24 h), by bisection of the
    sorted indexes instead of a scan of a day of baskets and lines at every refresh check of a changed store."""
    if not st.ix:
        _reindex(st)
    nc = min(sorted_next_change(st.bk.times, st.as_of, (HOUR, DAY), columns=True),
             sorted_next_change(st.sales, st.as_of, (DAY,), grain=True))
    if st.sales_folded:
        nc = min(nc, sorted_next_change(st.sales_folded, st.as_of, (DAY,)))
    return nc


def store_events_apply(stores: dict[int, StoreState], pairs: dict[int, StoreProductState], small: SmallPairs,
                       dirty_stores: set[int], dirty_pairs: set[int], events: Iterable[Ev]
                       ) -> list[tuple[Ev, Exception]]:
    """store_apply and store_product_apply of a store shard's events (pair key: pair_key(store_id, product_id)), the
    changed stores and pairs added to the dirty sets: the same state as the two functions event by event (a test
    checks), with a purchase's two updates inlined (one per purchase event; no calls, no repeated kind checks).
    A pair starts in `small` (streaming/features/small_pairs.py) and becomes a state in `pairs` at a sale it has no
    room for or at an inventory count. Returns the events whose update raised, with the exception: the others are
    applied (a store or pair created for a failed event is removed again, a small pair it promoted put back)."""
    new_store, new_pair = StoreState, StoreProductState
    failed: list[tuple[Ev, Exception]] = []
    for e in events:
        made_store = made_pair = None  # created for this event: removed again if it fails
        promoted: StoreProductState | None = None  # a small pair as it was before this event made it a state
        try:
            kind = e.kind
            if kind == "purchase":
                t = e.t
                sid = e.store_id
                st = stores.get(sid)
                if st is None:
                    st = stores[sid] = new_store()
                    made_store = sid
                store_line(st, t, e.basket_id, e.customer_id, e.sales_value)  # first: it checks before it changes
                st.nc = None
                if t > st.as_of:
                    st.as_of = t
                dirty_stores.add(sid)
                pid = e.product_id
                if pid is not None:
                    key = (sid << PAIR_SHIFT) | pid
                    sp = pairs.get(key)
                    if sp is None:
                        if small.sale(key, t, e.quantity):  # a new pair, or a small one with room
                            dirty_pairs.add(key)
                            continue
                        promoted = small.state(key)
                        sp = pairs[key] = small.pop_state(key)
                    sp.nc = None
                    pair_sale(sp, t, e.quantity)
                    last = sp.last_sold_at
                    if last is None or t > last:
                        sp.last_sold_at = t
                    if t > sp.as_of:
                        sp.as_of = t
                    dirty_pairs.add(key)
            elif kind == "inventory" and e.product_id is not None:
                key = (e.store_id << PAIR_SHIFT) | e.product_id
                sp = pairs.get(key)
                if sp is None:
                    if key in small:
                        promoted = small.state(key)
                        sp = pairs[key] = small.pop_state(key)
                    else:
                        sp = pairs[key] = new_pair()
                        made_pair = key
                if store_product_apply(sp, e):
                    dirty_pairs.add(key)
        except Exception as exc:  # one event's failure must not stop the others
            failed.append((e, exc))
            if made_store is not None:
                del stores[made_store]
                dirty_stores.discard(made_store)
            if made_pair is not None:
                del pairs[made_pair]
                dirty_pairs.discard(made_pair)
            if promoted is not None:
                pairs.pop(key, None)
                small.put(key, promoted)
    return failed
