"""SubstitutionModel and NextBestActionModel contracts on models trained on the 40-household slice."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from pantry import dataset
from pantry.models import load_active, registry


@pytest.fixture(scope="module")
def active(trained):
    models, errors = load_active(trained.models_dir)
    assert errors == {}
    return models


def _product_with_pool(model) -> tuple[int, list[int]]:
    for pid in model.products[np.argsort(-model.cat.buyers)][:200]:
        pool = model.candidate_pools([int(pid)])[0]
        if len(pool) >= 4:
            return int(pid), pool
    raise AssertionError("no product with a pool of 4+ in the slice")


def test_substitution_pool_is_same_type_bounded_and_excludes_the_item(trained, active) -> None:
    model = active.substitutions
    pid, pool = _product_with_pool(model)
    assert pid not in pool and len(pool) <= 50 and len(set(pool)) == len(pool)
    products = dataset.read_table(trained, "products").set_index("product_id")
    types = {products.loc[p, "product_type"] for p in pool}
    if types != {products.loc[pid, "product_type"]}:  # the type has < 2 other items here: same category instead
        assert {products.loc[p, "category"] for p in pool} == {products.loc[pid, "category"]}
    assert model.candidate_pools([-12345]) == [[]]


def test_substitution_pool_is_the_best_of_the_scored_pool_by_the_neutral_ranker(active) -> None:
    from pantry.models.substitution_features import SCORED_POOL, neutral_rows, pool

    model = active.substitutions
    pid, served = _product_with_pool(model)
    usual = int(np.searchsorted(model.products, pid))
    scored = pool(model.cat, usual, SCORED_POOL)
    logit = model.session.run(["logit"], {"features": neutral_rows(model.cat, usual, scored)})[0][:, 0]
    by_item = dict(zip(model.products[scored].tolist(), logit.tolist(), strict=True))
    got = [by_item[p] for p in served]
    assert got == sorted(got, reverse=True), "served pool is best first by the neutral score"
    assert set(served) <= set(by_item) and min(got) >= sorted(logit, reverse=True)[len(served) - 1] - 1e-6
    assert model.candidate_pools([pid]) == [served]  # the cached answer is the same


def test_substitution_rank_respects_stock_and_k(active) -> None:
    model = active.substitutions
    pid, pool = _product_with_pool(model)
    customer = int(model.customers[0])
    free = {p: {"on_hand": 5, "in_stock_prob": 0.9, "units_28d": 3} for p in pool}
    ranked = model.rank([pid], [pool], customer_id=customer, features={}, stock=free, k=3)[0]
    assert len(ranked) == 3 and all(r.reason for r in ranked)
    assert ranked[0].score >= ranked[1].score >= ranked[2].score
    # the top choice out of stock (by count, then by estimate): never offered
    best = ranked[0].product_id
    for row in ({"on_hand": 0, "in_stock_prob": 0.9}, {"on_hand": None, "in_stock_prob": 0.0}):
        again = model.rank([pid], [pool], customer_id=customer, features={}, stock={**free, best: row}, k=3)[0]
        assert best not in [r.product_id for r in again] and len(again) == 3
    # the customer's own history is in the ranker's columns (not a hand-set bonus): a live repertoire row that
    # says the last-ranked candidate is theirs marks its row, and its reason says so
    from pantry.models.substitution_features import FEATURE_NAMES, NO_OWN_ITEMS, features

    stranger = -1  # no history in the version
    plain = model.rank([pid], [pool], customer_id=stranger, features={}, stock=free, k=len(pool))[0]
    last = plain[-1].product_id
    feats = {"customer_repertoire": {"repertoire_product_ids": [last], "repertoire_scores": [2.0]}}
    mine = model.rank([pid], [pool], customer_id=stranger, features=feats, stock=free, k=len(pool))[0]
    assert next(r for r in mine if r.product_id == last).reason == "you have bought this before"
    usual, idx = int(np.searchsorted(model.products, pid)), np.searchsorted(model.products, np.array(pool))
    zeros = np.zeros(len(pool), dtype=np.float32)
    bought = FEATURE_NAMES.index("customer_bought")
    rows = features(model.cat, usual, idx, 0.2, None, zeros, model._own_items(stranger, feats))
    assert rows[:, bought].tolist() == [float(p == last) for p in pool]
    assert not features(model.cat, usual, idx, 0.2, None, zeros, NO_OWN_ITEMS)[:, bought].any()


def test_substitutions_of_several_items_in_one_call_are_those_of_one_call_each(trained, active) -> None:
    """An order's missing items are pooled and ranked in one ranker call each (candidate_pools, rank): the same
    pools, candidates, order and scores as asking for the items one by one. The pools the version carries (ordered
    at training) are the ones a version without them computes on a request's first ask."""
    from pantry.models.loading import load_version

    model = active.substitutions
    assert model.served is not None, "a new version carries its served pools"
    lazy = load_version(trained.models_dir, "substitutions", model.version)
    lazy.served, lazy._pools = None, {}  # as an older version: every pool computed by the batched call
    items = [int(p) for p in model.products[np.argsort(-model.cat.buyers, kind="stable")][:6]]
    pools = lazy.candidate_pools(items)
    assert pools == model.candidate_pools(items) == [model.candidate_pools([p])[0] for p in items]
    everything = model.products.tolist()
    assert lazy.candidate_pools(everything) == model.candidate_pools(everything)
    customer = int(model.customers[1])
    free = {c: {"on_hand": 3, "in_stock_prob": 0.8, "units_28d": 2} for pool in pools for c in pool}
    together = model.rank(items, pools, customer_id=customer, features={}, stock=free, k=3)
    alone = [model.rank([p], [pool], customer_id=customer, features={}, stock=free, k=3)[0]
             for p, pool in zip(items, pools, strict=True)]
    assert [[s.product_id for s in r] for r in together] == [[s.product_id for s in r] for r in alone]
    assert np.allclose([s.score for r in together for s in r], [s.score for r in alone for s in r], atol=1e-5)
    assert any(together), "some of these items have candidates"


