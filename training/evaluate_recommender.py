"""The recommendations protocol (cut at the 90% quantile of transaction time, 2017-11-26 14:56:44), baselines
recomputed in the same run.

The model under test is the served path: trained by the same code as `pantry train` at the cut, written to a scratch
registry, loaded with `pantry.models.load_version` and called through `recommend` for every customer with purchases
on both sides. Truth = the set of products each bought after the cut; `discover` and never-bought popularity are
scored against its never-bought part.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from pantry.models import load_version, registry
from training import recommender
from training.als import AlsParams
from training.data import to_days
from training.metrics import summarize
from training.protocol import REC_CUT, SEGMENTS, K
from training.timing import Timer


def _manifest(name: str, version: str, until: datetime) -> registry.Manifest:
    return registry.Manifest(name=name, version=version, trained_until=until.isoformat(), data_digest="evaluation",
                             feature_service="", created_at=datetime.now(UTC).isoformat(), files={})


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    k = min(k, len(scores))
    if k == 0:
        return np.empty(0, dtype=np.int64)
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.argsort(-scores[part], kind="stable")]


def evaluate_recommender(purchases: pd.DataFrame, scratch: Path, timer: Timer) -> dict[str, Any]:
    cut = to_days(REC_CUT)
    before = purchases[purchases["day"] < cut]
    after = purchases[purchases["day"] >= cut]
    customers = sorted(set(before["customer_id"]) & set(after["customer_id"]))
    truth = {int(c): set(g.tolist()) for c, g in after.groupby("customer_id")["product_id"]}
    with timer.step("recommender eval: train at the cut"):
        fitted = recommender.fit(before, REC_CUT, AlsParams(), timer)
        staging = registry.staging_dir(scratch, "recommender", "eval")
        recommender.save(fitted, staging)
        registry.publish(staging, _manifest("recommender", "eval", REC_CUT))
        model = load_version(scratch, "recommender", "eval")
    products = fitted.index.products
    n_catalogue = len(products)
    hist = fitted.hist
    lists: dict[str, dict[int, list[int]]] = {name: {} for name in (
        "for_you (served)", "buy_again (served)", "discover (served)", "popularity", "ALS (bm25, 64 factors)",
        "ALS alone (served, 60 d recency)", "most frequent items", "decayed count (90 d half-life)",
        "naive blend decayed + ALS", "never-bought popularity")}
    latencies: list[float] = []
    with timer.step("recommender eval: plain ALS baseline (basket counts, no recency weighting)"):
        plain = AlsParams(recency_half_life_days=0.0)
        _b, plain_index, _m, _model, plain_uf, plain_itf = recommender.fit_als_at(before, REC_CUT, plain)
    pop_counts = before.groupby("product_id")["basket_id"].nunique().sort_values(ascending=False, kind="stable")
    popular_ids = pop_counts.index.to_numpy()[:500]
    with timer.step("recommender eval: score 2 x served surfaces + baselines"):
        for c in tqdm(customers, desc="recommender eval", unit="customer", leave=False):
            for surface, key in (("for_you", "for_you (served)"), ("discover", "discover (served)"),
                                 ("buy_again", "buy_again (served)")):
                t0 = time.perf_counter()
                got = model.recommend({}, customer_id=c, k=K, surface=surface, exclude=frozenset(), store_id=None)
                latencies.append(time.perf_counter() - t0)
                lists[key][c] = [s.product_id for s in got]
            u = int(np.searchsorted(fitted.index.customers, c))
            sl = hist.row(u)
            items, count, decayed, last = hist.items[sl], hist.count[sl], hist.decayed[sl], hist.last_day[sl]
            als_scores = fitted.user_factors[u] @ fitted.item_factors.T
            lists["popularity"][c] = popular_ids[:K].tolist()
            lists["ALS alone (served, 60 d recency)"][c] = products[_top(als_scores, K)].tolist()
            pu = int(np.searchsorted(plain_index.customers, c))
            plain_scores = plain_uf[pu] @ plain_itf.T
            lists["ALS (bm25, 64 factors)"][c] = plain_index.products[_top(plain_scores, K)].tolist()
            lists["most frequent items"][c] = products[items[_top(count + last / 1e6, K)]].tolist()
            lists["decayed count (90 d half-life)"][c] = products[items[_top(decayed.astype(np.float64), K)]].tolist()
            cand = np.union1d(items, _top(als_scores, 50))
            dec = np.zeros(len(cand))
            dec[np.searchsorted(cand, items)] = decayed
            a = als_scores[cand]
            blend = dec / max(dec.max(), 1e-9) + a / max(np.abs(a).max(), 1e-9)
            lists["naive blend decayed + ALS"][c] = products[cand[_top(blend, K)]].tolist()
            bought = set(products[items].tolist())
            lists["never-bought popularity"][c] = [p for p in popular_ids.tolist() if p not in bought][:K]
    bought_before = {int(c): set(g.tolist()) for c, g in before.groupby("customer_id")["product_id"]}
    new_truth = {c: truth.get(c, set()) - bought_before.get(c, set()) for c in customers}
    results = {}
    for name, per_customer in lists.items():
        t = new_truth if name in ("discover (served)", "never-bought popularity") else truth
        results[name] = summarize(per_customer, t, K, n_catalogue)
    n_baskets = before.groupby("customer_id")["basket_id"].nunique()
    segments = {}
    for lo, hi, label in SEGMENTS:
        members = [c for c in customers if lo <= n_baskets.get(c, 0) < hi]
        segments[label] = {
            name: summarize({c: lists[name][c] for c in members}, new_truth if "discover" in name or
                            "never" in name else truth, K, n_catalogue)["precision@10"]
            for name in ("for_you (served)", "buy_again (served)", "discover (served)",
                         "decayed count (90 d half-life)", "popularity", "never-bought popularity")
        }
        segments[label]["customers"] = len(members)
    lat = np.array(latencies) * 1e3
    return {
        "cut": REC_CUT.isoformat(),
        "customers": len(customers),
        "results": results,
        "segments": segments,
        "latency_ms": {"p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99))},
        "reranker": fitted.reranker.params() if fitted.reranker else None,
    }
