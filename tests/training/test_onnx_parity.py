"""The exported ONNX graphs agree with implicit and with the numpy re-ranker to 1e-4."""

from __future__ import annotations

import numpy as np
from scipy.sparse import csr_matrix

from pantry.models import load_active, registry
from pantry.models.onnx import session


def test_als_graph_matches_implicit(settings, data_slice) -> None:
    from training_consts import SLICE_UNTIL, TINY_ALS

    from training.data import load_purchases
    from training.recommender import fit, parity
    from training.timing import quiet

    purchases = load_purchases(settings, SLICE_UNTIL)
    fitted = fit(purchases, SLICE_UNTIL, TINY_ALS, quiet(), rerank=False)
    from training.onnx_export import als_scoring_graph
    from training.recommender import scorable_items

    scorable = scorable_items(fitted.hist, len(fitted.index.products))
    sess = session(als_scoring_graph(fitted.item_factors[scorable], 50))
    assert parity(fitted, sess) <= 1e-4
    # implicit's own recommend over the same items: scores and item ids, for every customer
    empty = csr_matrix((1, len(fitted.index.products)), dtype=np.float32)
    top_scores, top_local = sess.run(["top_scores", "top_indices"], {"user_factors": fitted.user_factors})
    for u in range(len(fitted.index.customers)):
        ids, scores = fitted.als_model.recommend(u, empty, N=10, filter_already_liked_items=False, items=scorable)
        assert np.max(np.abs(top_scores[u, :10] - scores)) <= 1e-4
        ours = scorable[top_local[u, :10]]
        assert set(ours.tolist()) == set(ids.tolist()) or np.isclose(top_scores[u, 9], top_scores[u, 10], atol=1e-4)


def test_registered_models_record_parity(trained) -> None:
    version = registry.active_version(trained.models_dir, "recommender")
    manifest = registry.read_manifest(trained.models_dir / "recommender" / version)
    assert manifest.metrics["onnx_parity_max_abs_diff"] <= 1e-4
    assert manifest.metrics.get("reranker_parity_max_abs_diff", 0.0) <= 1e-4
    assert manifest.timings_s and manifest.data_digest and manifest.trained_until.startswith("2017-11-01")


def test_online_embedding_matches_artifact(trained) -> None:
    """Training pushed the ALS user factors online; the scorer gives the same answer with or without them."""
    from pantry.featurestore import repo
    from pantry.redis_server import sync_client

    models, errors = load_active(trained.models_dir)
    assert errors == {}
    model = models.recommender
    layout = repo.layout(trained)
    client = sync_client(trained)
    customer = int(model.customers[0])
    raw = client.hmget(layout.key("customer_embedding", (customer,)), layout.fields("customer_embedding"))
    row, _ts = layout.decode_row("customer_embedding", raw)
    assert row is not None and row["model_version"] == model.version
    assert np.allclose(row["embedding"], model.user_factors[0], atol=1e-6)
    with_emb = model.recommend({"customer_embedding": row}, customer_id=customer, k=10, surface="for_you",
                               exclude=frozenset(), store_id=None)
    without = model.recommend({}, customer_id=customer, k=10, surface="for_you", exclude=frozenset(), store_id=None)
    assert [s.product_id for s in with_emb] == [s.product_id for s in without]
    stale = dict(row, model_version="other")  # another model's embedding is ignored
    assert model.customer_factors({"customer_embedding": stale}, 0) is not None
    emb = trained.data_dir / "embeddings" / "customer_embedding.parquet"
    assert emb.exists()


def test_boosted_graph_matches_lightgbm() -> None:
    """Both objectives: the ONNX tree ensemble's logit and prob agree with LightGBM's raw score to 1e-4."""
    from training.gbm import GbmParams, fit_lambdarank

    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 6)).astype(np.float32)
    y = ((x[:, 0] * x[:, 1] > 0) & (x[:, 2] > -0.5)).astype(np.float32)  # an interaction a linear model misses
    for objective in ("binary", "lambdarank"):
        model = fit_lambdarank(x, y, np.full(40, 100), tuple(f"f{i}" for i in range(6)),
                               GbmParams(objective=objective, n_trees=30))
        logit, prob = session(model.onnx("t")).run(["logit", "prob"], {"features": x[:500]})
        reference = model.logit(x[:500])
        assert np.max(np.abs(logit[:, 0] - reference)) <= 1e-4
        assert np.max(np.abs(prob[:, 0] - 1.0 / (1.0 + np.exp(-reference)))) <= 1e-4
        assert np.std(reference) > 0.1  # the trees learned something, so parity is not trivially 0 = 0
