"""Live stock in every answer: the one out-of-stock rule, and the read of a store's stock for an answer's ranked
items in one round trip.

An item is out of stock at a store when its store_product row says on_hand == 0 (an `inventory` event) or
in_stock_prob == 0. A stale row still counts for this rule: an old "none left" is no reason to offer the item. An
item without a row is not known to be out: it stays. Recommendations read the stock of the model's k best (one
extra round trip) and, only when some are left out, refill from its OVERFETCH x k best (`first_in_stock`);
next-best-action asks its model for OVERFETCH x k actions and reads their products' stock at once. A k-item answer
still has k items unless more than (OVERFETCH - 1) / OVERFETCH of them are gone (docs/DECISIONS.md "Live stock in
every answer").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from pantry.featurestore.reader import RowRead
from pantry.scoring import Action, Scored
from serving.redis_guard import StoreUnavailable
from serving.services import Services

OVERFETCH = 3
RULE_FEATURES = ("on_hand", "in_stock_prob")  # what the rule reads of a store_product row
# A coupon is checked against stock only when it covers at most this many products (all of them are read); one that
# covers more is kept: the data's median coupon covers 12 products, its largest 14,477.
COUPON_STOCK_READS = 16
MAX_ACTION_ROWS = 256  # store_product rows one next-best-action answer reads at most (actions past it: left out)


def out_of_stock(row: Mapping[str, Any] | None) -> bool:
    """The rule: on_hand == 0 or in_stock_prob == 0 (None: no row, not known to be out)."""
    return row is not None and (row.get("on_hand") == 0 or row.get("in_stock_prob") == 0)


async def out_of_stock_at(svc: Services, store_id: int, products: Iterable[int], as_of: datetime | None) -> set[int]:
    """The products out of stock at the store now (one round trip); empty when the store cannot be read: an answer
    is not withheld for want of stock data."""
    wanted = list(dict.fromkeys(products))
    if not wanted:
        return set()
    try:
        result = await svc.read([RowRead("store_product", (store_id, p), RULE_FEATURES) for p in wanted], as_of)
    except StoreUnavailable:
        return set()
    return {p for p, row in zip(wanted, result.rows, strict=True) if out_of_stock(row.raw_values)}


async def first_in_stock(svc: Services, store_id: int | None, ranked: Callable[[int], list[Scored]], k: int,
                         keep: Callable[[int], bool], as_of: datetime | None) -> list[Scored]:
    """The first k items of a ranking that `keep` allows and that are not out of stock at the store (None: no stock
    rule). `ranked(n)` is the model's n best. Its k best are taken and their stock read first; only when some of them
    are left out is it asked for its OVERFETCH x k best, whose items not yet seen refill the answer after one more
    stock read. Most answers lose none of their k best: one model call and k rows read (asking for 3k items and
    reading their rows on every request cost a worker 0.53 ms of CPU per recommendation: docs/DECISIONS.md). Two
    calls, not one longer list cut to k: the first k of a longer list need not be its k best (buy-again pins what was
    bought since the cut in a fifth of the slots it is asked for), and an answer with nothing left out must be the
    model's k best."""
    best = ranked(k)
    kept = await _allowed(svc, store_id, best, keep, as_of)
    if len(kept) >= k or len(best) < k:  # nothing left out, or the model has no more to give
        return kept[:k]
    seen = {s.product_id for s in best}
    more = [s for s in ranked(k * OVERFETCH) if s.product_id not in seen]
    return (kept + await _allowed(svc, store_id, more, keep, as_of))[:k]


async def _allowed(svc: Services, store_id: int | None, items: list[Scored], keep: Callable[[int], bool],
                   as_of: datetime | None) -> list[Scored]:
    items = [s for s in items if keep(s.product_id)]
    if store_id is None or not items:
        return items
    gone = await out_of_stock_at(svc, store_id, (s.product_id for s in items), as_of)
    return [s for s in items if s.product_id not in gone]


def action_products(svc: Services, action: Action) -> tuple[int, ...]:
    """The products whose stock decides whether an action can be offered: a product action's product; a coupon's
    products when it covers at most COUPON_STOCK_READS of them (else none: it is kept)."""
    if action.product_id is not None:
        return (action.product_id,)
    if action.coupon_upc is not None:
        products = svc.catalogue.coupon_products.get(action.coupon_upc, ())
        return products if len(products) <= COUPON_STOCK_READS else ()
    return ()


async def actions_in_stock(svc: Services, store_id: int, actions: list[Action], as_of: datetime | None) -> list[Action]:
    """The actions that can be used at the store now, in order: a product action whose product is not out of stock,
    a coupon with at least one of its products not out of stock (every product of it read, one round trip). The
    actions are checked best first within MAX_ACTION_ROWS rows; any after that are left out unchecked."""
    checked: list[tuple[Action, tuple[int, ...]]] = []
    rows = 0
    for action in actions:
        products = action_products(svc, action)
        if rows + len(products) > MAX_ACTION_ROWS:
            break
        checked.append((action, products))
        rows += len(products)
    gone = await out_of_stock_at(svc, store_id, (p for _, products in checked for p in products), as_of)
    return [a for a, products in checked if not products or not all(p in gone for p in products)]
