"""Training part of `make bench`: retrain time, ALS scoring ONNX vs implicit, the served recommend() per call.

1. Full retrain (all three models, ONNX export, parity checks, registry) into a scratch artifacts dir, timed.
2. ONNX item scoring vs implicit's native `recommend` for the same customers (one call per customer, top 10,
   from the retrained version's factors), p50/p99 per call.
3. The served `Recommender.recommend` (candidates + ONNX ALS + ONNX re-ranker) per surface, p50/p99 per call:
   a customer's first call (computes everything) and the second (its scored candidates from the process's cache).

    python -m load_tests.bench.training      # with the current settings (retrains in a scratch dir); prints JSON
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import msgspec
import numpy as np

from load_tests.bench.figures import CallTimes, ServedRecommend, TrainingFigures
from pantry.settings import Settings

CUSTOMERS = 300
QUICK_CUSTOMERS = 100
SURFACES = ("for_you", "buy_again", "discover")


def _times(samples: list[float]) -> CallTimes:
    ms = np.array(samples) * 1e3
    return CallTimes(calls=len(ms), p50_ms=round(float(np.percentile(ms, 50)), 3),
                     p99_ms=round(float(np.percentile(ms, 99)), 3), mean_ms=round(float(ms.mean()), 3))


def run(settings: Settings, quick: bool = False, progress: bool = False) -> TrainingFigures:
    from implicit.cpu.als import AlternatingLeastSquares
    from scipy.sparse import csr_matrix
    from threadpoolctl import threadpool_limits

    from pantry.models import load_version, registry
    from pantry.models.onnx import session
    from training.data import default_until
    from training.pipeline import train

    n_users = QUICK_CUSTOMERS if quick else CUSTOMERS
    with tempfile.TemporaryDirectory(prefix="pantry-bench-") as tmp:
        scratch = msgspec.structs.replace(settings, artifacts_dir=Path(tmp))
        start = time.perf_counter()
        result = train(scratch, default_until(settings), activate=True, force=True, push=False,
                       echo=(print if progress else (lambda _m: None)))
        retrain_s = time.perf_counter() - start
        version = result.versions["recommender"]
        vdir = scratch.models_dir / "recommender" / version
        registry.verify(vdir)
        user_factors = np.load(vdir / "user_factors.npy")
        item_factors = np.load(vdir / "item_factors.npy")

        native = AlternatingLeastSquares(factors=user_factors.shape[1])
        native.user_factors, native.item_factors = user_factors, item_factors
        sess = session((vdir / "model.onnx").read_bytes())
        rng = np.random.default_rng(0)
        users = rng.choice(len(user_factors), size=min(n_users, len(user_factors)), replace=False)
        empty = csr_matrix((1, item_factors.shape[0]), dtype=np.float32)
        onnx_t, native_t = [], []
        with threadpool_limits(1, "blas"):
            for u in users[:20]:  # warm-up both
                sess.run(["top_scores", "top_indices"], {"user_factors": user_factors[u : u + 1]})
                native.recommend(int(u), empty, N=10, filter_already_liked_items=False)
            for u in users:
                t0 = time.perf_counter()
                sess.run(["top_scores", "top_indices"], {"user_factors": user_factors[u : u + 1]})
                onnx_t.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                native.recommend(int(u), empty, N=10, filter_already_liked_items=False)
                native_t.append(time.perf_counter() - t0)

        model = load_version(scratch.models_dir, "recommender", version)
        customers = model.customers[users]
        ranked = model._ranked_known  # the per-process LRU of scored candidates (pantry/models/recommender.py)
        served = []
        for surface in SURFACES:
            cold, cached = [], []
            if hasattr(ranked, "cache_clear"):
                ranked.cache_clear()
            for c in customers:
                for times in (cold, cached):  # first call computes everything, the second reads the cache
                    t0 = time.perf_counter()
                    model.recommend({}, customer_id=int(c), k=10, surface=surface, exclude=frozenset(),
                                    store_id=None)
                    times.append(time.perf_counter() - t0)
            served.append(ServedRecommend(surface=surface, first_call=_times(cold), cached=_times(cached)))
    return TrainingFigures(retrain_total_s=round(retrain_s, 2),
                           retrain_steps_s={k: round(v, 2) for k, v in result.timings_s.items()},
                           n_items=int(item_factors.shape[0]), onnx_topk=_times(onnx_t),
                           implicit_recommend=_times(native_t), served=served)


if __name__ == "__main__":
    from pantry.settings import get_settings

    print(msgspec.json.format(msgspec.json.encode(run(get_settings(), progress=True))).decode())
