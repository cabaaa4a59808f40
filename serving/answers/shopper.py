"""What a shopper's preferences (serving/preferences.py, read with the customer's views) do to an answer.

- dietary: every answer leaves out the products its values exclude (pantry/preferences.py DIETARY_RULES, looked up
  in the worker's catalogue sets), and next-best-action a coupon all of whose products they exclude;
- substitutions "none": no candidates for any item, and the response's `reason` says why;
- never-pairs: that substitute is never offered for that original;
- preferred brands: among an item's comparable candidates (the ranker's BRAND_WINDOW x k best for it), those of a
  preferred brand come first, each group in the ranker's order; then the first k are answered.
"""

from __future__ import annotations

from collections.abc import Sequence

from pantry.scoring import Action, Scored
from serving.catalogue import ProductIds
from serving.preferences import Preferences
from serving.services import Services

NO_SUBSTITUTIONS = "the shopper accepts no substitutions (their preferences)"
BRAND_WINDOW = 2  # how far down an item's ranking a preferred brand's candidate may move up from


def dietary_exclusions(svc: Services, prefs: Preferences) -> ProductIds:
    return svc.catalogue.excluded_by(prefs.dietary)


def without_never_pairs(prefs: Preferences, product_ids: Sequence[int], lists: list[list[int]]) -> list[list[int]]:
    """Per item, its candidates minus the substitutes the shopper never wants for it."""
    if not prefs.never:
        return lists
    return [[c for c in items if (pid, c) not in prefs.never] for pid, items in zip(product_ids, lists, strict=True)]


def ranking_depth(prefs: Preferences, k: int) -> int:
    """How many candidates per item to ask the ranker for: more when a preferred brand may move up."""
    return k * BRAND_WINDOW if prefs.preferred_brands else k


def brands_first(svc: Services, prefs: Preferences, candidates: list[Scored], k: int) -> list[Scored]:
    """The first k of an item's ranked candidates with the preferred brands' ahead (stable within each group)."""
    if not prefs.preferred_brands:
        return candidates[:k]
    preferred = svc.catalogue.of_brands(prefs.preferred_brands)
    if not preferred:
        return candidates[:k]
    window = candidates[: k * BRAND_WINDOW]
    return ([s for s in window if s.product_id in preferred] + [s for s in window if s.product_id not in preferred])[:k]


def action_allowed(svc: Services, excluded: ProductIds, action: Action) -> bool:
    """False for a product action whose product the diet excludes, and a coupon whose products it all excludes."""
    if not excluded:
        return True
    if action.product_id is not None:
        return action.product_id not in excluded
    if action.coupon_upc is not None:
        products = svc.catalogue.coupon_products.get(action.coupon_upc, ())
        return not products or any(p not in excluded for p in products)
    return True
