"""Picks the for_you re-ranker and the ALS weighting on validation data before the test cut.

`PANTRY_DATA_DIR=... python -m training.validate_reranker [max_users]`: half of the re-ranker window's customers
train, the other half are scored (precision@10 over their candidate lists), for the logistic ranker and a few
LightGBM settings, with fit times.

`PANTRY_DATA_DIR=... python -m training.validate_reranker --als`: the evaluation protocol moved one holdout back
(cut = test cut - 35 days, truth = products bought in the 35 days up to the test cut): for each ALS setting, the
re-ranker is trained at the cut before that and for_you / discover precision@10 are measured over the candidate
lists, with the never-bought popularity baseline (a few minutes per setting on 2 cores).
"""

from __future__ import annotations

import sys
import time
from datetime import timedelta

import numpy as np

from pantry.settings import Settings
from training import recommender
from training.als import AlsParams
from training.data import build_history, item_popularity, load_purchases, to_days
from training.evaluate import REC_CUT
from training.gbm import GbmParams, fit_lambdarank

CANDIDATES = (
    GbmParams(objective="binary", n_trees=100, num_leaves=15, learning_rate=0.1),
    GbmParams(objective="lambdarank", n_trees=100, num_leaves=15, learning_rate=0.1),
    GbmParams(objective="lambdarank", n_trees=200, num_leaves=15, learning_rate=0.05),
)
ALS_CANDIDATES = (
    AlsParams(recency_half_life_days=0.0),
    AlsParams(recency_half_life_days=60.0),
    AlsParams(factors=32, bm25_k1=1.2, bm25_b=0.3, recency_half_life_days=60.0),
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


def precision_at_10(users, cands, truth, score, keep=None) -> float:
    out = []
    for u, c in zip(users, cands, strict=True):
        s = score(c.features)
        if keep is not None:
            s = np.where(keep(c), s, -np.inf)
        top = np.argsort(-s, kind="stable")[:10]
        bought = truth.get(int(u), set())
        out.append(sum(1 for j in top if np.isfinite(s[j]) and int(c.items[j]) in bought) / 10)
    return float(np.mean(out))


def validate_als() -> None:
    purchases = load_purchases(Settings(), REC_CUT)
    cut = REC_CUT - timedelta(days=recommender.LABEL_DAYS)
    before = purchases[purchases["day"] < to_days(cut)]
    after = purchases[purchases["day"] >= to_days(cut)]
    popular = before.groupby("product_id")["basket_id"].nunique().sort_values(ascending=False, kind="stable")
    for params in ALS_CANDIDATES:
        start = time.perf_counter()
        model = recommender.train_reranker(before, cut, params, max_users=10**9)
        _b, index, _m, _model, uf, itf = recommender.fit_als_at(purchases, cut, params)
        hist = build_history(before, index, cut)
        stats = recommender.item_stats(item_popularity(before, index, cut),
                                       recommender.repeat_rates(hist, len(index.products)),
                                       recommender.item_trend(before, index, cut))
        truth = recommender.truth_sets(purchases, index, cut, REC_CUT)
        users = index.user_idx(np.array(sorted(set(before["customer_id"]) & set(after["customer_id"]))))
        users, cands = recommender.batch_candidates(users, hist, uf, itf, stats)
        pop_items = index.item_idx(popular.index.to_numpy()[:500])
        base = []
        for u in users:
            bought = set(hist.items[hist.row(int(u))].tolist())
            top = [i for i in pop_items.tolist() if i not in bought][:10]
            base.append(len(set(top) & truth.get(int(u), set())) / 10)
        for_you = precision_at_10(users, cands, truth, model.logit)
        discover = precision_at_10(users, cands, truth, model.logit, lambda c: c.count == 0)
        print(f"{params}  customers {len(users)}  for_you p@10 {for_you:.4f}  discover p@10 {discover:.4f} "
              f"({discover / max(float(np.mean(base)), 1e-9):.2f}x never-bought popularity {np.mean(base):.4f})  "
              f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    if "--als" in sys.argv[1:]:
        validate_als()
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 1500)
