"""The RecommenderModel contract on a tiny matrix whose right answers are obvious."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pantry.models import load_version, registry
from pantry.scoring import Scored
from training import recommender
from training.als import AlsParams
from training.data import to_days
from training.timing import quiet

UNTIL = datetime(2017, 6, 1, tzinfo=UTC)
STORE_A, STORE_B = 1, 2


def _purchases() -> pd.DataFrame:
    """4 customers x 5 items (plus unrelated background customers). Customers 1-3 buy items 10, 20 and 30
    together; customer 4 buys 10 and 20 only, 10 far more often.
    Item 40 is bought once by customer 1; item 50 only at store B."""
    rows = []
    basket = 0
    day0 = to_days(datetime(2017, 1, 2, tzinfo=UTC))

    def buy(customer: int, items: list[int], day: float, store: int = STORE_A) -> None:
        nonlocal basket
        basket += 1
        for item in items:
            rows.append((customer, item, store, basket, 1, 1.0, day0 + day))

    for week in range(20):
        for customer in (1, 2, 3):
            buy(customer, [10, 20, 30], week * 7.0)
        buy(4, [10], week * 7.0 + 1)
        if week % 5 == 0:
            buy(4, [20], week * 7.0 + 2)
    buy(1, [40], 3.0)
    buy(2, [50], 130.0, store=STORE_B)
    # background customers, each with its own unrelated item, so BM25's idf sees 10/20/30 as informative
    for customer in range(100, 120):
        buy(customer, [customer * 10], 50.0)
    return pd.DataFrame(rows, columns=["customer_id", "product_id", "store_id", "basket_id", "quantity",
                                       "sales_value", "day"])


def _published(models_dir: Path, fitted: recommender.Fitted, version: str):
    staging = registry.staging_dir(models_dir, "recommender", version)
    recommender.save(fitted, staging)
    manifest = registry.Manifest(name="recommender", version=version, trained_until=UNTIL.isoformat(),
                                 data_digest="x", feature_service="recommendations_v1", created_at=UNTIL.isoformat(),
                                 files={})
    registry.publish(staging, manifest)
    return load_version(models_dir, "recommender", version)


@pytest.fixture(scope="module")
def tiny_fitted() -> recommender.Fitted:
    return recommender.fit(_purchases(), UNTIL, AlsParams(factors=4, iterations=10, regularization=0.01), quiet(),
                           rerank=False)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, tiny_fitted):
    return _published(tmp_path_factory.mktemp("models"), tiny_fitted, "v1")


def _ids(items: list[Scored]) -> list[int]:
    return [s.product_id for s in items]


def test_buy_again_ranks_the_customers_own_items_most_bought_first(tiny_model) -> None:
    got = tiny_model.recommend({}, customer_id=4, k=5, surface="buy_again", exclude=frozenset(), store_id=None)
    assert _ids(got) == [10, 20]
    assert all(s.reason.startswith("you bought this") for s in got)
    assert got[0].score > got[1].score


def test_discover_recommends_what_similar_customers_buy(tiny_model) -> None:
    got = tiny_model.recommend({}, customer_id=4, k=1, surface="discover", exclude=frozenset(), store_id=None)
    assert _ids(got) == [30]  # customers 1-3 buy 10+20 with 30; 4 never bought 30
    assert got[0].reason


def test_for_you_mixes_and_respects_exclude_and_store(tiny_model) -> None:
    got = tiny_model.recommend({}, customer_id=4, k=5, surface="for_you", exclude=frozenset({10}), store_id=None)
    assert 10 not in _ids(got) and 20 in _ids(got) and 30 in _ids(got)
    at_a = tiny_model.recommend({}, customer_id=1, k=5, surface="discover", exclude=frozenset(), store_id=STORE_A)
    assert 50 not in _ids(at_a)  # 50 sold only at store B
    assert 40 not in _ids(at_a)  # customer 1 bought 40: not a discovery


def test_store_filter_keeps_what_the_store_sold_before_the_last_four_weeks(tiny_model) -> None:
    """Item 40 was sold at store A once, ~5 months before the cut: the store stocks it (a 2,500-household panel
    records a small sample of a store's sales), so the filter keeps it; item 50, never sold at A, stays out."""
    at_a = _ids(tiny_model.recommend({}, customer_id=4, k=50, surface="for_you", exclude=frozenset(),
                                     store_id=STORE_A))
    assert 40 in at_a and 50 not in at_a
    at_b = _ids(tiny_model.recommend({}, customer_id=4, k=50, surface="for_you", exclude=frozenset(),
                                     store_id=STORE_B))
    assert at_b == [50]


def test_assortment_window_bounds_the_store_filter() -> None:
    """store_tables keeps the sales of the window before the cut only (the filter's table: ASSORTMENT_DAYS)."""
    cut = to_days(UNTIL)
    rows = [(1, 10, STORE_A, 1, 1, 1.0, cut - 400.0), (1, 20, STORE_A, 2, 1, 1.0, cut - 300.0),
            (2, 30, STORE_B, 3, 1, 1.0, cut - 1.0), (2, 40, STORE_B, 4, 1, 1.0, cut + 1.0)]
    before = pd.DataFrame(rows, columns=["customer_id", "product_id", "store_id", "basket_id", "quantity",
                                         "sales_value", "day"])
    from training.data import Index

    index = Index.from_purchases(before)
    ids, indptr, items, _units = recommender.store_tables(before, index, UNTIL, recommender.ASSORTMENT_DAYS)
    assert ids.tolist() == [STORE_A, STORE_B]
    assert index.products[items[indptr[0] : indptr[1]]].tolist() == [20]  # 400 days old: out of the window
    assert index.products[items[indptr[1] : indptr[2]]].tolist() == [30]  # at/after the cut: never


def test_a_version_without_the_assortment_filters_on_four_weeks_of_sales(tmp_path: Path, tiny_fitted) -> None:
    """Versions trained before the assortment arrays still load, and filter as they did (28 days of sales)."""
    from dataclasses import replace

    old = _published(tmp_path, replace(tiny_fitted, assortment=None), "v0")
    assert not list((tmp_path / "recommender" / "v0").glob("assortment_*"))
    at_a = _ids(old.recommend({}, customer_id=4, k=50, surface="for_you", exclude=frozenset(), store_id=STORE_A))
    assert 40 not in at_a and 50 not in at_a and 10 in at_a


def test_unknown_customer_and_popular_fallback(tiny_model) -> None:
    got = tiny_model.recommend({}, customer_id=999, k=3, surface="for_you", exclude=frozenset(), store_id=None)
    assert len(got) == 3
    assert tiny_model.recommend({}, customer_id=999, k=3, surface="buy_again", exclude=frozenset(), store_id=None) == []
    pop = tiny_model.popular(k=2, store_id=STORE_A, exclude=frozenset({10}))
    assert len(pop) == 2 and 10 not in _ids(pop) and "store" in pop[0].reason
    assert _ids(tiny_model.popular(k=3, store_id=None, exclude=frozenset()))[:1] in ([10], [20], [30])


def test_popular_with_a_mask_skips_what_the_store_does_not_hold(tiny_model) -> None:
    """popular() reads a store's list a slice at a time: with a mask it goes on past the masked products, and with
    none left at the store it answers from the global list, masked too."""
    full = _ids(tiny_model.popular(k=3, store_id=STORE_A, exclude=frozenset()))
    mask = np.ones(len(tiny_model.products), dtype=bool)
    mask[np.searchsorted(tiny_model.products, full[0])] = False
    masked = _ids(tiny_model.popular(k=2, store_id=STORE_A, exclude=frozenset(), mask=mask))
    assert masked == full[1:3]
    none = np.zeros(len(tiny_model.products), dtype=bool)
    assert tiny_model.popular(k=2, store_id=STORE_A, exclude=frozenset(), mask=none) == []


def test_stream_repertoire_joins_buy_again(tiny_model) -> None:
    """An item bought after the cut (only in the live repertoire view) becomes a buy-again candidate."""
    feats = {"customer_repertoire": {"repertoire_product_ids": [30, 10], "repertoire_scores": [3.0, 1.0]}}
    got = tiny_model.recommend(feats, customer_id=4, k=5, surface="buy_again", exclude=frozenset(), store_id=None)
    assert set(_ids(got)) == {10, 20, 30}


def test_recency_weighting_halves_a_cell_per_half_life() -> None:
    """ALS input: a cell last bought at the cut keeps its basket count, one last bought a half-life earlier
    weighs half."""
    import numpy as np

    from training.data import Index, interaction_matrix

    cut = to_days(UNTIL)
    rows = [(1, 10, 1, 1, 1, 1.0, cut - 60.0), (1, 10, 1, 2, 1, 1.0, cut - 0.5),  # 2 baskets, last just now
            (2, 10, 1, 3, 1, 1.0, cut - 90.0), (2, 20, 1, 3, 1, 1.0, cut - 30.0)]
    before = pd.DataFrame(rows, columns=["customer_id", "product_id", "store_id", "basket_id", "quantity",
                                         "sales_value", "day"])
    index = Index.from_purchases(before)
    weighted = recommender.recency_weighted(interaction_matrix(before, index), before, index, cut, 30.0).toarray()
    np.testing.assert_allclose(weighted, [[2.0 * 0.5 ** (0.5 / 30.0), 0.0], [0.125, 0.5]], rtol=1e-5)


def test_ranking_cache_gives_the_uncached_answers(trained) -> None:
    """Serving keeps each known customer's scored candidates per process: every surface, store filter and live
    repertoire must give exactly what a scorer without that cache gives, on the first call and from the cache."""
    version = registry.active_version(trained.models_dir, "recommender")
    cached = load_version(trained.models_dir, "recommender", version)
    plain = load_version(trained.models_dir, "recommender", version, recommender_cache=0)
    assert hasattr(cached._ranked_known, "cache_info") and not hasattr(plain._ranked_known, "cache_info")
    customers = [int(c) for c in cached.customers[:12]] + [10**9]  # the last one is unknown: never cached
    bought = set(cached.hist.items[cached.hist.row(0)].tolist())  # what the first customer bought before the cut
    new_to_them = [int(cached.products[i]) for i in range(len(cached.products)) if i not in bought][:3]
    live = {"customer_repertoire": {"repertoire_product_ids": new_to_them, "repertoire_scores": [3.0, 2.0, 1.0]}}
    for customer in customers:
        for surface in ("for_you", "buy_again", "discover"):
            for store in (None, int(cached.store_ids[0])):
                for features in ({}, live):
                    for _ in range(2):
                        args = dict(customer_id=customer, k=10, surface=surface, exclude=frozenset(), store_id=store)
                        assert cached.recommend(features, **args) == plain.recommend(features, **args)
    info = cached._ranked_known.cache_info()
    assert info.misses == len(customers) - 1 and info.hits > info.misses
    fresh = cached.recommend(live, customer_id=customers[0], k=50, surface="buy_again", exclude=frozenset(),
                             store_id=None)
    assert set(new_to_them) <= set(_ids(fresh))  # live purchases still reach a cached customer's buy-again list

    warmed = load_version(trained.models_dir, "recommender", version, recommender_cache=5)
    assert warmed.warm() == 5 and warmed._ranked_known.cache_info().currsize == 5
    busiest = int(warmed.customers[int(np.argmax(warmed.hist.n_baskets))])
    args = dict(customer_id=busiest, k=10, surface="for_you", exclude=frozenset(), store_id=None)
    assert warmed.recommend({}, **args) == plain.recommend({}, **args)
    assert warmed._ranked_known.cache_info().misses == 5  # the busiest customer was ranked by warm()
    assert plain.warm() == 0
