"""A linear ranker (`Logistic`, exportable to ONNX with onnx_export.logistic_graph) and its conditional-logit fit
(scipy L-BFGS): the rankers of a small slice, where trees would only memorise."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from training.onnx_export import logistic_graph


@dataclass(frozen=True)
class Logistic:
    names: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float

    def logit(self, x: np.ndarray) -> np.ndarray:
        """The same arithmetic as the ONNX graph, in float32 (used for parity checks and batch evaluation)."""
        z = (x.astype(np.float32) - self.mean.astype(np.float32)) / self.scale.astype(np.float32)
        return z @ self.weights.astype(np.float32) + np.float32(self.bias)

    def onnx(self, name: str) -> bytes:
        return logistic_graph(self.mean, self.scale, self.weights, self.bias, name)

    def params(self) -> dict[str, float]:
        return {n: round(float(w), 4) for n, w in zip(self.names, self.weights, strict=True)}


def fit_conditional_logit(x: np.ndarray, group_ptr: np.ndarray, positive: np.ndarray, names: tuple[str, ...],
                          l2: float = 1.0) -> Logistic:
    """A linear scorer trained with softmax cross-entropy within groups (one chosen row per group): the right
    objective when exactly one candidate of each list was picked. Rows of group g are x[group_ptr[g]:group_ptr[g+1]];
    `positive[g]` is the absolute row index of the chosen one. Returned as a Logistic (same ONNX graph)."""
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    z = (x - mean) / scale
    starts = group_ptr[:-1]
    sizes = np.diff(group_ptr)
    group_of = np.repeat(np.arange(len(sizes)), sizes)
    n_groups = len(sizes)

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        s = z @ w
        m = np.maximum.reduceat(s, starts)
        e = np.exp(s - m[group_of])
        denom = np.add.reduceat(e, starts)
        lse = m + np.log(denom)
        value = (lse.sum() - s[positive].sum()) / n_groups + 0.5 * l2 * (w @ w) / n_groups
        p = e / denom[group_of]
        grad = (z.T @ p - z[positive].sum(axis=0)) / n_groups + l2 * w / n_groups
        return value, grad

    res = minimize(loss, np.zeros(z.shape[1]), jac=True, method="L-BFGS-B", options={"maxiter": 500})
    return Logistic(names=names, mean=mean, scale=scale, weights=res.x, bias=0.0)
