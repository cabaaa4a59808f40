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