def test_own_candidates_are_the_customers_items_of_the_type_most_bought_first(trained, active) -> None:
    from pantry.models.substitution_features import FEATURE_NAMES, OWN_CANDIDATES
    from training.data import HALF_LIFE_DAYS, load_purchases, to_days

    model = active.substitutions
    manifest = registry.read_manifest(trained.models_dir / "substitutions" / model.version)
    assert tuple(manifest.params["feature_names"]) == FEATURE_NAMES and manifest.params["repertoire_bonus"] == 0.0
    until = datetime.fromisoformat(manifest.trained_until)
    lines = load_purchases(trained, until)
    types = dataset.read_table(trained, "products").set_index("product_id")["product_type"]
    lines = lines.assign(t=types.reindex(lines["product_id"]).to_numpy(),
                         w=np.power(0.5, (to_days(until) - lines["day"]) / HALF_LIFE_DAYS))
    # a customer with three or more items of one type
    per = lines.groupby(["customer_id", "t", "product_id"])["w"].sum().reset_index()
    wide = per.groupby(["customer_id", "t"]).size()
    customer, ptype = wide[wide >= 3].index[0]
    theirs = per[(per["customer_id"] == customer) & (per["t"] == ptype)].sort_values(["w", "product_id"],
                                                                                   ascending=[False, True])
    usual, *others = theirs["product_id"].astype(int).tolist()
    [got] = model.own_candidates([usual], customer_id=int(customer), features={})
    assert got == [p for p in others if p in set(model.products.tolist())][:OWN_CANDIDATES]
    # an item of the type bought since the cut (the live repertoire row) joins them; an erased customer has none
    since = next(int(p) for p in model.products[model.cat.type_code == model.cat.type_code[
        np.searchsorted(model.products, usual)]] if int(p) not in (usual, *others))
    live = {"customer_repertoire": {"repertoire_product_ids": [since], "repertoire_scores": [1.0]}}
    assert since in model.own_candidates([usual], customer_id=int(customer), features=live)[0]
    model.hidden = frozenset({int(customer)})
    try:
        assert model.own_candidates([usual], customer_id=int(customer), features={}) == [[]]
    finally:
        model.hidden = frozenset()


