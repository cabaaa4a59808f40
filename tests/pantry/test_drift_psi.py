"""pantry/drift.py: binning, PSI and thresholds (pure), and the model views kept equal to serving's."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from pantry import drift


def _reference(values) -> drift.FeatureReference:
    return drift.reference_for("x", list(values))


def _live_counts(ref: drift.FeatureReference, values) -> dict[str, dict[int, int]]:
    counts: dict[int, int] = {}
    for v in values:
        b = drift.bin_index(ref.edges, v)
        counts[b] = counts.get(b, 0) + 1
    return {"x": counts}


def _compare(ref, counts):
    reference = drift.DriftReference("recommender", "v", "t", ref.count, [ref])
    return drift.compare(reference, counts, moderate=0.1, significant=0.25, min_count=100)[0]


def test_identical_distributions_have_psi_near_zero() -> None:
    rng = np.random.default_rng(1)
    ref = _reference(rng.normal(size=5000).tolist() + [None] * 500)
    assert len(ref.edges) == 9 and len(ref.fractions) == 11 and abs(sum(ref.fractions) - 1) < 1e-9
    assert abs(ref.fractions[-1] - 500 / 5500) < 1e-9  # the missing bin
    same = _compare(ref, _live_counts(ref, rng.normal(size=5000).tolist() + [None] * 500))
    assert same.psi is not None and same.psi < 0.02 and same.status == "stable"
    assert same.live_count == 5500


def test_shifted_distributions_cross_the_threshold() -> None:
    rng = np.random.default_rng(2)
    ref = _reference(rng.normal(size=5000).tolist())
    moved = _compare(ref, _live_counts(ref, (rng.normal(size=5000) + 1.0).tolist()))
    assert moved.psi > 0.25 and moved.status == "significant"
    slight = _compare(ref, _live_counts(ref, (rng.normal(size=5000) + 0.3).tolist()))
    assert 0.05 < slight.psi < moved.psi
    missing = _compare(ref, _live_counts(ref, [None] * 3000 + rng.normal(size=2000).tolist()))
    assert missing.psi > 0.25  # cold starts: the "missing" bin alone moves PSI
    few = _compare(ref, _live_counts(ref, [5.0] * 10))
    assert few.status == "insufficient" and few.psi > 1  # too few decisions: PSI shown, not judged


def test_discrete_values_and_no_live_data() -> None:
    ref = _reference([0] * 700 + [1] * 200 + [2] * 100)
    assert ref.edges == [0.0, 1.0, 2.0]  # repeated quantiles collapse into fewer bins
    assert drift.bin_index(ref.edges, 0) == 1 and drift.bin_index(ref.edges, 1.5) == 2
    assert drift.bin_index(ref.edges, None) == 4
    assert ref.fractions == [0.0, 0.7, 0.2, 0.1, 0.0]
    empty = _compare(ref, {})
    assert empty.psi is None and empty.status == "insufficient" and empty.live_count == 0
    assert drift.bin_labels(ref.edges) == ["< 0", "0 - 1", "1 - 2", ">= 2", "missing"]


def test_feature_values_and_counts_round_trip() -> None:
    now = datetime(2017, 11, 1, tzinfo=UTC)
    features = {"customer_activity": {"orders_7d": 2, "orders_28d": 5, "spend_7d": 10.5, "spend_28d": None,
                                      "last_order_at": datetime(2017, 10, 30, tzinfo=UTC)},
                "customer_repertoire": {"repertoire_product_ids": [1, 2, 3]}}
    values = drift.feature_values(drift.MODEL_VIEWS["next_best_action"], features, now.timestamp(), [0.5, 0.1])
    names = drift.feature_names("next_best_action")
    got = dict(zip(names, values, strict=True))
    assert got["customer_activity.orders_7d"] == 2 and got["customer_activity.spend_28d"] is None
    assert got["customer_activity.last_order_at"] == 2.0  # age in days at the decision
    assert got["customer_repertoire.repertoire_product_ids"] == 3
    assert got["score.top"] == 0.5 and abs(got["score.mean"] - 0.3) < 1e-12
    counts = drift.parse_counts([{b"score.top|3": b"4", b"x|1": b"2"}, {"score.top|3": "1", "junk": "9"}])
    assert counts == {"score.top": {3: 5}, "x": {1: 2}}
    reference = drift.build_reference("next_best_action", "v", "t", [values, values])
    assert drift.decode_reference(drift.encode_reference(reference)) == reference


def test_model_views_match_what_serving_reads() -> None:
    from serving.answers import next_best_action, recommendations, substitutions

    assert drift.MODEL_VIEWS["recommender"] == recommendations.CUSTOMER_VIEWS
    assert drift.MODEL_VIEWS["substitutions"] == substitutions.CUSTOMER_VIEWS
    assert drift.MODEL_VIEWS["next_best_action"] == next_best_action.CUSTOMER_VIEWS
