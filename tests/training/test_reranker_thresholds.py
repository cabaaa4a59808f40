"""Boosted rankers' trees (recommender re-ranker, substitution and NBA rankers) give the same scores in LightGBM and
in the float32 ONNX graph, even when the data holds values a float32 step apart (split thresholds rounded down to
float32, `training.gbm.float32_thresholds`)."""

from __future__ import annotations

import numpy as np

from pantry.models.onnx import session
from training.gbm import Boosted, GbmParams, boosted_graph, fit_lambdarank, float32_thresholds


def _adjacent_values_model() -> tuple[Boosted, np.ndarray]:
    """One feature whose label flips between two adjacent float32 values: the split threshold is their midpoint,
    which the converter's rounding to float32 puts onto one of them."""
    low = np.float32(1.6124333)
    high = np.nextafter(low, np.float32(np.inf))
    x = np.repeat(np.array([low, high], dtype=np.float32), 500)[:, None]
    x = np.hstack([x, np.zeros_like(x)])
    y = np.repeat([0.0, 1.0], 500).astype(np.float32)
    model = fit_lambdarank(x, y, np.array([len(y)]), ("value", "constant"),
                           GbmParams(n_trees=3, num_leaves=2, min_child_samples=10, subsample=1.0, colsample=1.0))
    return model, np.array([[low, 0.0], [high, 0.0]], dtype=np.float32)


def _max_diff(graph: bytes, model: Boosted, x: np.ndarray) -> float:
    onnx_logit = session(graph).run(["logit"], {"features": x})[0][:, 0]
    return float(np.max(np.abs(onnx_logit - model.logit(x))))


def test_rounded_down_thresholds_keep_onnx_and_lightgbm_equal() -> None:
    model, x = _adjacent_values_model()
    import lightgbm as lgb

    # the converter's own rounding of the thresholds (objective relabelled as Boosted.onnx does)
    lines = model.model_text.split("\n")
    text = "\n".join("objective=regression" if ln.startswith("objective=") else ln for ln in lines)
    plain = boosted_graph(lgb.Booster(model_str=text), 2, "t")
    assert _max_diff(plain, model, x) > 1e-2  # sends one of the two values the wrong way
    fixed = Boosted(model.names, float32_thresholds(model.model_text))
    np.testing.assert_allclose(fixed.logit(x), model.logit(x), atol=1e-9)  # LightGBM's decisions unchanged
    assert float32_thresholds(fixed.model_text) == fixed.model_text  # idempotent
    assert _max_diff(model.onnx("t"), model, x) <= 1e-5  # every Boosted export (recommender, substitutions, NBA)
