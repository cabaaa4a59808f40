"""What the answers need to know about products and coupons to honour preferences and stock, built once per worker
from the data set's catalogue (products.parquet, campaign_coupons.parquet) and looked up with set membership.

- `dietary[value]`: the product ids a dietary value excludes (pantry/preferences.py DIETARY_RULES);
- `brands[brand]`: the product ids of a brand (lower-cased; the Complete Journey knows "national" and "private");
- `coupon_products[coupon_upc]`: the products a coupon covers (the same table the next-best-action model's
  coupon -> products arrays are built from: coupons.parquet via campaign_coupons.parquet).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from pantry import dataset
from pantry.preferences import DIETARY_RULES, conflicting_products
from pantry.settings import Settings

log = logging.getLogger("pantry.serving.catalogue")


class AnyOf:
    """Membership in any of a few product sets, without building their union per request (a brand's set holds up to
    78,516 products: a union of two would cost milliseconds)."""

    __slots__ = ("sets",)

    def __init__(self, sets: Iterable[frozenset[int]]):
        self.sets = tuple(s for s in sets if s)

    def __contains__(self, product_id: object) -> bool:
        return any(product_id in s for s in self.sets)

    def __bool__(self) -> bool:
        return bool(self.sets)


ProductIds = frozenset[int] | AnyOf


@dataclass(frozen=True)
class Catalogue:
    dietary: dict[str, frozenset[int]] = field(default_factory=lambda: dict.fromkeys(DIETARY_RULES, frozenset()))
    brands: dict[str, frozenset[int]] = field(default_factory=dict)
    coupon_products: dict[int, tuple[int, ...]] = field(default_factory=dict)

    def excluded_by(self, dietary: tuple[str, ...]) -> ProductIds:
        """The products any of these dietary values excludes (`in` and truth, like a set)."""
        if len(dietary) == 1:
            return self.dietary.get(dietary[0], frozenset())
        return AnyOf(self.dietary.get(d, frozenset()) for d in dietary)

    def of_brands(self, brands: tuple[str, ...]) -> ProductIds:
        """The products of any of these (lower-cased) brands."""
        if len(brands) == 1:
            return self.brands.get(brands[0], frozenset())
        return AnyOf(self.brands.get(b, frozenset()) for b in brands)


def load_catalogue(settings: Settings) -> Catalogue:
    """The catalogue of the data set (an empty one before `pantry data load`: nothing is excluded, no brand known)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        products = dataset.read_arrow(settings, "products")
    except (OSError, FileNotFoundError, pa.ArrowException) as exc:
        log.warning("no product catalogue (%s): dietary preferences exclude nothing for now", exc)
        return Catalogue()
    brands: dict[str, frozenset[int]] = {}
    brand = pc.utf8_lower(pc.fill_null(products.column("brand"), ""))
    for name in pc.unique(brand).to_pylist():
        if name:
            brands[name] = frozenset(products.column("product_id").filter(pc.equal(brand, name)).to_pylist())
    coupons: dict[int, tuple[int, ...]] = {}
    try:
        table = dataset.read_arrow(settings, "campaign_coupons")
        for upc, items in zip(table.column("coupon_upc").to_pylist(), table.column("product_ids").to_pylist(),
                              strict=True):
            coupons[int(upc)] = tuple(items or ())
    except (OSError, FileNotFoundError, pa.ArrowException) as exc:
        log.warning("no coupon table (%s): coupon actions are not checked against stock", exc)
    return Catalogue(conflicting_products(products), brands, coupons)
