"""A repertoire's top n products by score, kept up to date as scores rise, in two flat arrays.

The customer shards keep one `Top` per customer between its rows (streaming.shards), so a repertoire row merges the
products bought since the last row instead of ranking every product again. The layout is for the memory, not the
arithmetic: a live flow at a chain's pace holds thousands of customers' tops, touched in random order, and a list of
(product, score) tuples puts each entry in objects of its own across the heap. Reading a top back then missed the
CPU's caches at nearly every entry (35 us a merge once the heap had grown past 1 GB, where the same loop over a top
just built took 7 us: docs/DECISIONS.md "Compact tops"); two arrays of n numbers are a few cache lines.
"""

from __future__ import annotations

import heapq
from array import array
from bisect import bisect_left
from collections.abc import Iterable


class Top:
    """(product, score) pairs in rank order: score descending, ties to the smaller product. `negs` holds the
    negated scores (ascending, so bisection finds a rank), `products` the products, index for index."""

    __slots__ = ("negs", "products")

    def __init__(self, items: Iterable[tuple[int, float]] = ()) -> None:
        ranked = sorted((-s, p) for p, s in items)
        self.negs = array("d", [neg for neg, _ in ranked])
        self.products = array("q", [p for _, p in ranked])

    def __len__(self) -> int:
        return len(self.products)

    def items(self) -> list[tuple[int, float]]:
        return [(p, -neg) for neg, p in zip(self.negs, self.products, strict=True)]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Top) and self.negs == other.negs and self.products == other.products

    def __repr__(self) -> str:
        return f"Top({self.items()!r})"


def top_scores(scores: dict[int, float], n: int) -> Top:
    """The n (product, score) with the highest scores, ties to the smaller product id, highest first.

    The n-th highest score is found over bare floats (C comparisons); only the few entries at or above it are
    then ranked with the tie-break, instead of comparing (score, product) keys across the whole dict."""
    if len(scores) > n:
        threshold = heapq.nlargest(n, scores.values())[-1]
        top = Top((p, s) for p, s in scores.items() if s >= threshold)
        del top.negs[n:], top.products[n:]
        return top
    return Top(scores.items())


def top_merge(top: Top, changed: Iterable[int], scores: dict[int, float], n: int) -> Top:
    """Make `top` (in place, and return it) top_scores(scores, n), given that it was top_scores before the scores of
    `changed` rose (scores only ever rise: they are kept relative to a fixed instant). Every other product ranked
    below all of `top` and still does, so the new top n is among `top` and `changed`: each changed product leaves
    its old rank (a C scan of the products) and is inserted at its new one by bisection. A changed product that
    now ranks below the old n-th cannot enter, and is skipped with one comparison."""
    negs, products = top.negs, top.products
    # the products as a list once, to look each changed one up in: an array's own index() makes an int object of
    # every entry it passes, a list's compares the ints it holds
    held = products.tolist()
    full = len(held) >= n
    if full:
        last_neg, last_p = negs[-1], held[-1]
    for p in changed:
        score = scores.get(p)
        if score is None:  # forgotten by a bounded repertoire since (customer.REPERTOIRE_MAX): it ranked below the top
            continue
        neg = -score
        try:
            i = held.index(p)
        except ValueError:
            if full and (neg > last_neg or (neg == last_neg and p > last_p)):
                continue
        else:
            del negs[i], products[i], held[i]
        j = bisect_left(negs, neg)
        end = len(negs)
        while j < end and negs[j] == neg and products[j] < p:
            j += 1
        negs.insert(j, neg)
        products.insert(j, p)
        held.insert(j, p)
    del negs[n:], products[n:]
    return top
