"""The basket completer on the test slice: the co-purchase table against the baskets themselves, its cut, the
ranker's ONNX export, and the served answers built on it (recommender `complete_basket`, next-best-action
`cross_sell`) from the trained registry."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from training_consts import SLICE_UNTIL

from pantry.models import load_version, registry, variants
from pantry.models.basket import ARRAYS, MAX_NEIGHBOURS, RANKER_FILE, BasketCompleter, candidate_features
from pantry.settings import Settings
from training import basket
from training.data import load_purchases, to_days
from training.timing import quiet


@pytest.fixture(scope="module")
def purchases(settings: Settings, data_slice):
    return load_purchases(settings, SLICE_UNTIL)


def test_the_table_counts_the_baskets_holding_both_products(purchases):
    table = basket.copurchase(purchases)
    assert len(table.neighbours) > 0
    baskets = purchases.groupby("product_id")["basket_id"].agg(set)
    sizes = np.diff(table.indptr)
    assert sizes.max() <= MAX_NEIGHBOURS
    checked = 0
    for row in np.flatnonzero(sizes)[:25]:
        a = int(table.products[row])
        sl = slice(table.indptr[row], table.indptr[row + 1])
        assert table.freq[row] == len(baskets[a])
        cosine = []
        for j, n in zip(table.neighbours[sl], table.count[sl], strict=True):
            b = int(table.products[j])
            assert b != a and n == len(baskets[a] & baskets[b]) >= basket.MIN_TOGETHER
            cosine.append(n / np.sqrt(table.freq[row] * table.freq[j]))
            checked += 1
        assert cosine == sorted(cosine, reverse=True)  # best partner first
    assert checked > 25


def test_fit_sees_only_baskets_before_the_cut(purchases):
    cut = datetime(2017, 9, 1, tzinfo=UTC)
    fitted = basket.fit(purchases, cut, quiet())
    alone = basket.copurchase(purchases[purchases["day"] < to_days(cut)])
    for a, b in ((fitted.table.products, alone.products), (fitted.table.neighbours, alone.neighbours),
                 (fitted.table.count, alone.count)):
        assert np.array_equal(a, b)
    assert fitted.table.total < basket.copurchase(purchases).total


def test_the_ranker_graph_scores_as_lightgbm_does(purchases, tmp_path):
    fitted = basket.fit(purchases, SLICE_UNTIL, quiet())
    assert fitted.ranker is not None
    basket.save(fitted, tmp_path)
    completer = BasketCompleter.load(tmp_path)
    reps = basket.repertoires(purchases, SLICE_UNTIL)
    rows = []
    for customer, (ids, scores) in list(reps.items())[:10]:
        context = np.flatnonzero(np.diff(fitted.table.indptr))[customer % 7 : customer % 7 + 3]
        rows.append(candidate_features(fitted.table, context, ids, scores).features)
    x = np.concatenate(rows)
    served = completer.ranker.run(["logit"], {"features": x})[0][:, 0]
    assert np.max(np.abs(served - fitted.ranker.logit(x))) < 1e-4


def _active_dir(settings: Settings, name: str):
    return settings.models_dir / name / registry.active_version(settings.models_dir, name)


def _nba_manifest(settings: Settings) -> registry.Manifest:
    return registry.read_manifest(_active_dir(settings, "next_best_action"))


def _cart_product(settings: Settings) -> int:
    """The product with the most neighbours in the active recommender's table."""
    completer = BasketCompleter.load(_active_dir(settings, "recommender"))
    return int(completer.cp.products[np.argmax(np.diff(completer.cp.indptr))])


def test_both_versions_hold_the_table_in_their_manifest(trained):
    for name in ("recommender", "next_best_action"):
        manifest = registry.verify(_active_dir(trained, name))
        assert {f"{a}.npy" for a in ARRAYS} | {RANKER_FILE} <= set(manifest.files)


def test_complete_basket_ranks_what_goes_with_the_cart(trained):
    model = load_version(trained.models_dir, "recommender", registry.active_version(trained.models_dir, "recommender"))
    product = _cart_product(trained)
    customer = int(model.customers[0])
    session = {"cart_product_ids": [product], "session_product_ids": [product]}
    got = model.recommend({"customer_session": session}, customer_id=customer, k=10, surface="complete_basket",
                          exclude=frozenset({product}), store_id=None)
    assert len(got) == 10 and product not in {s.product_id for s in got}
    kind = basket.product_types(trained)[product].lower()  # the reason names the cart item by id and type
    assert got[0].reason.startswith(f"goes with {product} ({kind}) in your cart (bought together in ")
    store = int(model.assortment[0][0])  # the store filter of the other surfaces applies
    mask = model._store_mask(store)
    at_store = model.recommend({"customer_session": session}, customer_id=customer, k=10, surface="complete_basket",
                               exclude=frozenset({product}), store_id=store)
    assert at_store and all(mask[np.searchsorted(model.products, s.product_id)] for s in at_store)
    # no cart and no session: the for_you answer
    for_you = model.recommend({}, customer_id=customer, k=10, surface="for_you", exclude=frozenset(), store_id=None)
    assert model.recommend({}, customer_id=customer, k=10, surface="complete_basket", exclude=frozenset(),
                           store_id=None) == for_you


def test_next_best_action_cross_sells_from_the_cart(trained):
    model = load_version(trained.models_dir, "next_best_action",
                         registry.active_version(trained.models_dir, "next_best_action"))
    product = _cart_product(trained)
    now = datetime(2017, 10, 20, tzinfo=UTC)
    t = model.t
    u = int(np.flatnonzero(np.diff(t.nudge_indptr) >= 3)[0])  # a customer with buy-again nudges
    customer, usual = int(t.customers[u]), int(t.nudge_products[t.nudge_indptr[u]])
    without = model.actions({}, customer_id=customer, campaign_ids=frozenset(), k=3, channel="app", now=now)
    assert usual in {a.product_id for a in without}
    assert all(a.action_type != "cross_sell" for a in without)
    cart = [product, usual]
    features = {"customer_session": {"cart_product_ids": cart, "session_product_ids": cart}}
    actions = model.actions(features, customer_id=customer, campaign_ids=frozenset(), k=3, channel="app", now=now)
    assert len(actions) == 3 and actions[0].action_type == "cross_sell"
    assert actions[0].product_id not in cart and actions[0].rationale.startswith("goes with ")
    assert int(actions[0].rationale.split()[2]) in cart  # names the cart item it goes with
    assert not {a.product_id for a in actions} & set(cart)  # no nudge toward what is in the cart
    rule = variants.RuleNextBestAction(_active_dir(trained, "next_best_action"), _nba_manifest(trained))
    assert rule.actions(features, customer_id=customer, campaign_ids=frozenset(), k=3, channel="app",
                        now=now)[0] == actions[0]  # the baseline variant cross-sells the same way
