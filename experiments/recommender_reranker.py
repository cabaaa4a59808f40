"""Which re-ranker should order the recommender's candidates, and how should ALS weight the basket counts?

Re-ranker (`PANTRY_DATA_DIR=... .venv/bin/python -m experiments.recommender_reranker [max_users]`, default 1500):
the customers sampled from the re-ranker's own training window (history before the test cut - 35 days, labels =
what they bought in the 35 days to the test cut) are split in halves; each ranker is fitted on one half and scored by
precision@10 over the other half's candidate lists, with its fit time (the retrain budget is 2 minutes).
Result (recorded in docs/MODEL_REPORT.md when the choice was made, 1,500 customers): pairwise logistic 0.382;
LightGBM binary 100 trees x 15 leaves 0.390 (fit 8 s): served; lambdarank 100 trees 0.387 (18 s); lambdarank 200
trees lr 0.05 0.393 (52 s, too slow for the budget); on the same split, lambdarank 300 trees x 31 leaves 0.386 and
min_child_samples 300 0.389 (those two are no longer in CANDIDATES). Rerun with the same command when the script
moved here (today's 16 features): pairwise logistic 0.3804 (4.1 s), binary 0.3932 (3.9 s), lambdarank 100 trees
0.3905 (9.1 s), lambdarank 200 trees lr 0.05 0.3891 (20.2 s): the served binary setting is still the best.

ALS weighting (`... -m experiments.recommender_reranker --als`): the evaluation protocol moved one holdout back (cut =
test cut - 35 days = 2017-10-22, truth = products bought in the 35 days up to the test cut); for each ALS setting the
re-ranker is trained at the cut before that (all customers) and for_you / discover precision@10 are measured over
the candidate lists, with the never-bought popularity baseline (a few minutes per setting on 2 cores).
Result (docs/MODEL_REPORT.md, 2,108 customers): plain basket counts 0.3962 / 0.0508 (1.48x never-bought popularity
0.0344); counts x 0.5^(days since the last purchase / 60 d) 0.3961 / 0.0515 (1.49x): served; the same with 32
factors, BM25 K1 1.2, b 0.3 0.3951 / 0.0518 (1.50x). The re-ranked lists move within noise; ALS alone gains
clearly on never-bought items (precision@10 plain 0.037, recency-weighted 0.041-0.047). Variants tried on this
protocol by editing the script (code not kept), none beyond +-0.002 for_you: re-ranker trained on all customers or
on 2-3 stacked 35-day windows (0.396-0.397), LightGBM 200 trees x 31 leaves (0.398), lambdarank (0.395), product
type / category affinity, the item's 35-day return rate, rank within the customer, customer recency, user-kNN
neighbours' recent purchases (0.395-0.398), a product-type diversity penalty in the top 10 (worse: 0.386-0.394), a
dedicated discover ranker over 60-400 never-bought candidates (discover 0.048-0.052), and 60 or 100 never-bought
ALS candidates instead of 30 (discover 0.051). Rerun with `--als` when the script moved here (2 min): 0.3966 /
0.0500 (1.45x), 0.3960 / 0.0512 (1.49x), 0.3952 / 0.0517 (1.50x): the same picture.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
from scipy.optimize import minimize

from pantry.models.recommender_candidates import FEATURE_NAMES, LABEL_DAYS, Candidates, item_stats
from pantry.settings import get_settings
from training import recommender
from training.als import AlsParams
from training.data import build_history, item_popularity, load_purchases, to_days
from training.gbm import GbmParams, fit_lambdarank
from training.logistic import Logistic
from training.protocol import REC_CUT

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


@dataclass
class Split:
    """The re-ranker's training set (its customers' candidate lists and truth), split in halves."""

    cands: list[Candidates]
    users: np.ndarray
    truth: dict[int, set[int]]
    train: np.ndarray  # positions in users
    valid: np.ndarray

    def labels(self, i: int) -> np.ndarray:
        bought = np.fromiter(self.truth.get(int(self.users[i]), ()), dtype=np.int64)
        return np.isin(self.cands[i].items, bought).astype(np.float32)

    def precision(self, score) -> float:
        """precision@10 of `score` (features -> scores) over the validation half's candidate lists."""
        hits = [self.labels(i)[np.argsort(-score(self.cands[i].features), kind="stable")[:10]].sum() / 10
                for i in self.valid]
        return float(np.mean(hits))

    def training_rows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = np.concatenate([self.cands[i].features for i in self.train])
        y = np.concatenate([self.labels(i) for i in self.train])
        return x, y, np.array([len(self.cands[i].items) for i in self.train])


