"""Training writes a drift reference into each new version (hashed by the manifest); its customer rows follow the
stream's own feature functions."""

from __future__ import annotations

import math

import numpy as np
from training_consts import SLICE_UNTIL

from pantry import drift
from pantry.models import registry
from pantry.settings import Settings
from training import drift_reference
from training.data import load_purchases


def test_every_new_version_has_a_hashed_reference(trained: Settings) -> None:
    for model in ("recommender", "substitutions", "next_best_action"):
        version = registry.active_version(trained.models_dir, model)
        directory = trained.models_dir / model / version
        manifest = registry.verify(directory)  # the sha256 of every listed file, the reference included
        assert drift.REFERENCE_FILE in manifest.files
        assert manifest.timings_s[f"{model}: drift reference"] < 10.0
        reference = drift.decode_reference((directory / drift.REFERENCE_FILE).read_bytes())
        assert reference.model == model and reference.version == version and reference.sample > 20
        assert [f.name for f in reference.features] == drift.feature_names(model)
        by_name = {f.name: f for f in reference.features}
        top = by_name["score.top"]
        assert top.fractions[-1] < 0.5 and len(top.edges) >= 3  # real scores, spread over bins
        assert by_name["customer_repertoire.repertoire_product_ids"].fractions[-1] < 0.5  # shoppers have history
        for f in reference.features:
            assert math.isclose(sum(f.fractions), 1.0, abs_tol=1e-9) and f.count == reference.sample


def test_rows_match_the_stream_feature_functions(trained: Settings) -> None:
    """The rows training rebuilds one second before a visit equal the stream's rows folded from the same purchases."""
    from streaming.features.customer import CustomerState, activity_row, customer_apply, repertoire_row
    from streaming.features.event import Ev

    purchases = load_purchases(trained, SLICE_UNTIL)
    visits = drift_reference.sample_visits(purchases, SLICE_UNTIL, 30)
    views = drift_reference.customer_views(purchases, visits, 16, np.empty(0, dtype=np.int64))
    checked = 0
    for visit, rows in zip(visits.itertuples(index=False), views, strict=True):
        t = float(visit.t) - 1.0
        mine = purchases[(purchases["customer_id"] == visit.customer_id) & (purchases["day"] * 86_400.0 < t)]
        if mine.empty:
            continue
        st = CustomerState()
        for i, line in enumerate(mine.itertuples(index=False)):
            customer_apply(st, Ev(str(i), "purchase", float(line.day) * 86_400.0, int(line.customer_id),
                                  int(line.store_id), int(line.product_id), int(line.basket_id), int(line.quantity),
                                  float(line.sales_value)))
        stream_activity = activity_row(st, t)
        ours = rows["customer_activity"]
        for field in ("orders_7d", "orders_28d"):
            assert ours[field] == stream_activity[field], (field, visit)
        for field in ("spend_7d", "spend_28d", "last_order_at"):
            assert math.isclose(ours[field], stream_activity[field], abs_tol=1e-3), (field, visit)
        stream_rep = repertoire_row(st, t)
        assert rows["customer_repertoire"]["repertoire_product_ids"] == stream_rep["repertoire_product_ids"]
        checked += 1
    assert checked >= 10
