"""What a shopper's preferences do to an answer's lists (serving/answers/shopper.py) and how a preferences row reads
(serving/preferences.py), as pure functions on small tables."""

from __future__ import annotations

from pantry.scoring import Action, Scored
from serving.answers.shopper import action_allowed, brands_first, ranking_depth, without_never_pairs
from serving.catalogue import Catalogue
from serving.preferences import NO_PREFERENCES, Preferences, body_of, from_row


class _Svc:
    def __init__(self, catalogue: Catalogue):
        self.catalogue = catalogue


def test_a_row_becomes_preferences_and_back():
    row = {"substitutions": "none", "never_original_ids": [1, 3], "never_substitute_ids": [2, 4],
           "preferred_brands": ["Private", "private"], "dietary": ["vegetarian"]}
    prefs = from_row(row)
    assert prefs == Preferences("none", frozenset({(1, 2), (3, 4)}), ("private",), ("vegetarian",))
    assert body_of(row).never == [(1, 2), (3, 4)] and body_of(row).preferred_brands == ["Private", "private"]
    assert from_row(None) == NO_PREFERENCES and body_of(None).substitutions == "allow"


def test_never_pairs_apply_to_their_original_only():
    prefs = Preferences(never=frozenset({(10, 11)}))
    assert without_never_pairs(prefs, [10, 20], [[11, 12], [11, 13]]) == [[12], [11, 13]]
    assert without_never_pairs(NO_PREFERENCES, [10], [[11]]) == [[11]]


def test_preferred_brands_come_first_within_the_comparable_window_in_ranker_order():
    svc = _Svc(Catalogue(brands={"private": frozenset({3, 4, 9})}))
    ranked = [Scored(p, 1.0 / p, "x") for p in (1, 2, 3, 4, 5, 6, 9)]
    prefs = Preferences(preferred_brands=("private",))
    assert ranking_depth(prefs, 3) == 6 and ranking_depth(NO_PREFERENCES, 3) == 3
    # the window is the best 2 x k = 6: product 9 (7th) does not move up
    assert [s.product_id for s in brands_first(svc, prefs, ranked, 3)] == [3, 4, 1]
    assert [s.product_id for s in brands_first(svc, NO_PREFERENCES, ranked, 3)] == [1, 2, 3]
    assert [s.product_id for s in brands_first(svc, Preferences(preferred_brands=("acme",)), ranked, 3)] == [1, 2, 3]


def test_a_coupon_is_left_out_only_when_the_diet_excludes_every_product_it_covers():
    svc = _Svc(Catalogue(coupon_products={100: (1, 2), 200: (1, 5)}))
    excluded = frozenset({1, 2})
    assert not action_allowed(svc, excluded, Action("coupon", 0.9, "r", campaign_id=1, coupon_upc=100))
    assert action_allowed(svc, excluded, Action("coupon", 0.9, "r", campaign_id=1, coupon_upc=200))
    assert not action_allowed(svc, excluded, Action("buy_again", 0.5, "r", product_id=2))
    assert action_allowed(svc, frozenset(), Action("buy_again", 0.5, "r", product_id=2))


def test_first_in_stock_keeps_the_models_k_best_and_refills_only_when_some_are_left_out():
    import asyncio

    from serving.answers.stock import first_in_stock

    asked: list[int] = []

    def ranked(k: int) -> list[Scored]:  # like buy-again: a longer list pins other items first
        asked.append(k)
        order = [1, 2, 3, 4, 5, 6] if k <= 2 else [5, 6, 1, 2, 3, 4]
        return [Scored(p, 1.0, "x") for p in order[:k]]

    def first(keep) -> list[int]:  # no store: the keep rule alone (stock reads are tested over HTTP)
        return [s.product_id for s in asyncio.run(first_in_stock(None, None, ranked, 2, keep, None))]

    assert first(lambda p: True) == [1, 2] and asked == [2]  # nothing left out: one call, the model's k best
    asked.clear()
    assert first(lambda p: p != 2) == [1, 5] and asked == [2, 6]  # one left out: refilled from the longer list
    assert first(lambda p: p in (4,)) == [4]  # fewer than k allowed at all: what there is


def test_several_dietary_values_or_brands_are_looked_up_in_each_set_not_a_union():
    catalogue = Catalogue(dietary={"vegetarian": frozenset({1, 2}), "no_alcohol": frozenset({5}),
                                   "no_tobacco": frozenset()},
                          brands={"private": frozenset({7}), "national": frozenset({8})})
    both = catalogue.excluded_by(("vegetarian", "no_alcohol"))
    assert 1 in both and 5 in both and 3 not in both and both
    assert not catalogue.excluded_by(()) and not catalogue.excluded_by(("no_tobacco",))
    assert catalogue.excluded_by(("vegetarian",)) is catalogue.dietary["vegetarian"]  # one value: its own set
    brands = catalogue.of_brands(("private", "national", "acme"))
    assert 7 in brands and 8 in brands and 9 not in brands
