"""Fitting the recommender: ALS (exported to ONNX) + per-customer purchase history + a gradient-boosted re-ranker.

The candidates and their features are pantry/models/recommender_candidates.py's, the code serving ranks with. The
re-ranker (LightGBM trees, ONNX via onnxmltools) is trained on an earlier cut: history before `until - LABEL_DAYS`,
label = bought in [until - LABEL_DAYS, until) (RERANKER_WINDOWS stacks more such windows). `save` writes
a version's artifacts, among them what each store stocks (the store filter's table); `parity` checks the ALS graph
against implicit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from pantry.models.recommender_candidates import (
    ASSORTMENT_ARRAYS,
    FEATURE_NAMES,
    LABEL_DAYS,
    Candidates,
    History,
    ItemStats,
    customer_candidates,
    item_stats,
)
from training import als
from training.data import STORE_WINDOW_DAYS, Index, build_history, interaction_matrix, item_popularity, to_days
from training.gbm import Boosted, GbmParams, fit_lambdarank
from training.onnx_export import als_scoring_graph
from training.timing import Timer

TOP_K = 200  # ALS TopK in the ONNX graph: the pool of never-bought candidates
MIN_BUYERS = 3  # items the ONNX graph scores: bought by at least this many customers (fewer: noise, and slower)
# Binary on 1,500 customers of one label window: ~10 s of the retrain. Lambdarank on every customer of two stacked
# windows gained +0.0023 / +0.0028 precision@10 at the validation cuts for ~50 s more, which took the full retrain
# past its 120 s budget (docs/DECISIONS.md; experiments/recommender_served_cases.py).
RERANKER_GBM = GbmParams(objective="binary", n_trees=100, num_leaves=15, learning_rate=0.1)
RERANKER_USERS: int | None = 1500  # customers per label window (None: every one with a purchase in it)
RERANKER_WINDOWS = 1  # stacked label windows: [until - LABEL_DAYS, until), then the one before it, ...
# The store filter keeps items the store sold in this many days before the cut. The data is a panel of 2,500
# households: a store's recorded sales in 4 weeks are a small sample of what it stocks (docs/DECISIONS.md).
ASSORTMENT_DAYS = 365


def item_trend(purchases: pd.DataFrame, index: Index, until: datetime) -> np.ndarray:
    ref = to_days(until)
    n = len(index.products)

    def buyers(lo: float, hi: float) -> np.ndarray:
        w = purchases[(purchases["day"] >= ref - lo) & (purchases["day"] < ref - hi)]
        g = w.groupby("product_id")["customer_id"].nunique()
        out = np.zeros(n)
        out[index.item_idx(g.index.to_numpy())] = g.to_numpy()
        return out

    return np.log((buyers(14, 0) + 1.0) / (buyers(70, 14) / 4.0 + 1.0)).astype(np.float32)


def repeat_rates(hist: History, n_items: int, prior: float = 5.0) -> np.ndarray:
    buyers = np.bincount(hist.items, minlength=n_items).astype(np.float64)
    repeaters = np.bincount(hist.items, weights=(hist.count >= 2).astype(np.float64), minlength=n_items)
    base = repeaters.sum() / max(buyers.sum(), 1.0)
    return ((repeaters + prior * base) / (buyers + prior)).astype(np.float32)


def batch_candidates(
    users: np.ndarray, hist: History, user_factors: np.ndarray, item_factors: np.ndarray, stats: ItemStats,
    chunk: int = 256,
) -> tuple[np.ndarray, list[Candidates]]:
    """customer_candidates for many customers, scoring ALS in chunks (numpy, the same arithmetic as the graph)."""
    out: list[Candidates] = []
    scorable = scorable_items(hist, item_factors.shape[0])
    sub = item_factors[scorable]
    k = min(TOP_K, len(scorable))
    for start in range(0, len(users), chunk):
        block = users[start : start + chunk]
        scores = user_factors[block] @ sub.T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        for j, u in enumerate(block):
            row = scores[j]
            order = scorable[top[j][np.argsort(-row[top[j]], kind="stable")]]
            out.append(customer_candidates(hist, int(u), user_factors[u], item_factors, order, stats))
    return users, out


def scorable_items(hist: History, n_items: int) -> np.ndarray:
    """Item indices the ALS graph ranks: bought by MIN_BUYERS+ customers (all items when that leaves too few)."""
    buyers = np.bincount(hist.items, minlength=n_items)
    keep = np.flatnonzero(buyers >= MIN_BUYERS)
    return keep if len(keep) >= TOP_K else np.arange(n_items)


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
    stats: ItemStats
    reranker: Boosted | None
    store_ids: np.ndarray
    store_indptr: np.ndarray
    store_items: np.ndarray  # item idx sold at the store in the last 28 days, best-selling first
    store_units: np.ndarray
    # what each store stocks, for the store filter: items sold there in the ASSORTMENT_DAYS before the cut
    assortment: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # store ids, indptr, item idx
    als_model: object = None
    metrics: dict[str, float] = field(default_factory=dict)


_ALS_CACHE: dict[tuple, tuple] = {}


def fit_als_at(purchases: pd.DataFrame, until: datetime, params: als.AlsParams):
    """ALS on the purchases before `until`. The re-ranker and the substitution ranker train at the same inner cut
    in one run: the fit is cached by (cut, params, a fingerprint of the rows) so it is done once."""
    before = purchases[purchases["day"] < to_days(until)]
    key = (until.isoformat(), params, len(before), float(before["day"].sum()), int(before["product_id"].sum()))
    if key in _ALS_CACHE:
        return _ALS_CACHE[key]
    result = _fit_als(before, params, to_days(until))
    _ALS_CACHE.clear()  # keep one fit: they are tens of MB
    _ALS_CACHE[key] = result
    return result


def _fit_als(before: pd.DataFrame, params: als.AlsParams, ref_day: float):
    index = Index.from_purchases(before)
    matrix = interaction_matrix(before, index)
    if params.recency_half_life_days > 0 and matrix.nnz:
        matrix = recency_weighted(matrix, before, index, ref_day, params.recency_half_life_days)
    model = als.fit(matrix, params)
    uf, itf = als.factors(model)
    return before, index, matrix, model, uf, itf


def recency_weighted(matrix, before: pd.DataFrame, index: Index, ref_day: float, half_life_days: float):
    """Each cell (basket count) x 0.5 ** (days from its last purchase to the cut / half-life)."""
    last = before.groupby(["customer_id", "product_id"], sort=False)["day"].max()
    rows = index.user_idx(last.index.get_level_values(0).to_numpy())
    cols = index.item_idx(last.index.get_level_values(1).to_numpy())
    weight = np.power(0.5, np.maximum(ref_day - last.to_numpy(), 0.0) / half_life_days)
    w = sp.csr_matrix((weight, (rows, cols)), shape=matrix.shape, dtype=np.float64)
    out = matrix.multiply(w).tocsr().astype(np.float32)
    out.eliminate_zeros()
    return out


def train_reranker(purchases: pd.DataFrame, until: datetime, params: als.AlsParams, max_users: int | None = -1,
                   seed: int = 0, windows: int | None = None) -> Boosted | None:
    """Fit ALS at `until - LABEL_DAYS`, label candidates with what was bought in the window up to `until`; the same
    one window earlier, and so on (`windows` in all). `max_users` -1: RERANKER_USERS; None: every customer."""
    max_users = RERANKER_USERS if max_users == -1 else max_users
    windows = RERANKER_WINDOWS if windows is None else windows
    # the oldest window first, so that the ALS fit left in fit_als_at's cache is the latest one, the substitution
    # ranker's; the lists are then stacked latest window first
    sets = {w: reranker_set(purchases, until - timedelta(days=w * LABEL_DAYS), params, max_users, seed)
            for w in reversed(range(windows))}
    cands: list[Candidates] = []
    users: list[np.ndarray] = []
    truths: list[dict[int, set[int]]] = []
    for w in range(windows):
        built = sets[w]
        if built is None:
            break
        cands.extend(built[0])
        users.append(built[1] + w * (1 << 32))  # a customer in two windows is two lists
        truths.append({u + w * (1 << 32): t for u, t in built[2].items()})
    if not cands:
        return None
    return fit_boosted(cands, np.concatenate(users), {k: v for t in truths for k, v in t.items()}, RERANKER_GBM)


def fit_boosted(cands: list[Candidates], users: np.ndarray, truth: dict[int, set[int]],
                params: GbmParams = RERANKER_GBM) -> Boosted | None:
    """LightGBM lambdarank over each customer's candidate list (label = bought in the window): trees capture the
    interactions the linear ranker missed (days since the last purchase relative to the item's cycle x count)."""
    xs, ys, sizes = [], [], []
    for u, c in zip(users, cands, strict=True):
        label = np.isin(c.items, np.fromiter(truth.get(int(u), ()), dtype=np.int64))
        if not label.any() or label.all():
            continue  # a list without both kinds teaches a ranker nothing
        xs.append(c.features)
        ys.append(label.astype(np.float32))
        sizes.append(len(label))
    if not xs:
        return None
    return fit_lambdarank(np.concatenate(xs), np.concatenate(ys), np.array(sizes), FEATURE_NAMES, params)


def reranker_set(purchases: pd.DataFrame, until: datetime, params: als.AlsParams, max_users: int | None = 1500,
                 seed: int = 0):
    cut = until - timedelta(days=LABEL_DAYS)
    before, index, _m, _model, uf, itf = fit_als_at(purchases, cut, params)
    if len(index.customers) == 0:
        return None
    hist = build_history(before, index, cut)
    stats = item_stats(item_popularity(before, index, cut), repeat_rates(hist, len(index.products)),
                       item_trend(before, index, cut))
    truth = truth_sets(purchases[purchases["day"] < to_days(until)], index, cut, until)
    users = np.array(sorted(truth), dtype=np.int64)
    if len(users) == 0:
        return None
    rng = np.random.default_rng(seed)
    if max_users is not None and len(users) > max_users:
        users = np.sort(rng.choice(users, size=max_users, replace=False))
    users, cands = batch_candidates(users, hist, uf, itf, stats)
    return cands, users, truth


def store_tables(purchases: pd.DataFrame, index: Index, until: datetime,
                 window_days: float | None = STORE_WINDOW_DAYS):
    """Per store: the items sold there in the `window_days` before `until` (None: every day before it), best-selling
    first, with their units."""
    ref = to_days(until)
    lo = -np.inf if window_days is None else ref - window_days
    recent = purchases[(purchases["day"] >= lo) & (purchases["day"] < ref) & (purchases["store_id"] >= 0)]
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
        stats = item_stats(item_popularity(before, index, until), repeat_rates(hist, len(index.products)),
                           item_trend(before, index, until))
        s_ids, s_ptr, s_items, s_units = store_tables(before, index, until)
        assortment = store_tables(before, index, until, ASSORTMENT_DAYS)[:3]
    reranker = None
    if rerank:
        with timer.step("recommender: re-ranker (ALS at earlier cut + LightGBM fit)"):
            reranker = train_reranker(purchases, until, params)
    return Fitted(index, hist, uf, itf, stats, reranker, s_ids, s_ptr, s_items, s_units, assortment, als_model=model)


def save(fitted: Fitted, directory: Path) -> None:
    h = fitted.hist
    arrays = {
        "customers": fitted.index.customers, "products": fitted.index.products,
        "user_factors": fitted.user_factors, "item_factors": fitted.item_factors,
        "popularity": fitted.stats.popularity, "repeat_rate": fitted.stats.repeat_rate,
        "trend": fitted.stats.trend,
        "hist_indptr": h.indptr, "hist_items": h.items, "hist_count": h.count, "hist_decayed": h.decayed,
        "hist_decayed_short": h.decayed_short, "hist_first_day": h.first_day, "hist_last_day": h.last_day,
        "hist_weeks_long": h.weeks_long, "hist_weeks_short": h.weeks_short,
        "n_baskets": h.n_baskets, "active_weeks": h.active_weeks, "ref_day": np.array([h.ref_day]),
        "store_ids": fitted.store_ids, "store_indptr": fitted.store_indptr, "store_items": fitted.store_items,
        "store_units": fitted.store_units,
    }
    if fitted.assortment is not None:
        arrays.update(zip(ASSORTMENT_ARRAYS, fitted.assortment, strict=True))
    for name, arr in arrays.items():
        np.save(directory / f"{name}.npy", np.ascontiguousarray(arr), allow_pickle=False)
    scorable = scorable_items(h, fitted.item_factors.shape[0])
    np.save(directory / "scorable_items.npy", scorable, allow_pickle=False)
    (directory / "model.onnx").write_bytes(als_scoring_graph(fitted.item_factors[scorable], TOP_K))
    if fitted.reranker is not None:
        (directory / "reranker.onnx").write_bytes(fitted.reranker.onnx("recommender_reranker"))


def parity(fitted: Fitted, session, n_users: int = 64) -> float:
    """Max |ONNX - implicit| over the full score vectors and top-k of some customers (implicit's own recommend)."""
    model = fitted.als_model
    n = min(n_users, len(fitted.index.customers))
    if n == 0:
        return 0.0
    users = np.linspace(0, len(fitted.index.customers) - 1, n).astype(np.int64)
    scorable = scorable_items(fitted.hist, fitted.item_factors.shape[0])
    out = session.run(None, {"user_factors": fitted.user_factors[users]})
    scores, top_scores, top_local = out[0], out[1], out[2]
    worst = 0.0
    k = min(10, scores.shape[1])
    empty = sp.csr_matrix((1, len(fitted.index.products)), dtype=np.float32)
    for row, u in enumerate(users):
        ids, native = model.recommend(int(u), empty, N=k, filter_already_liked_items=False, items=scorable)
        worst = max(worst, float(np.max(np.abs(top_scores[row, :k] - native))))
        local = np.searchsorted(scorable, ids)
        worst = max(worst, float(np.max(np.abs(scores[row, local] - native))))
        worst = max(worst, float(np.max(np.abs(scores[row, top_local[row, :k]] - top_scores[row, :k]))))
    dense = fitted.user_factors[users].astype(np.float64) @ fitted.item_factors[scorable].T.astype(np.float64)
    return max(worst, float(np.max(np.abs(scores - dense))))
