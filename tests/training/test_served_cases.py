"""The served-path evaluation's cases and rules (training/served_cases.py) on the 40-household slice, checked
against the raw purchases (no model, no service: seconds)."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from training_consts import SLICE_UNTIL

from pantry import dataset
from training import served_cases as sc
from training.data import default_until, load_purchases, to_days


@pytest.fixture(scope="module")
def purchases(settings, data_slice):
    return load_purchases(settings, default_until(settings))


@pytest.fixture(scope="module")
def types(settings, data_slice) -> dict[int, str]:
    products = dataset.read_table(settings, "products")[["product_id", "product_type"]].dropna()
    return dict(zip(products["product_id"].astype(int), products["product_type"], strict=True))


def test_substitution_rules_on_a_hand_made_case() -> None:
    type_list = [10, 11, 12, 13, 14]  # by buyers
    lists = sc.substitution_rules(usual=11, bought=frozenset({11, 13, 14}), own_counts={11: 5, 13: 1, 14: 3},
                                  type_list=type_list)
    assert lists[sc.NEVER_BOUGHT_POPULAR] == [10, 12]
    assert lists[sc.OWN_THEN_POPULAR] == [14, 13, 10]
    assert lists[sc.TYPE_POPULAR] == [10, 12, 13]


def test_substitution_cases_follow_the_protocols(settings, purchases, types) -> None:
    cut = to_days(SLICE_UNTIL)
    before = purchases[purchases["day"] < cut]
    after = purchases[purchases["day"] >= cut]
    baskets = before.groupby(["customer_id", "product_id"])["basket_id"].nunique()
    cases = sc.substitution_cases(settings, purchases, SLICE_UNTIL, n=None)
    assert set(cases) == set(sc.SUB_PROTOCOLS)
    assert cases["new item"].events > 10 and cases["any departure"].events >= cases["new item"].events
    after_by_customer = dict(tuple(after.groupby("customer_id")))
    for protocol, c in cases.items():
        assert len(c.customer_id) == c.events
        for j in range(0, c.events, max(1, c.events // 80)):  # ~80 cases each: the checks are per-case pandas
            cust, usual, chosen = int(c.customer_id[j]), int(c.usual[j]), int(c.chosen[j])
            kind = types[usual]
            mine = baskets.loc[cust]
            of_type = {int(p): int(n) for p, n in mine.items() if types.get(int(p)) == kind}
            assert c.bought[j] == frozenset(of_type)
            assert of_type[usual] >= 2 and of_type[usual] == max(of_type.values())  # the usual item
            assert types[chosen] == kind and chosen != usual and c.day[j] >= cut
            if protocol == "new item":
                assert chosen not in of_type
            # the first such purchase after the cut: nothing of the type but the usual item (and, for a new item,
            # what was bought before) was bought after the cut before it
            theirs = after_by_customer[cust]
            earlier = theirs[theirs["day"] < c.day[j]]
            for p in earlier["product_id"].astype(int):
                if types.get(p) == kind:
                    assert p == usual or (protocol == "new item" and p in of_type)
            for name in (sc.NEVER_BOUGHT_POPULAR, sc.OWN_THEN_POPULAR, sc.TYPE_POPULAR):
                ranked = c.rules[name][j]
                assert len(ranked) <= sc.SUB_K and usual not in ranked and len(set(ranked)) == len(ranked)
            assert not set(c.rules[sc.NEVER_BOUGHT_POPULAR][j]) & c.bought[j]
            own = [p for p in c.rules[sc.OWN_THEN_POPULAR][j] if p in of_type]
            assert [of_type[p] for p in own] == sorted((of_type[p] for p in own), reverse=True)
    new = cases["new item"]
    hit = sc.hits(new.rules[sc.OWN_THEN_POPULAR], new.chosen, sc.SUB_K)
    assert hit.shape == (new.events,) and set(np.unique(hit)) <= {0.0, 1.0}


def test_substitution_cases_sample_is_seeded(settings, purchases) -> None:
    a = sc.substitution_cases(settings, purchases, SLICE_UNTIL, n=5, seed=1)["any departure"]
    b = sc.substitution_cases(settings, purchases, SLICE_UNTIL, n=5, seed=1)["any departure"]
    assert len(a.customer_id) == 5 and a.events > 5
    assert a.customer_id.tolist() == b.customer_id.tolist() and a.chosen.tolist() == b.chosen.tolist()


def test_recommendation_cases_and_the_decayed_rule(purchases) -> None:
    cases = sc.recommendation_cases(purchases, SLICE_UNTIL, n=None)
    cut = to_days(SLICE_UNTIL)
    end = to_days(SLICE_UNTIL + timedelta(days=sc.REC_WINDOW_DAYS))
    before = purchases[purchases["day"] < cut]
    window = purchases[(purchases["day"] >= cut) & (purchases["day"] < end)]
    assert cases.customers == len(cases.customer_id) > 5
    c = int(cases.customer_id[0])
    assert cases.truth[0] == frozenset(window[window["customer_id"] == c]["product_id"].astype(int))
    mine = before[before["customer_id"] == c]
    weights = mine.groupby(["product_id", "basket_id"])["day"].min().reset_index()
    weights["w"] = 0.5 ** ((cut - weights["day"]) / 90.0)
    best = weights.groupby("product_id")["w"].sum()
    ranked = cases.rules[sc.DECAYED][0]
    assert ranked[0] in set(best[best == best.max()].index.astype(int))
    assert len(ranked) == min(sc.REC_K, len(best))
    p = sc.precisions(cases.rules[sc.DECAYED], cases.truth)
    assert p[0] == pytest.approx(len(set(ranked) & cases.truth[0]) / sc.REC_K)
    assert cases.store_id[0] == int(mine["store_id"].mode().min())


def test_nba_cases_are_every_redemption_after_the_cut(settings, purchases) -> None:
    cases = sc.nba_cases(settings, purchases, SLICE_UNTIL)
    red = dataset.read_table(settings, "coupon_redemptions")
    after = red[red["redemption_date"] >= pd.Timestamp(SLICE_UNTIL)]
    assert len(cases.coupon_upc) == len(after)
    assert set(cases.rules) == set(sc.RULE_NAMES)
    for name in sc.RULE_NAMES:
        assert len(cases.rules[name]) == len(cases.coupon_upc)
        assert all(len(r) <= sc.NBA_K for r in cases.rules[name])


def test_the_served_section_is_replaced_in_place_and_kept_by_a_report_rewrite() -> None:
    from training.report import SERVED_END, SERVED_START, served_section, with_served_section

    report = "# Model report\n\n## Substitutions\n\nfigures\n\n## Plots\n\n![x](img/x.png)\n"
    first = f"{SERVED_START}\n## Served-path evaluation\n\nold\n{SERVED_END}"
    text = with_served_section(report, first)
    assert text.index(SERVED_START) < text.index("## Plots") and served_section(text) == first
    second = first.replace("old", "new")
    again = with_served_section(text, second)
    assert served_section(again) == second and again.count(SERVED_START) == 1 and "figures" in again
    assert served_section(report) == ""


def test_truth_group_lists_take_the_served_order_within_the_chosen_items_group() -> None:
    deep = [[1, 2, 3, 4, 5], [1, 2, 3, 4, 5], [9]]
    bought = [frozenset({1, 3}), frozenset({1, 3}), frozenset()]
    chosen = np.array([3, 5, 9])
    lists = sc.truth_group_lists(deep, bought, chosen, k=2)
    # a case that went back to an item bought before: the bought ones only; a new item: the never-bought ones only
    assert lists == [[1, 3], [2, 4], [9]]
    assert sc.hits(lists, chosen, 2).tolist() == [1.0, 0.0, 1.0]


def test_by_truth_group_splits_each_lists_hits_by_whether_the_chosen_item_was_bought_before() -> None:
    bought = [frozenset({1}), frozenset({1}), frozenset({1}), frozenset()]
    chosen = np.array([1, 1, 7, 8])
    lists = {"served": [[1], [2], [7], [5]], "rule": [[1], [1], [1], [1]]}
    split = sc.by_truth_group(lists, bought, chosen, k=1)
    assert split["chosen item bought before (share of cases)"] == 0.5
    assert split["served: hit@1 where the chosen item was bought before"] == 0.5
    assert split["served: hit@1 where the chosen item was never bought"] == 0.5
    assert split["rule: hit@1 where the chosen item was bought before"] == 1.0
    assert split["rule: hit@1 where the chosen item was never bought"] == 0.0
    # a protocol whose chosen items are all new: no "bought before" rows
    new_only = sc.by_truth_group({"served": [[7]]}, [frozenset({1})], np.array([7]), k=1)
    assert set(new_only) == {"chosen item bought before (share of cases)",
                             "served: hit@1 where the chosen item was never bought"}
