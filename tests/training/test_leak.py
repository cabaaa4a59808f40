"""No purchase at or after --until reaches the model: the matrix, histories and tables come from before the cut."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd

from pantry import dataset
from training.data import Index, build_history, interaction_matrix, load_purchases, to_days
from training.recommender import store_tables

CUT = datetime(2017, 9, 14, 10, 30, tzinfo=UTC)


def test_training_matrix_holds_only_purchases_before_the_cut(settings, data_slice) -> None:
    raw = dataset.read_events(settings).to_pandas()
    raw = raw[raw["type"] == "purchase"]
    before = raw[raw["ts"] < pd.Timestamp(CUT)]
    after = raw[raw["ts"] >= pd.Timestamp(CUT)]
    assert len(before) and len(after), "the cut must split the slice for this test to mean anything"

    purchases = load_purchases(settings, CUT)
    assert purchases["day"].max() < to_days(CUT)
    assert len(purchases) == len(before)

    index = Index.from_purchases(purchases)
    matrix = interaction_matrix(purchases, index)
    # every cell = baskets with that (customer, product) strictly before the cut, computed from the raw events
    expected = before.groupby(["customer_id", "product_id"])["basket_id"].nunique()
    rows = index.user_idx(expected.index.get_level_values(0).to_numpy(dtype=np.int64))
    cols = index.item_idx(expected.index.get_level_values(1).to_numpy(dtype=np.int64))
    assert np.array_equal(np.asarray(matrix[rows, cols]).ravel(), expected.to_numpy(dtype=np.float32))
    assert matrix.nnz == len(expected)
    assert matrix.sum() == expected.sum()

    # products first bought after the cut are unknown to the model
    only_after = set(after["product_id"].astype(int)) - set(before["product_id"].astype(int))
    assert only_after and not (only_after & set(index.products.tolist()))

    hist = build_history(purchases, index, CUT)
    assert hist.last_day.max() < to_days(CUT)
    assert hist.count.sum() == expected.sum()
    _ids, _ptr, _items, units = store_tables(purchases, index, CUT)
    assert units.sum() <= len(before)


# ---- Feast historical retrieval: a feature-log row at or after --until never reaches a training set ----------

POISON = (999_999_001, 999_999_002)  # product ids no real repertoire holds


def _log_rows(path, rows) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("customer_id", pa.int64()), ("repertoire_product_ids", pa.list_(pa.int64())),
                        ("repertoire_scores", pa.list_(pa.float32())),
                        ("event_timestamp", pa.timestamp("us", tz="UTC"))])
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def test_feature_rows_at_or_after_until_never_reach_the_nba_training_set(settings, data_slice, feast_applied):
    import shutil
    from datetime import timedelta

    import pytest

    from training import nba
    from training.data import historical_features

    until = datetime(2017, 11, 1, tzinfo=UTC)
    red = dataset.read_table(settings, "coupon_redemptions")
    red = red[(red["redemption_date"] < pd.Timestamp(until)) &
              (red["redemption_date"] >= pd.Timestamp(until - timedelta(days=nba.TRAIN_DAYS)))]
    assert len(red), "the slice must have redemptions in the training window"
    log = settings.feature_log_dir / "customer_repertoire"
    # a replay by earlier tests leaves hundreds of day-partitions here (Feast's dask store is slow over them):
    # set it aside for this test, which writes its own rows, and put it back after
    aside = log.with_name(log.name + ".leak-test-aside")
    if log.exists():
        log.rename(aside)
    honest = log / "2017-06-04" / "pantry-leak-test.parquet"
    poison = log / "2017-11-01" / "pantry-leak-test.parquet"
    customers = sorted(int(c) for c in red["customer_id"].unique())
    try:
        # an honest row long before the window; later, for every customer rows at the cut and after it
        _log_rows(honest, [{"customer_id": c, "repertoire_product_ids": [1], "repertoire_scores": [1.0],
                            "event_timestamp": until - timedelta(days=150)} for c in customers])
        purchases = load_purchases(settings, until)
        clean, clean_pos = nba.training_groups(settings, purchases, until, live=True)
        assert clean, "the slice must give training redemptions"
        _log_rows(poison, [{"customer_id": c, "repertoire_product_ids": list(POISON), "repertoire_scores": [50.0, 50.0],
                            "event_timestamp": until + timedelta(hours=h)} for c in customers for h in (0, 24)])
        xs, pos = nba.training_groups(settings, purchases, until, live=True)
        # rows stamped at and after the cut change nothing in the training set
        assert pos == clean_pos and all(np.array_equal(a, b) for a, b in zip(xs, clean, strict=True))
        # every redemption of the window gets the honest row (a repertoire, so the retrieval did run)
        events = nba.redemption_events(settings, until - timedelta(days=nba.TRAIN_DAYS), until)
        reps = nba.repertoires_at(settings, events, until)
        assert reps and all(r is not None and not set(r[0].tolist()) & set(POISON) for r in reps)
        # an entity row at the cut itself is refused (as-of the cut would be allowed to see a row stamped at it)
        at_cut = pd.DataFrame({"customer_id": customers[:1], "event_timestamp": [pd.Timestamp(until)]})
        with pytest.raises(ValueError, match="until"):
            historical_features(settings, at_cut, nba.REPERTOIRE_FEATURES, until)
        # and without --until the same retrieval does see the poison: the test can fail
        later = pd.Timestamp(until + timedelta(days=2))
        after = pd.DataFrame({"customer_id": customers[:1], "event_timestamp": [later]})
        seen = historical_features(settings, after, nba.REPERTOIRE_FEATURES, None)
        assert set(seen["repertoire_product_ids"].iloc[0]) == set(POISON)
    finally:
        for path in (honest, poison):
            path.unlink(missing_ok=True)
            if path.parent.exists() and not any(path.parent.iterdir()):
                path.parent.rmdir()
        shutil.rmtree(log, ignore_errors=True)
        if aside.exists():
            aside.rename(log)
