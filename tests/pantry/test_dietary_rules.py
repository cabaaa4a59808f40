"""The dietary rules (pantry/preferences.py): every value the API accepts has one, and what it excludes on a small
catalogue table."""

from __future__ import annotations

from typing import get_args

import pyarrow as pa

from pantry.preferences import DIETARY_RULES, Dietary, conflicting_products


def test_every_dietary_value_the_api_accepts_has_a_rule():
    assert set(get_args(Dietary)) == set(DIETARY_RULES)


def test_a_dietary_value_excludes_its_departments_and_categories_but_not_its_allowed_types():
    products = pa.table({
        "product_id": [1, 2, 3, 4, 5, 6, 7],
        "department": ["MEAT", "GROCERY", "GROCERY", "GROCERY", "SPIRITS", "DRUG GM", None],
        "category": ["BEEF", "DELI MEATS", "FRZN MEAT/MEAT DINNERS", "MISC WINE", "LIQUOR", "CIGARETTES", None],
        "product_type": ["LEAN", "HAM", "FRZN MEAT ALTERNATIVES", "NON-ALCOHLIC WINES", "VODKA", "PREMIUM", None],
    })
    got = conflicting_products(products)
    assert got == {"vegetarian": frozenset({1, 2}), "no_alcohol": frozenset({5}), "no_tobacco": frozenset({6})}
