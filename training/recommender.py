"""The recommender: ALS (exported to ONNX) + per-customer purchase history + a learned logistic re-ranker.

Candidates for a customer = everything they bought before the cut (capped) + the ALS top items they never bought.
Each candidate gets the features of `candidate_features` (decayed counts, repurchase cycle, ALS score,
popularity...); the re-ranker (logistic regression, ONNX) is trained on an earlier cut: history before
`until - LABEL_DAYS`, label = bought in [until - LABEL_DAYS, until). The same candidate code serves requests
(training/scorers.py) and builds the training/evaluation sets, so what is evaluated is what is served.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from training import als
from training.data import (
    STORE_WINDOW_DAYS,
    History,
    Index,
    build_history,
    interaction_matrix,
    item_popularity,
    to_days,
)
from training.logistic import Logistic, fit_logistic
from training.onnx_export import als_scoring_graph
from training.timing import Timer

FEATURE_NAMES = (
    "bought",
    "log_count",
    "log_decayed",
    "log_decayed_short",
    "basket_share",
    "log_days_since",
    "cycle_ratio",
    "due_now",
    "als_score",
    "log_popularity",
    "log_n_baskets",
)
TOP_K = 200  # ALS TopK in the ONNX graph: the pool of never-bought candidates
N_NEW = 30  # never-bought ALS candidates per customer
MAX_HISTORY = 400  # bought candidates per customer (by decayed count)
LABEL_DAYS = 35  # the re-ranker's label window (about the evaluation holdout's length)
NEVER_DAYS = 400.0


def candidate_features(
    count: np.ndarray,
    decayed: np.ndarray,
    decayed_short: np.ndarray,
    first_day: np.ndarray,
    last_day: np.ndarray,
    n_baskets: np.ndarray | float,
    als_score: np.ndarray,
    popularity: np.ndarray,
    ref_day: float,
) -> np.ndarray:
    """[n, len(FEATURE_NAMES)] float32. Never-bought candidates have count 0 (their day fields are ignored)."""
    bought = count > 0
    days_since = np.where(bought, np.maximum(ref_day - last_day, 0.0), NEVER_DAYS)
    interval = np.where(count >= 2, (last_day - first_day) / np.maximum(count - 1, 1), 60.0)
    interval = np.maximum(interval, 1.0)
    ratio = np.where(bought, days_since / interval, 0.0)
    n_b = np.maximum(np.asarray(n_baskets, dtype=np.float64), 1.0)
    out = np.empty((len(count), len(FEATURE_NAMES)), dtype=np.float32)
    out[:, 0] = bought
    out[:, 1] = np.log1p(count)
    out[:, 2] = np.log1p(decayed)
    out[:, 3] = np.log1p(decayed_short)
    out[:, 4] = count / n_b
    out[:, 5] = np.log1p(days_since)
    out[:, 6] = np.minimum(np.log1p(ratio), 3.0)
    out[:, 7] = np.where(bought & (count >= 2), np.exp(-np.abs(np.log((days_since + 1.0) / (interval + 1.0)))), 0.0)
    out[:, 8] = als_score
    out[:, 9] = np.log1p(popularity)
    out[:, 10] = np.log1p(n_b)
    return out


@dataclass
class Candidates:
    """Candidates of one customer: item indices, features, and the pieces reasons are made of."""

    items: np.ndarray
    features: np.ndarray
    count: np.ndarray
    days_since: np.ndarray


def customer_candidates(
    hist: History, u: int, scores_row: np.ndarray, top_indices: np.ndarray, popularity: np.ndarray,
    n_new: int = N_NEW, max_history: int = MAX_HISTORY,
) -> Candidates:
    """Bought items (top `max_history` by decayed count) + the first `n_new` never-bought items of the ALS top-k."""
    if u >= 0:
        sl = hist.row(u)
        items = hist.items[sl]
        count, decayed, decayed_s = hist.count[sl], hist.decayed[sl], hist.decayed_short[sl]
        first, last = hist.first_day[sl], hist.last_day[sl]
        n_b = float(hist.n_baskets[u])
        if len(items) > max_history:
            keep = np.argpartition(-decayed, max_history)[:max_history]
            items, count, decayed, decayed_s, first, last = (
                a[keep] for a in (items, count, decayed, decayed_s, first, last)
            )
    else:
        items = np.empty(0, dtype=np.int64)
        count = decayed = decayed_s = np.empty(0, dtype=np.float32)
        first = last = np.empty(0, dtype=np.float64)
        n_b = 0.0
    new = top_indices[~np.isin(top_indices, items)][:n_new] if len(items) else top_indices[:n_new]
    all_items = np.concatenate([items, new]).astype(np.int64)
    z32 = np.zeros(len(new), dtype=np.float32)
    z64 = np.zeros(len(new), dtype=np.float64)
    all_count = np.concatenate([count, z32])
    all_last = np.concatenate([last, z64])
    feats = candidate_features(
        all_count,
        np.concatenate([decayed, z32]),
        np.concatenate([decayed_s, z32]),
        np.concatenate([first, z64]),
        all_last,
        n_b,
        scores_row[all_items],
        popularity[all_items],
        hist.ref_day,
    )
    days_since = np.where(all_count > 0, hist.ref_day - all_last, np.inf)
    return Candidates(all_items, feats, all_count, days_since)


def batch_candidates(
    users: np.ndarray, hist: History, user_factors: np.ndarray, item_factors: np.ndarray, popularity: np.ndarray,
    chunk: int = 256,
) -> tuple[np.ndarray, list[Candidates]]:
    """customer_candidates for many customers, scoring ALS in chunks (numpy, the same arithmetic as the graph)."""
    out: list[Candidates] = []
    k = min(TOP_K, item_factors.shape[0])
    for start in range(0, len(users), chunk):
        block = users[start : start + chunk]
        scores = user_factors[block] @ item_factors.T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        for j, u in enumerate(block):
            row = scores[j]
            order = top[j][np.argsort(-row[top[j]], kind="stable")]
            out.append(customer_candidates(hist, int(u), row, order, popularity))
    return users, out


def labels_for(cands: list[Candidates], users: np.ndarray, truth: dict[int, set[int]]) -> np.ndarray:
    return np.concatenate(
        [
            np.isin(c.items, np.fromiter(truth.get(int(u), ()), dtype=np.int64))
            for u, c in zip(users, cands, strict=True)
        ]
    ).astype(np.float32)


def truth_sets(purchases: pd.DataFrame, index: Index, start: datetime, end: datetime) -> dict[int, set[int]]:
    """user index -> item indices bought in [start, end) (items unknown to the index are dropped)."""
    lo, hi = to_days(start), to_days(end)
    window = purchases[(purchases["day"] >= lo) & (purchases["day"] < hi)]
    u = index.user_idx(window["customer_id"].to_numpy())
    i = index.item_idx(window["product_id"].to_numpy())
    ok = (u >= 0) & (i >= 0)
    frame = pd.DataFrame({"u": u[ok], "i": i[ok]}).drop_duplicates()
    return {int(k): set(v.tolist()) for k, v in frame.groupby("u")["i"]}


@dataclass
class Fitted:
    """Everything the recommender artifact holds, in memory."""

    index: Index
    hist: History
    user_factors: np.ndarray
    item_factors: np.ndarray
    popularity: np.ndarray
    reranker: Logistic | None
    store_ids: np.ndarray
    store_indptr: np.ndarray
    store_items: np.ndarray  # item idx sold at the store in the last 28 days, best-selling first
    store_units: np.ndarray
    als_model: object = None
    metrics: dict[str, float] = field(default_factory=dict)


def fit_als_at(purchases: pd.DataFrame, until: datetime, params: als.AlsParams):
    before = purchases[purchases["day"] < to_days(until)]
    index = Index.from_purchases(before)
    matrix = interaction_matrix(before, index)
    model = als.fit(matrix, params)
    uf, itf = als.factors(model)
    return before, index, matrix, model, uf, itf


def train_reranker(purchases: pd.DataFrame, until: datetime, params: als.AlsParams, max_users: int = 1500,
                   seed: int = 0) -> Logistic | None:
    """Fit ALS at `until - LABEL_DAYS`, label candidates with what was bought in the window up to `until`."""
    cut = until - timedelta(days=LABEL_DAYS)
    before, index, _m, _model, uf, itf = fit_als_at(purchases, cut, params)
    if len(index.customers) == 0:
        return None
    hist = build_history(before, index, cut)
    pop = item_popularity(before, index, cut)
    truth = truth_sets(purchases[purchases["day"] < to_days(until)], index, cut, until)
    users = np.array(sorted(truth), dtype=np.int64)
    if len(users) == 0:
        return None
    rng = np.random.default_rng(seed)
    if len(users) > max_users:
        users = np.sort(rng.choice(users, size=max_users, replace=False))
    users, cands = batch_candidates(users, hist, uf, itf, pop)
    x = np.concatenate([c.features for c in cands])
    y = labels_for(cands, users, truth)
    if y.min() == y.max():
        return None
    return fit_logistic(x, y, FEATURE_NAMES, l2=1.0)


def store_tables(purchases: pd.DataFrame, index: Index, until: datetime):
    ref = to_days(until)
    recent = purchases[(purchases["day"] >= ref - STORE_WINDOW_DAYS) & (purchases["store_id"] >= 0)]
    units = recent.groupby(["store_id", "product_id"]).size().reset_index(name="units")
    units["i"] = index.item_idx(units["product_id"].to_numpy())
    units = units[units["i"] >= 0].sort_values(["store_id", "units", "i"], ascending=[True, False, True])
    store_ids = np.unique(units["store_id"].to_numpy())
    counts = units.groupby("store_id").size().reindex(store_ids).to_numpy()
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return store_ids.astype(np.int64), indptr, units["i"].to_numpy(np.int64), units["units"].to_numpy(np.float32)


def fit(purchases: pd.DataFrame, until: datetime, params: als.AlsParams, timer: Timer,
        rerank: bool = True) -> Fitted:
    with timer.step("recommender: ALS fit"):
        before, index, _matrix, model, uf, itf = fit_als_at(purchases, until, params)
    with timer.step("recommender: history + popularity tables"):
        hist = build_history(before, index, until)
        pop = item_popularity(before, index, until)
        s_ids, s_ptr, s_items, s_units = store_tables(before, index, until)
    reranker = None
    if rerank:
        with timer.step("recommender: re-ranker (ALS at earlier cut + logistic fit)"):
            reranker = train_reranker(purchases, until, params)
    return Fitted(index, hist, uf, itf, pop, reranker, s_ids, s_ptr, s_items, s_units, als_model=model)


ARRAYS = (
    "customers", "products", "user_factors", "item_factors", "popularity",
    "hist_indptr", "hist_items", "hist_count", "hist_decayed", "hist_decayed_short", "hist_first_day",
    "hist_last_day", "n_baskets", "ref_day", "store_ids", "store_indptr", "store_items", "store_units",
)


def save(fitted: Fitted, directory: Path) -> None:
    h = fitted.hist
    arrays = {
        "customers": fitted.index.customers, "products": fitted.index.products,
        "user_factors": fitted.user_factors, "item_factors": fitted.item_factors, "popularity": fitted.popularity,
        "hist_indptr": h.indptr, "hist_items": h.items, "hist_count": h.count, "hist_decayed": h.decayed,
        "hist_decayed_short": h.decayed_short, "hist_first_day": h.first_day, "hist_last_day": h.last_day,
        "n_baskets": h.n_baskets, "ref_day": np.array([h.ref_day]),
        "store_ids": fitted.store_ids, "store_indptr": fitted.store_indptr, "store_items": fitted.store_items,
        "store_units": fitted.store_units,
    }
    for name, arr in arrays.items():
        np.save(directory / f"{name}.npy", np.ascontiguousarray(arr), allow_pickle=False)
    (directory / "model.onnx").write_bytes(als_scoring_graph(fitted.item_factors, TOP_K))
    if fitted.reranker is not None:
        (directory / "reranker.onnx").write_bytes(fitted.reranker.onnx("recommender_reranker"))


def load_arrays(directory: Path) -> dict[str, np.ndarray]:
    return {name: np.load(directory / f"{name}.npy", allow_pickle=False) for name in ARRAYS}


def history_from_arrays(a: dict[str, np.ndarray]) -> History:
    return History(
        indptr=a["hist_indptr"], items=a["hist_items"], count=a["hist_count"], decayed=a["hist_decayed"],
        decayed_short=a["hist_decayed_short"], first_day=a["hist_first_day"], last_day=a["hist_last_day"],
        n_baskets=a["n_baskets"], ref_day=float(a["ref_day"][0]),
    )


def parity(fitted: Fitted, session, n_users: int = 64) -> float:
    """Max |ONNX - implicit| over the full score vectors and top-k of some customers (implicit's own recommend)."""
    model = fitted.als_model
    n = min(n_users, len(fitted.index.customers))
    if n == 0:
        return 0.0
    users = np.linspace(0, len(fitted.index.customers) - 1, n).astype(np.int64)
    out = session.run(None, {"user_factors": fitted.user_factors[users]})
    scores, top_scores = out[0], out[1]
    worst = 0.0
    k = min(10, scores.shape[1])
    from scipy.sparse import csr_matrix

    empty = csr_matrix((1, len(fitted.index.products)), dtype=np.float32)
    for row, u in enumerate(users):
        ids, native = model.recommend(int(u), empty, N=k, filter_already_liked_items=False)
        worst = max(worst, float(np.max(np.abs(top_scores[row, :k] - native))))
        worst = max(worst, float(np.max(np.abs(scores[row, ids] - native))))
    dense = fitted.user_factors[users].astype(np.float64) @ fitted.item_factors.T.astype(np.float64)
    return max(worst, float(np.max(np.abs(scores - dense))))