def split(max_users: int) -> Split:
    purchases = load_purchases(get_settings(), REC_CUT)
    cands, users, truth = recommender.reranker_set(purchases, REC_CUT, AlsParams(), max_users=max_users)
    perm = np.random.default_rng(1).permutation(len(users))
    return Split(cands, users, truth, perm[: len(users) // 2], perm[len(users) // 2 :])


def fit_logistic(x: np.ndarray, y: np.ndarray, names: tuple[str, ...], l2: float = 1.0,
                 sample_weight: np.ndarray | None = None, center: bool = True) -> Logistic:
    """`center=False` keeps the mean at 0 (pairwise differences must not be shifted: a shift changes nothing in
    a ranking but would be fit as part of the bias)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    mean = x.mean(axis=0) if center else np.zeros(x.shape[1])
    scale = x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    z = (x - mean) / scale
    sw = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    n = sw.sum()

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:-1], theta[-1]
        t = z @ w + b
        # log(1 + e^t) - y t, computed stably
        ll = np.logaddexp(0.0, t) - y * t
        p = 1.0 / (1.0 + np.exp(-t))
        g = sw * (p - y)
        value = (sw * ll).sum() / n + 0.5 * l2 * (w @ w) / n
        grad = np.concatenate([z.T @ g / n + l2 * w / n, [g.sum() / n]])
        return value, grad

    res = minimize(loss, np.zeros(z.shape[1] + 1), jac=True, method="L-BFGS-B", options={"maxiter": 500})
    return Logistic(names=names, mean=mean, scale=scale, weights=res.x[:-1], bias=float(res.x[-1]))


def fit_pairwise(cands: list[Candidates], users: np.ndarray, truth: dict[int, set[int]],
                 rng: np.random.Generator, pairs_per_customer: int = 300) -> Logistic | None:
    """A linear ranker from within-customer pairs (bought in the window vs not): what matters is the order of
    one customer's candidates, not how active the customer is. Symmetric pairs, so the bias is ~0."""
    diffs = []
    for u, c in zip(users, cands, strict=True):
        label = np.isin(c.items, np.fromiter(truth.get(int(u), ()), dtype=np.int64))
        pos, neg = np.flatnonzero(label), np.flatnonzero(~label)
        if len(pos) == 0 or len(neg) == 0:
            continue
        n = min(pairs_per_customer, len(pos) * len(neg))
        diffs.append(c.features[rng.choice(pos, n)] - c.features[rng.choice(neg, n)])
    if not diffs:
        return None
    d = np.concatenate(diffs)
    x = np.concatenate([d, -d])
    y = np.concatenate([np.ones(len(d)), np.zeros(len(d))])
    return fit_logistic(x, y, FEATURE_NAMES, l2=1.0, center=False)


def main(max_users: int) -> None:
    s = split(max_users)
    start = time.perf_counter()
    linear = fit_pairwise([s.cands[i] for i in s.train], s.users[s.train], s.truth, np.random.default_rng(0))
    print(f"logistic (pairwise)  p@10 {s.precision(linear.logit):.4f}  fit {time.perf_counter() - start:.1f} s")
    x, y, sizes = s.training_rows()
    for params in CANDIDATES:
        start = time.perf_counter()
        model = fit_lambdarank(x, y, sizes, FEATURE_NAMES, params)
        fit_s = time.perf_counter() - start
        print(f"{params}  p@10 {s.precision(model.logit):.4f}  fit {fit_s:.1f} s")


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
    purchases = load_purchases(get_settings(), REC_CUT)
    cut = REC_CUT - timedelta(days=LABEL_DAYS)
    before = purchases[purchases["day"] < to_days(cut)]
    after = purchases[purchases["day"] >= to_days(cut)]
    popular = before.groupby("product_id")["basket_id"].nunique().sort_values(ascending=False, kind="stable")
    for params in ALS_CANDIDATES:
        start = time.perf_counter()
        model = recommender.train_reranker(before, cut, params, max_users=10**9)
        _b, index, _m, _model, uf, itf = recommender.fit_als_at(purchases, cut, params)
        hist = build_history(before, index, cut)
        stats = item_stats(item_popularity(before, index, cut), recommender.repeat_rates(hist, len(index.products)),
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