def test_nba_offers_only_given_enrolled_active_campaigns(trained, active) -> None:
    model = active.next_best_action
    enrol = dataset.read_table(trained, "campaigns")
    desc = dataset.read_table(trained, "campaign_descriptions").set_index("campaign_id")
    customer, campaign = (int(v) for v in enrol.iloc[0][["customer_id", "campaign_id"]])
    start = desc.loc[campaign, "start_date"].to_pydatetime()
    now = start.replace(tzinfo=UTC) if start.tzinfo is None else start
    acts = model.actions({}, customer_id=customer, campaign_ids=frozenset({campaign}), k=3, channel="app", now=now)
    coupons = [a for a in acts if a.action_type == "coupon"]
    assert coupons and all(a.campaign_id == campaign and a.rationale for a in coupons)
    assert [a.score for a in coupons] == sorted((a.score for a in coupons), reverse=True)
    # not enrolled / not active / not approved (not in the set): no coupon, a buy-again nudge instead
    others = set(desc.index) - set(enrol[enrol["customer_id"] == customer]["campaign_id"])
    far = datetime(2030, 1, 1, tzinfo=UTC)
    for ids, when in ((frozenset(others), now), (frozenset({campaign}), far), (frozenset(), now)):
        acts = model.actions({}, customer_id=customer, campaign_ids=ids, k=2, channel="email", now=when)
        assert all(a.action_type == "buy_again" and a.product_id and a.rationale for a in acts)


def test_all_manifests_record_onnx_parity(trained) -> None:
    for name in ("substitutions", "next_best_action"):
        version = registry.active_version(trained.models_dir, name)
        manifest = registry.verify(trained.models_dir / name / version)
        assert manifest.metrics["onnx_parity_max_abs_diff"] <= 1e-4
        assert "model.onnx" in manifest.files


def test_nba_relative_columns_follow_the_candidate_list() -> None:
    from pantry.models import next_best_action as nba

    x = np.zeros((4, len(nba.FEATURE_NAMES)), dtype=np.float32)
    x[:, 0] = np.log1p([3.0, 0.0, 7.0, 3.0])  # log_affinity
    x[:, 1] = [0.5, 0.0, 1.5, 0.5]  # log_affinity_decayed: ties keep candidate order
    x[:, 4] = np.log1p([0.0, 2.0, 0.0, 9.0])  # coupon redemptions
    x[:, 5] = np.log1p([9.0, 99.0, 0.0, 9.0])  # product buyers
    nba.relative_columns(x)
    col = {name: x[:, nba.FEATURE_NAMES.index(name)] for name in nba.FEATURE_NAMES[nba.N_ABSOLUTE:]}
    np.testing.assert_allclose(col["affinity_rank"], np.log1p([1, 3, 0, 2]), rtol=1e-6)
    np.testing.assert_allclose(col["affinity_decayed_vs_best"], [-1.0, -1.5, 0.0, -1.0], rtol=1e-6)
    assert col["affinity_vs_best"][2] == 0.0 and (col["affinity_vs_best"] <= 0).all()
    assert col["product_buyers_vs_best"][1] == 0.0
    np.testing.assert_allclose(col["log_coupon_redemption_rate"], np.log1p([0.0, 2.0, 0.0, 90.0]), rtol=1e-5)
    # dropping the best candidate moves the others' relative columns: they are per request, not per coupon
    rest = x[[0, 1, 3]].copy()
    nba.relative_columns(rest)
    np.testing.assert_allclose(rest[:, nba.FEATURE_NAMES.index("affinity_decayed_vs_best")], [0.0, -0.5, 0.0])
