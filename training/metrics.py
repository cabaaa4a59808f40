"""Ranking metrics over top-k lists."""

from __future__ import annotations

import numpy as np

from pantry.stats import Z95, rate


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


def interval(values: np.ndarray, binary: bool) -> dict[str, float]:
    """Mean of per-case values with its 95% interval: Wilson for hits (0/1), normal for means of fractions."""
    n = len(values)
    if n == 0:
        return {"value": 0.0, "low": 0.0, "high": 0.0, "n": 0}
    if binary:
        r = rate(float(values.sum()), float(n))
        return {"value": float(r.rate), "low": float(r.low), "high": float(r.high), "n": n}
    mean, half = float(values.mean()), Z95 * float(values.std(ddof=1)) / float(np.sqrt(n)) if n > 1 else 0.0
    return {"value": mean, "low": mean - half, "high": mean + half, "n": n}


def paired_difference(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """mean(a - b) over the same cases with its 95% normal interval (the pairing removes the cases' own spread)."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if len(d) < 2:
        return {"diff": float(d.mean()) if len(d) else 0.0, "low": 0.0, "high": 0.0}
    half = Z95 * float(d.std(ddof=1)) / float(np.sqrt(len(d)))
    return {"diff": float(d.mean()), "low": float(d.mean()) - half, "high": float(d.mean()) + half}
