"""Implicit ALS (CPU) on BM25-weighted basket counts."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


@dataclass(frozen=True)
class AlsParams:
    factors: int = 64
    regularization: float = 0.05
    iterations: int = 15
    alpha: float = 1.0
    bm25_k1: float = 100.0
    bm25_b: float = 0.8
    random_state: int = 42
    # > 0: a customer x product cell is its basket count x 0.5 ** (days since its last purchase / this), so what a
    # customer stopped buying weighs less than what they buy now; 0: plain basket counts. 60 d chosen on a
    # validation cut before the test cut (`python -m experiments.recommender_reranker --als`): ALS alone on never-bought
    # items 0.037 -> 0.041-0.047 precision@10; the re-ranked for_you / discover lists change within noise.
    recency_half_life_days: float = 60.0


def weighted(matrix: sp.csr_matrix, params: AlsParams) -> sp.csr_matrix:
    from implicit.nearest_neighbours import bm25_weight

    return bm25_weight(matrix, K1=params.bm25_k1, B=params.bm25_b).tocsr().astype(np.float32)


def fit(matrix: sp.csr_matrix, params: AlsParams, threads: int = 2):
    """Fit on a customers x products matrix; returns the implicit model (CPU)."""
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    # implicit runs its own parallel loop; BLAS threads inside it slow it down (and it warns)
    with threadpool_limits(1, "blas"):
        return _fit(matrix, params, threads, AlternatingLeastSquares)


def _fit(matrix: sp.csr_matrix, params: AlsParams, threads: int, AlternatingLeastSquares):
    model = AlternatingLeastSquares(
        factors=params.factors,
        regularization=params.regularization,
        alpha=params.alpha,
        iterations=params.iterations,
        random_state=params.random_state,
        num_threads=threads,
        calculate_training_loss=False,
    )
    model.fit(weighted(matrix, params), show_progress=False)
    return model


def factors(model) -> tuple[np.ndarray, np.ndarray]:
    """(user_factors, item_factors) as C-contiguous float32."""
    return (
        np.ascontiguousarray(model.user_factors, dtype=np.float32),
        np.ascontiguousarray(model.item_factors, dtype=np.float32),
    )
