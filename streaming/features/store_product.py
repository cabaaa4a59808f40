"""The store_product view (per store x product pair; see streaming/features/__init__.py): units over 7 and 28 days
counted to the minute, the last sale, on_hand from inventory counts, the in-stock probability.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Sequence

import msgspec

from pantry.events import PRODUCT_ID_BITS
from streaming.features.event import DAY, LATENESS_S, NO_TIME, Ev, Values
from streaming.features.windows import GRAIN_S, Window, fold_before, sorted_next_change, window_slide_columns

IN_STOCK_PRIOR = 0.9  # P(in stock) before looking at sales; see in_stock_probability
# The store x product pair key: store << PAIR_SHIFT | product, one int64 (store < 2^19, product < 2^44: the bounds
# of pantry.events), so distinct pairs never collide and the key fits array("q") and msgpack's int64.
PAIR_SHIFT = PRODUCT_ID_BITS
PAIR_MASK = (1 << PAIR_SHIFT) - 1


def pair_key(store_id: int, product_id: int) -> int:
    return (store_id << PAIR_SHIFT) | product_id


def pair_ids(key: int) -> tuple[int, int]:
    """(store_id, product_id) of a pair key."""
    return key >> PAIR_SHIFT, key & PAIR_MASK


class Times(array):
    """A column of times (float64, 8 B a value where a float in a tuple in a list costs ~88 B with its tuple): a
    pair holds one value per sale of its last ~10 minutes and per minute of its 28 days (docs/DECISIONS.md "Small
    pairs in columns"). In a snapshot: its bytes (encode_column), native byte order."""

    __slots__ = ()

    def __new__(cls, values=()):
        return super().__new__(cls, "d", values)


class Counts(array):
    """A column of int64 counts (units, sales): as Times."""

    __slots__ = ()

    def __new__(cls, values=()):
        return super().__new__(cls, "q", values)


def encode_column(obj):
    """msgspec's enc_hook for states that hold columns (a store shard's snapshot): a column as its bytes."""
    if isinstance(obj, array):
        return obj.tobytes()
    raise NotImplementedError(f"cannot encode {type(obj).__name__}")


def decode_column(typ, obj):
    """msgspec's dec_hook for states that hold columns: a column from its bytes."""
    if typ in (Times, Counts) and isinstance(obj, bytes):
        return typ(obj)
    raise NotImplementedError(f"cannot decode {typ}")


class PairMinutes(msgspec.Struct, array_like=True):
    """A pair's folded sales (streaming/features/windows.py: the windows count time to the minute), sorted by
    minute: minute starts `ms`, their units `mu` and sales `mn`; and their running sums, which slide to the same cuts
    as the exact sales' at every row. `entries`: (minute start, units, sales) tuples, only in a snapshot from before
    the columns (migrate_pair)."""

    entries: list[tuple[float, int, int]] | None = None
    w7: Window = msgspec.field(default_factory=Window)
    w28: Window = msgspec.field(default_factory=Window)
    ms: Times = msgspec.field(default_factory=Times)
    mu: Counts = msgspec.field(default_factory=Counts)
    mn: Counts = msgspec.field(default_factory=Counts)


class StoreProductState(msgspec.Struct, array_like=True):
    as_of: float = 0.0
    # (time, units) tuples: only in a snapshot from before the columns `ts` / `qs` (migrate_pair)
    sales: list[tuple[float, int]] | None = None
    last_sold_at: float | None = None
    inv_on_hand: int | None = None  # the latest inventory count
    inv_t: float = NO_TIME  # its event time (none yet: before anything)
    nc: float | None = None
    # Running sums over the sales (streaming/features/windows.py), so a row and the next-change check cost O(log n)
    # and not a scan of 28 days of sales (a hot pair sells at every probe of the bench). Only past PAIR_INDEX_FROM
    # sales: most pairs hold a few, which a scan serves faster than the sums cost to keep (and without two
    # Windows each). Appended: an older snapshot decodes with ix False, as a small pair.
    ix: bool = False
    w7: Window | None = None  # units and sales with t > w7.cut (the 7-day window's start), if ix
    w28: Window | None = None
    # units of the sales after inv_t (on_hand = inv_on_hand - since): exact while a count is known (the sales
    # forgotten are all at or before it); without one it is not read, and every count sums it again
    since: int = 0
    # An indexed pair's sales older than the lateness bound, per minute (None until its first are): so a pair holds
    # its last ~10 minutes of sales and at most one entry per minute of the 28 days before, however fast it sells.
    # One optional field, not three: most pairs never fold, and each field costs every pair. Appended: an older
    # snapshot decodes with none, and folds at its next row.
    minutes: PairMinutes | None = None
    # The exact sales as two columns: times `ts` (sorted if `ix`, else in arrival order) and units `qs`
    ts: Times = msgspec.field(default_factory=Times)
    qs: Counts = msgspec.field(default_factory=Counts)


PAIR_INDEX_FROM = 8  # sales held before a pair keeps running sums (below: rows scan, as cheap as the sums)


def migrate_pair(sp: StoreProductState) -> None:
    """A state from a snapshot from before the columns: its sales (and folded minutes) moved into them."""
    if sp.sales is not None:
        sp.ts, sp.qs = Times(t for t, _ in sp.sales), Counts(q for _, q in sp.sales)
        sp.sales = None
    minutes = sp.minutes
    if minutes is not None and minutes.entries is not None:
        minutes.ms = Times(m for m, _, _ in minutes.entries)
        minutes.mu, minutes.mn = Counts(u for _, u, _ in minutes.entries), Counts(n for _, _, n in minutes.entries)
        minutes.entries = None


def _pair_fold(sp: StoreProductState, before: float) -> None:
    """Fold the exact sales earlier than `before` (windows.fold_before) into per-minute entries, moving their units
    between the running sums (a sale's minute may have left a window its exact time was still in)."""
    ts, qs, minutes = sp.ts, sp.qs, sp.minutes
    cut = bisect_left(ts, before)
    if minutes is None:  # the folded sums start where the exact ones are: both slide to the same cut at every row
        minutes = sp.minutes = PairMinutes(w7=Window(cut=sp.w7.cut), w28=Window(cut=sp.w28.cut))
    ms, mu, mn = minutes.ms, minutes.mu, minutes.mn
    pairs = ((sp.w7, minutes.w7), (sp.w28, minutes.w28))
    for k in range(cut):
        t, q = ts[k], qs[k]
        m = t // GRAIN_S * GRAIN_S
        for w, fw in pairs:
            if t > w.cut:
                w.n -= 1
                w.total -= q
            if m > fw.cut:
                fw.n += 1
                fw.total += q
        if ms and ms[-1] == m:
            mu[-1] += q
            mn[-1] += 1
        elif not ms or m > ms[-1]:
            ms.append(m)
            mu.append(q)
            mn.append(1)
        else:  # not in time order (a state from before this fold was kept): merge at its place
            i = bisect_left(ms, m)
            if i < len(ms) and ms[i] == m:
                mu[i] += q
                mn[i] += 1
            else:
                ms.insert(i, m)
                mu.insert(i, q)
                mn.insert(i, 1)
    del ts[:cut]
    del qs[:cut]


def _pair_index(sp: StoreProductState) -> None:
    """Sort the sales and sum them from scratch: the pair holds more than PAIR_INDEX_FROM sales."""
    ts, qs = sp.ts, sp.qs
    order = sorted(range(len(ts)), key=lambda k: (ts[k], qs[k]))  # as the (time, units) tuples sorted
    sp.ts, sp.qs = Times(ts[k] for k in order), Counts(qs[k] for k in order)
    units = sum(qs)
    sp.w7, sp.w28 = Window(n=len(ts), total=units), Window(n=len(ts), total=units)
    sp.since = sum(q for t, q in zip(ts, qs, strict=True) if t > sp.inv_t)
    sp.ix = True


def pair_sale(sp: StoreProductState, t: float, q: int) -> None:
    """A sale joins the list (and, indexed, its place in time order and every running sum that holds it)."""
    ts = sp.ts
    if not sp.ix:
        ts.append(t)
        sp.qs.append(q)
        if len(ts) > PAIR_INDEX_FROM:
            _pair_index(sp)
        return
    if not ts or t >= ts[-1]:
        ts.append(t)
        sp.qs.append(q)
    else:  # out of order (within the lateness bound): after the sales of the same time
        i = bisect_right(ts, t)
        ts.insert(i, t)
        sp.qs.insert(i, q)
    w = sp.w28  # window_add of both windows, inlined: this runs once per purchase line
    if t > w.cut:
        w.n += 1
        w.total += q
    w = sp.w7
    if t > w.cut:
        w.n += 1
        w.total += q
    if t > sp.inv_t:
        sp.since += q


def _pair_count(sp: StoreProductState, t: float, on_hand: int | None) -> None:
    """A newer inventory count: the units sold since are those after it (the count is within the lateness bound
    of the newest event, so this sums at most the sales of the last 10 minutes)."""
    sp.inv_t, sp.inv_on_hand = t, on_hand
    if sp.ix:
        sp.since = sum(sp.qs[bisect_right(sp.ts, t):])


def store_product_apply(st: StoreProductState, e: Ev) -> bool:
    t = e.t
    st.nc = None
    if e.kind == "purchase":
        pair_sale(st, t, e.quantity)
        if st.last_sold_at is None or t > st.last_sold_at:
            st.last_sold_at = t
    elif e.kind == "inventory":
        if t < st.inv_t:
            return False  # an older count than the one we hold
        _pair_count(st, t, e.on_hand)
    else:
        return False
    if t > st.as_of:
        st.as_of = t
    return True




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

# What store_product_values returns, in its order (the sink checks the names against the registry's view).
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
    if not st.ix:
        return _small_pair_values(st, as_of, lo7, lo28, horizon)
    ts, qs, w7, w28 = st.ts, st.qs, st.w7, st.w28
    before = fold_before(as_of)
    if ts and ts[0] < before:
        _pair_fold(st, before)
    window_slide_columns(w7, ts, lo7, qs)  # first: the sales forgotten below have left both windows
    window_slide_columns(w28, ts, lo28, qs)
    if ts and ts[0] <= horizon:  # forget what no window (nor on_hand) can need again
        cut = bisect_right(ts, horizon)
        del ts[:cut]
        del qs[:cut]
    u7, u28, n28 = w7.total, w28.total, w28.n
    minutes = st.minutes
    if minutes is not None:
        ms, mu, mn, fw7, fw28 = minutes.ms, minutes.mu, minutes.mn, minutes.w7, minutes.w28
        window_slide_columns(fw7, ms, lo7, mu, mn)
        window_slide_columns(fw28, ms, lo28, mu, mn)
        if ms and ms[0] <= horizon:
            cut = bisect_right(ms, horizon)
            del ms[:cut]
            del mu[:cut]
            del mn[:cut]
        u7, u28, n28 = u7 + fw7.total, u28 + fw28.total, n28 + fw28.n
    if ts and ts[-1] > as_of:  # a row asked for a time before some sales (not the flow's: as_of is newest)
        for k in range(bisect_right(ts, as_of), len(ts)):
            u28 -= qs[k]
            n28 -= 1
            if ts[k] > lo7:
                u7 -= qs[k]
    return _pair_values(st.inv_on_hand, st.last_sold_at, as_of, u7, u28, n28, st.since)


def _small_pair_values(st: StoreProductState, as_of: float, lo7: float, lo28: float, horizon: float) -> tuple:
    """store_product_values of a pair without running sums: a scan of its few sales (in any order)."""
    ts, qs = st.ts, st.qs
    if ts and ts[0] <= horizon:  # as before the indexes: the columns are in arrival order
        kept = [k for k, t in enumerate(ts) if t > horizon]
        ts = st.ts = Times(ts[k] for k in kept)
        qs = st.qs = Counts(qs[k] for k in kept)
    return scan_values(ts, qs, 0, len(ts), st.inv_t, st.inv_on_hand, st.last_sold_at, as_of, lo7, lo28)


def scan_values(times: Sequence[float], units: Sequence[int], lo: int, hi: int, inv_t: float,
                inv_on_hand: int | None, last_sold_at: float | None, as_of: float, lo7: float, lo28: float) -> tuple:
    """store_product_values from a scan of a pair's sales, (times[i], units[i]) for i in [lo, hi), in any order (a
    small pair's; those before the lateness horizon are in no window, whether forgotten or not)."""
    # the windows count time to the minute (windows.py): a sale is in the window starting at lo while the start of
    # its minute is after lo, that is from the first whole minute after lo on
    from7, from28 = (lo7 // GRAIN_S + 1) * GRAIN_S, (lo28 // GRAIN_S + 1) * GRAIN_S
    u7 = u28 = n28 = sold_since_count = 0
    for i in range(lo, hi):
        t, q = times[i], units[i]
        if t > inv_t:
            sold_since_count += q
        if from28 <= t <= as_of:
            u28 += q
            n28 += 1
            if t >= from7:
                u7 += q
    return _pair_values(inv_on_hand, last_sold_at, as_of, u7, u28, n28, sold_since_count)


def _pair_values(inv_on_hand: int | None, last_sold_at: float | None, as_of: float, u7: int, u28: int, n28: int,
                 sold_since_count: int) -> tuple:
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


_WEEK, _FOUR_WEEKS = 7 * DAY, 28 * DAY


def store_product_next_change(st: StoreProductState) -> float:
    """next_change(the sales' minute starts, as_of, (7 d, 28 d)): by bisection of the sorted sales (and folded
    minutes) if indexed, else a scan of the few (a final refresh asks it of every store x product pair, live
    refreshes of every pair whose row changed)."""
    if st.ix:
        nc = sorted_next_change(st.ts, st.as_of, (_WEEK, _FOUR_WEEKS), grain=True, columns=True)
        if st.minutes is not None and st.minutes.ms:
            nc = min(nc, sorted_next_change(st.minutes.ms, st.as_of, (_WEEK, _FOUR_WEEKS), columns=True))
        return nc
    return scan_next_change(st.ts, 0, len(st.ts), st.as_of)


def scan_next_change(times: Sequence[float], lo: int, hi: int, as_of: float) -> float:
    """store_product_next_change from a scan of a pair's sale times times[lo:hi] (a small pair's, in any order)."""
    best = math.inf
    for i in range(lo, hi):
        t = times[i]
        if t > as_of:
            continue
        start = t // GRAIN_S * GRAIN_S
        end = start + _WEEK
        if end <= as_of:
            end = start + _FOUR_WEEKS
            if end <= as_of:
                continue
        if end < best:
            best = end
    return best
