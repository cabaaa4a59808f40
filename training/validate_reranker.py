"""Picks the for_you re-ranker on validation customers of its own training window (before the test cut).

`PANTRY_DATA_DIR=... python -m training.validate_reranker [max_users]`: half of the window's customers train,
the other half are scored (precision@10 over their candidate lists), for the logistic ranker and a few LightGBM
settings, with fit times.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from pantry.settings import Settings
from training import recommender
from training.als import AlsParams
from training.data import load_purchases
from training.evaluate import REC_CUT
from training.gbm import GbmParams, fit_lambdarank

CANDIDATES = (
    GbmParams(objective="binary", n_trees=100, num_leaves=15, learning_rate=0.1),
    GbmParams(objective="lambdarank", n_trees=100, num_leaves=15, learning_rate=0.1),
    GbmParams(objective="lambdarank", n_trees=200, num_leaves=15, learning_rate=0.05),
)


def main(max_users: int) -> None:
    purchases = load_purchases(Settings(), REC_CUT)
    cands, users, truth = recommender.reranker_set(purchases, REC_CUT, AlsParams(), max_users=max_users)
    perm = np.random.default_rng(1).permutation(len(users))
    train, valid = perm[: len(users) // 2], perm[len(users) // 2 :]

    def labels(i: int) -> np.ndarray:
        bought = np.fromiter(truth.get(int(users[i]), ()), dtype=np.int64)
        return np.isin(cands[i].items, bought).astype(np.float32)

    def precision(score) -> float:
        hits = [labels(i)[np.argsort(-score(cands[i].features), kind="stable")[:10]].sum() / 10 for i in valid]
        return float(np.mean(hits))

    start = time.perf_counter()
    linear = recommender.fit_pairwise([cands[i] for i in train], users[train], truth, np.random.default_rng(0))
    print(f"logistic (pairwise)  p@10 {precision(linear.logit):.4f}  fit {time.perf_counter() - start:.1f} s")
    x = np.concatenate([cands[i].features for i in train])
    y = np.concatenate([labels(i) for i in train])
    sizes = np.array([len(cands[i].items) for i in train])
    for params in CANDIDATES:
        start = time.perf_counter()
        model = fit_lambdarank(x, y, sizes, recommender.FEATURE_NAMES, params)
        fit_s = time.perf_counter() - start
        print(f"{params}  p@10 {precision(model.logit):.4f}  fit {fit_s:.1f} s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1500)
