"""Running window sums over a time-sorted list, so a row costs O(log n) instead of a scan of its window.

An entity keeps its window's entries as a list sorted by time (`(t, x)` tuples) and, per window length, a `Window`:
the count and integer total of the entries with t > `cut`. A row slides each cut to its window's start
(as_of - length): only the entries between the old and the new cut are visited, and as_of only moves forward, so
each entry is visited once per window over its life (amortised O(1) per event), whatever the window holds. Totals
are integers (units, or money in micro-units) so that adding and removing in any order stays exact.

Windows of sums (a store x product pair's units, a store's sales) count time to the minute (GRAIN_S): an entry
leaves a window of length W once the start of its minute is W old. That lets an entity keep what is older than the
lateness bound as one entry per minute (`fold_before`): late events can no longer land there, so nothing but the
windows reads those entries. The newest entries (the last LATENESS_S, where late events and inventory counts still
land) stay exact; a window's trailing edge is always older than that (W > LATENESS_S + 2 minutes), so for them the
minute rule and the exact time agree.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Sequence

import msgspec

from streaming.features.event import LATENESS_S

INF = math.inf
GRAIN_S = 60.0  # the folded windows' time grain


def grain_start(t: float) -> float:
    """The start of t's minute (exact in floats: an integer number of seconds)."""
    return t // GRAIN_S * GRAIN_S


def fold_before(as_of: float) -> float:
    """Entries earlier than this are folded into minutes at a row as of `as_of`: their minute ended at or before
    as_of - LATENESS_S, so no accepted event can land in it any more (the gate drops events older than the newest
    minus the lateness bound, and the newest is at least as_of)."""
    return grain_start(as_of - LATENESS_S)


class Window(msgspec.Struct, array_like=True):
    """Count and total of the entries with t > cut (and at or before the entity's as_of)."""

    cut: float = -INF
    n: int = 0
    total: int = 0


def window_add(w: Window, t: float, amount: int, n: int = 1) -> None:
    """An entry at t (n entries; n = 0: more amount on an entry counted already) joins the list."""
    if t > w.cut:
        w.n += n
        w.total += amount


def window_slide(w: Window, order: Sequence[tuple], lo: float, amount: Callable[[tuple], int],
                 count: Callable[[tuple], int] | None = None) -> None:
    """Move the cut to `lo`: the entries in (cut, lo] leave the window, or those in (lo, cut] enter it if lo is
    before the cut (a row asked for an earlier time). `count`: how many entries one stands for (a folded minute's
    sales; default one)."""
    cut = w.cut
    if lo == cut:
        return
    a, b = (cut, lo) if lo > cut else (lo, cut)
    if not order or order[0][0] > b or order[-1][0] <= a:  # nothing in (a, b]: no bisection (most small keys)
        w.cut = lo
        return
    i, j = bisect_right(order, (a, INF)), bisect_right(order, (b, INF))
    if i < j:
        moved = order[i:j]
        _crossed(w, lo, j - i if count is None else sum(map(count, moved)), sum(map(amount, moved)))
    w.cut = lo


def _crossed(w: Window, lo: float, n: int, total: int) -> None:
    """n entries worth `total` lie between the cut and lo: they leave the window (lo after the cut) or enter it."""
    if lo > w.cut:
        w.n -= n
        w.total -= total
    else:
        w.n += n
        w.total += total


def window_slide_columns(w: Window, times: Sequence[float], lo: float, amounts: Sequence[int],
                         counts: Sequence[int] | None = None) -> None:
    """window_slide over columns: entry i is (times[i], amounts[i], counts[i]) (counts: how many entries one stands
    for; default one), times sorted. The columns are arrays (streaming/features/store_product.py): 8 B a value."""
    cut = w.cut
    if lo == cut:
        return
    a, b = (cut, lo) if lo > cut else (lo, cut)
    if not times or times[0] > b or times[-1] <= a:
        w.cut = lo
        return
    i, j = bisect_right(times, a), bisect_right(times, b)
    if i < j:
        _crossed(w, lo, j - i if counts is None else sum(counts[i:j]), sum(amounts[i:j]))
    w.cut = lo


def after(order: Sequence[tuple], as_of: float) -> int:
    """Index of the first entry later than as_of (len(order) if none: the usual case)."""
    return bisect_right(order, (as_of, INF))


def sorted_next_change(order: Sequence, as_of: float, windows: tuple[float, ...], grain: bool = False,
                       columns: bool = False) -> float:
    """streaming.features.event.next_change of the entries' times, in O(len(windows) * log n) on a time-sorted
    list: the first instant after as_of at which an entry leaves a window (lengths ascending) that holds it.
    `grain`: windows that count time to the minute (an entry at t leaves at grain_start(t) + w). `columns`: `order`
    is the times themselves (an array), not (time, ...) tuples.

    An entry contributes t + w for the shortest window w with t + w > as_of; t + w is non-decreasing along the
    list, so within each window's run of entries the first is the smallest. The same float sums as next_change,
    so the same answer to the bit."""
    best = INF
    if len(order) <= 4:  # a scan is cheaper than bisections for a few entries (most store x product pairs)
        for e in order:
            t = e if columns else e[0]
            if t <= as_of:
                start = t // GRAIN_S * GRAIN_S if grain else t
                for w in windows:
                    end = start + w
                    if end > as_of:
                        if end < best:
                            best = end
                        break
        return best
    hi = bisect_right(order, as_of) if columns else after(order, as_of)  # later entries hold no window yet
    for w in windows:
        if columns:
            key = (lambda t, w=w: t // GRAIN_S * GRAIN_S + w) if grain else (lambda t, w=w: t + w)
        else:
            key = (lambda e, w=w: e[0] // GRAIN_S * GRAIN_S + w) if grain else (lambda e, w=w: e[0] + w)
        i = bisect_right(order, as_of, 0, hi, key=key)
        if i < hi:
            t = order[i] if columns else order[i][0]
            end = (grain_start(t) if grain else t) + w
            if end < best:
                best = end
        hi = i  # entries from here on already left their change at this (shorter) window
    return best
