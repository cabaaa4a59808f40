"""Ranking metrics over top-k lists."""

from __future__ import annotations

import numpy as np


def precision_recall_ndcg(ranked: list[int], truth: set[int], k: int) -> tuple[float, float, float]:
    top = ranked[:k]
    hits = [1.0 if p in truth else 0.0 for p in top]
    n_hit = sum(hits)
    precision = n_hit / k
    recall = n_hit / len(truth) if truth else 0.0
    dcg = sum(h / np.log2(i + 2) for i, h in enumerate(hits))
    ideal = sum(1.0 / np.log2(i + 2) for i in range(min(k, len(truth))))
    return precision, recall, (dcg / ideal if ideal else 0.0)


def summarize(lists: dict[int, list[int]], truth: dict[int, set[int]], k: int, n_catalogue: int) -> dict[str, float]:
    """Mean precision/recall/NDCG@k over the customers in `lists`, and catalogue coverage of all lists."""
    p, r, n = [], [], []
    seen: set[int] = set()
    for c, ranked in lists.items():
        a, b, g = precision_recall_ndcg(ranked, truth.get(c, set()), k)
        p.append(a)
        r.append(b)
        n.append(g)
        seen.update(ranked[:k])
    return {
        "precision@10": float(np.mean(p)) if p else 0.0,
        "recall@10": float(np.mean(r)) if r else 0.0,
        "ndcg@10": float(np.mean(n)) if n else 0.0,
        "coverage": len(seen) / n_catalogue if n_catalogue else 0.0,
        "customers": len(p),
    }
