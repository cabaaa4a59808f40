"""The basket-completion protocol: held-out real baskets after the recommendations cut (REC_CUT), a random half of
each basket's products as the cart, precision@10 of the rest; baselines recomputed in the same run.

The model under test is the served path: the co-purchase table and ranker fitted by the same code as `pantry train`
at the cut, written to a scratch directory and loaded by `BasketCompleter.load`, asked with the cart and the
customer's repertoire as the stream would hold it at the cut (training/basket.py `repertoires`). Baselines:
- co-purchase popularity: the products bought together most often with the cart's (the full pair counts, not only
  the kept neighbours), topped up with global popularity;
- global popularity: the products in the most baskets before the cut;
- the customer's repertoire: their most bought products, not in the cart (a reference: the ranker's own input).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from pantry.models.basket import BasketCompleter
from training import basket
from training.data import to_days
from training.metrics import summarize
from training.protocol import REC_CUT, K
from training.timing import Timer

EVAL_BASKETS = 10_000  # held-out baskets sampled (of ~14,000 with 2+ products after the cut)
SEED = 18
MODEL = "complete_basket (served)"
BASELINES = ("co-purchase popularity", "global popularity", "the customer's repertoire")


def _top_excluding(ranked: np.ndarray, cart: set[int], k: int) -> list[int]:
    out = []
    for p in ranked.tolist():
        if p not in cart:
            out.append(p)
            if len(out) == k:
                break
    return out


def evaluate_basket(purchases: pd.DataFrame, timer: Timer) -> dict[str, Any]:
    cut = to_days(REC_CUT)
    before = purchases[purchases["day"] < cut]
    after = purchases[purchases["day"] >= cut]
    fit_timer = Timer(echo=timer.echo)
    with timer.step("basket eval: fit at the cut"), tempfile.TemporaryDirectory(prefix="pantry-basket-") as tmp:
        fitted = basket.fit(before, REC_CUT, fit_timer)
        basket.save(fitted, Path(tmp))
        model = BasketCompleter.load(Path(tmp))
    with timer.step("basket eval: held-out baskets, repertoires, pair counts"):
        held = basket.splits(after, np.random.default_rng(SEED), EVAL_BASKETS)
        reps = basket.repertoires(before, REC_CUT)
        pairs, pair_products, freq, _total = basket.cooccurrence(before)
        popular = pair_products[np.argsort(-freq, kind="stable")[:200]]
    lists: dict[str, dict[int, list[int]]] = {name: {} for name in (MODEL, *BASELINES)}
    truth = {i: s.rest for i, s in enumerate(held)}
    empty = (np.empty(0, dtype=np.int64), np.empty(0))
    latencies = []
    with timer.step("basket eval: score the model + baselines"):
        for i, s in enumerate(tqdm(held, desc="basket eval", unit="basket", leave=False)):
            cart = set(s.cart)
            rep_ids, rep_scores = reps.get(s.customer_id, empty)
            t0 = time.perf_counter()
            got = model.complete(s.cart, [], rep_ids.tolist(), rep_scores.tolist(), k=K, exclude=frozenset(cart))
            latencies.append(time.perf_counter() - t0)
            lists[MODEL][i] = [c.product_id for c in got]
            rows = np.searchsorted(pair_products, s.cart)
            rows = rows[(rows < len(pair_products))]
            rows = rows[np.isin(pair_products[rows], s.cart)]
            together = np.asarray(pairs[rows].sum(axis=0)).ravel() if len(rows) else np.zeros(0)
            top = np.argsort(-together, kind="stable")[: K + len(cart)] if len(together) else np.empty(0, int)
            co = _top_excluding(pair_products[top[together[top] > 0]], cart, K)
            lists["co-purchase popularity"][i] = co + _top_excluding(popular, cart | set(co), K - len(co))
            lists["global popularity"][i] = _top_excluding(popular, cart, K)
            lists["the customer's repertoire"][i] = _top_excluding(rep_ids, cart, K)
    results = {name: summarize(per, truth, K, len(pair_products)) for name, per in lists.items()}
    best = max(results[b]["precision@10"] for b in BASELINES[:2])
    lat = np.array(latencies) * 1e3
    return {
        "cut": REC_CUT.isoformat(),
        "baskets": len(held),
        "results": results,
        "lift_vs_best_baseline": results[MODEL]["precision@10"] / best if best else 0.0,
        "latency_ms": {"p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99))},
        "fit_s": dict(fit_timer.steps),
        "ranker": fitted.ranker.params() if fitted.ranker else None,
    }
