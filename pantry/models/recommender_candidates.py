"""A recommender customer's candidates and their re-ranker features: the code serving and training share.

Candidates for a customer = what they bought before the cut (capped) + the ALS top items they never bought + popular
items they never bought. Each gets the features of `candidate_features` (decayed counts, repurchase cycle, ALS
score, popularity...). Serving ranks them per request (pantry/models/recommender.py); training builds the
re-ranker's training and evaluation sets with the same functions, so what is evaluated is what is served.
Numpy only: the artifact's arrays are loaded here too (`load_arrays`, `history_from_arrays`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

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
    "repeat_rate",
    "expected_in_window",
    "week_share_long",
    "week_share_short",
    "item_trend",
)
N_NEW = 30  # never-bought ALS candidates per customer
N_POPULAR = 30  # never-bought popular candidates per customer
MAX_HISTORY = 400  # bought candidates per customer (by decayed count)
LABEL_DAYS = 35  # the re-ranker's label window (about the evaluation holdout's length)
NEVER_DAYS = 400.0


@dataclass(frozen=True)
class History:
    """Per customer x product purchase history as CSR arrays (rows = customer index, sorted by item index)."""

    indptr: np.ndarray  # int64 [n_users + 1]
    items: np.ndarray  # int64 item index
    count: np.ndarray  # float32 baskets with the item
    decayed: np.ndarray  # float32 sum of 0.5 ** (age / 90 days) over those baskets
    decayed_short: np.ndarray  # float32 same with a 21-day half-life
    first_day: np.ndarray  # float64 days since epoch
    last_day: np.ndarray  # float64
    weeks_long: np.ndarray  # float32 distinct weeks (of the last 26) with the item
    weeks_short: np.ndarray  # float32 distinct weeks (of the last 5) with the item
    n_baskets: np.ndarray  # float32 [n_users] baskets of the customer
    active_weeks: np.ndarray  # float32 [n_users] distinct weeks (of the last 26) with any basket
    ref_day: float  # the cut, in days since epoch

    def row(self, u: int) -> slice:
        return slice(int(self.indptr[u]), int(self.indptr[u + 1]))


def candidate_features(
    count: np.ndarray,
    decayed: np.ndarray,
    decayed_short: np.ndarray,
    first_day: np.ndarray,
    last_day: np.ndarray,
    n_baskets: np.ndarray | float,
    als_score: np.ndarray,
    popularity: np.ndarray,
    repeat_rate: np.ndarray,
    ref_day: float,
    customer_first_day: float,
    weeks_long: np.ndarray,
    weeks_short: np.ndarray,
    active_weeks: float,
    trend: np.ndarray,
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
    out[:, 11] = repeat_rate
    # a Poisson guess at "bought again within the label window" from the customer's rate for this item
    active_days = max(ref_day - customer_first_day, 28.0)
    out[:, 12] = 1.0 - np.exp(-(count / active_days) * LABEL_DAYS)
    out[:, 13] = weeks_long / max(active_weeks, 1.0)
    out[:, 14] = weeks_short / 5.0
    out[:, 15] = trend
    return out


@dataclass(frozen=True)
class ItemStats:
    popularity: np.ndarray  # float32 distinct customers in the last 28 days (+ tiny all-time term)
    repeat_rate: np.ndarray  # float32 smoothed share of an item's buyers who bought it in 2+ baskets
    popular_top: np.ndarray  # int64 item indices, most popular first
    trend: np.ndarray  # float32 log of (buyers in the last 14 days + 1) / (buyers in the 8 weeks before / 4 + 1)


def item_stats(popularity: np.ndarray, repeat_rate: np.ndarray, trend: np.ndarray, n_top: int = 200) -> ItemStats:
    top = np.argsort(-popularity, kind="stable")[:n_top].astype(np.int64)
    return ItemStats(popularity.astype(np.float32), repeat_rate.astype(np.float32), top, trend.astype(np.float32))


@dataclass
class Candidates:
    """Candidates of one customer: item indices, features, and the pieces reasons are made of."""

    items: np.ndarray
    features: np.ndarray
    count: np.ndarray
    days_since: np.ndarray


def customer_candidates(
    hist: History, u: int, user_vec: np.ndarray, item_factors: np.ndarray, top_indices: np.ndarray, stats: ItemStats,
    n_new: int = N_NEW, n_popular: int = N_POPULAR, max_history: int = MAX_HISTORY,
) -> Candidates:
    """Bought items (top `max_history` by decayed count) + the first `n_new` never-bought items of the ALS top-k
    + the first `n_popular` never-bought popular items."""
    customer_first = hist.ref_day
    if u >= 0:
        sl = hist.row(u)
        items = hist.items[sl]
        count, decayed, decayed_s = hist.count[sl], hist.decayed[sl], hist.decayed_short[sl]
        first, last = hist.first_day[sl], hist.last_day[sl]
        wl, wsh = hist.weeks_long[sl], hist.weeks_short[sl]
        n_b = float(hist.n_baskets[u])
        act = float(hist.active_weeks[u])
        if len(first):
            customer_first = float(first.min())
        if len(items) > max_history:
            keep = np.argpartition(-decayed, max_history)[:max_history]
            items, count, decayed, decayed_s, first, last, wl, wsh = (
                a[keep] for a in (items, count, decayed, decayed_s, first, last, wl, wsh)
            )
    else:
        items = np.empty(0, dtype=np.int64)
        count = decayed = decayed_s = wl = wsh = np.empty(0, dtype=np.float32)
        first = last = np.empty(0, dtype=np.float64)
        n_b = act = 0.0
    # a mark per catalogue item instead of np.isin: a few microseconds instead of two sorts per request
    taken = np.zeros(len(stats.popularity), dtype=bool)
    taken[items] = True
    new_als = top_indices[~taken[top_indices]][:n_new]
    taken[new_als] = True
    pop = stats.popular_top
    new_pop = pop[~taken[pop]][:n_popular]
    new = np.concatenate([new_als, new_pop])
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
        item_factors[all_items] @ user_vec,
        stats.popularity[all_items],
        stats.repeat_rate[all_items],
        hist.ref_day,
        customer_first,
        np.concatenate([wl, z32]),
        np.concatenate([wsh, z32]),
        act,
        stats.trend[all_items],
    )
    days_since = np.where(all_count > 0, hist.ref_day - all_last, np.inf)
    return Candidates(all_items, feats, all_count, days_since)


# The arrays of a recommender version (one .npy each; training/recommender.py `save` writes them)
ARRAYS = (
    "customers", "products", "user_factors", "item_factors", "popularity", "repeat_rate", "trend",
    "hist_indptr", "hist_items", "hist_count", "hist_decayed", "hist_decayed_short", "hist_first_day",
    "hist_last_day", "hist_weeks_long", "hist_weeks_short", "n_baskets", "active_weeks", "ref_day",
    "store_ids", "store_indptr", "store_items", "store_units",
)


# Per store, the items it stocks (the store filter's): absent from versions trained before they were added, which
# filter on the 28-day sales table (store_ids/store_indptr/store_items) instead
ASSORTMENT_ARRAYS = ("assortment_store_ids", "assortment_indptr", "assortment_items")


def load_arrays(directory: Path) -> dict[str, np.ndarray]:
    out = {name: np.load(directory / f"{name}.npy", allow_pickle=False) for name in ARRAYS}
    if all((directory / f"{name}.npy").exists() for name in ASSORTMENT_ARRAYS):
        out.update({name: np.load(directory / f"{name}.npy", allow_pickle=False) for name in ASSORTMENT_ARRAYS})
    return out


def history_from_arrays(a: dict[str, np.ndarray]) -> History:
    return History(
        indptr=a["hist_indptr"], items=a["hist_items"], count=a["hist_count"], decayed=a["hist_decayed"],
        decayed_short=a["hist_decayed_short"], first_day=a["hist_first_day"], last_day=a["hist_last_day"],
        weeks_long=a["hist_weeks_long"], weeks_short=a["hist_weeks_short"], n_baskets=a["n_baskets"],
        active_weeks=a["active_weeks"], ref_day=float(a["ref_day"][0]),
    )
