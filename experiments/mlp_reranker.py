"""Would a small neural ranker beat the served LightGBM re-ranker of the recommender?

The model: a one-hidden-layer perceptron (tanh, 16 hidden units, ~290 weights) fitted with scipy L-BFGS on logistic
loss, exportable to ONNX with the ranker contract (`features` -> `logit`, `prob`). It was written as a candidate
re-ranker able to learn interactions a linear ranker cannot (how often x how recently, repurchase cycle x
popularity); no measurement of it was recorded before it moved here.

Command: `PANTRY_DATA_DIR=... .venv/bin/python -m experiments.mlp_reranker [max_users]` (default 1500): the split of
experiments/recommender_reranker.py (the re-ranker's training-window customers in halves, precision@10 over the
validation half's candidate lists), the MLP against the served LightGBM setting, and the MLP's ONNX parity.

Result (measured with that command on the full data when the script moved here, 1,500 customers): the served
LightGBM binary 100 trees x 15 leaves p@10 0.3932 (fit 8.4 s), the MLP 0.3880 (fit 68.9 s, ONNX parity 7e-7).
Worse and eight times slower to fit: not served.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from scipy.optimize import minimize

from experiments.recommender_reranker import split
from pantry.models.onnx import session
from pantry.models.recommender_candidates import FEATURE_NAMES
from training.gbm import fit_lambdarank
from training.onnx_export import IR_VERSION, OPSET
from training.recommender import RERANKER_GBM


@dataclass(frozen=True)
class Mlp:
    names: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    w1: np.ndarray  # [d, h]
    b1: np.ndarray  # [h]
    w2: np.ndarray  # [h]
    b2: float

    def logit(self, x: np.ndarray) -> np.ndarray:
        f32 = np.float32
        z = (x.astype(f32) - self.mean.astype(f32)) / self.scale.astype(f32)
        hidden = np.tanh(z @ self.w1.astype(f32) + self.b1.astype(f32))
        return hidden @ self.w2.astype(f32) + f32(self.b2)

    def onnx(self, name: str) -> bytes:
        d, h = self.w1.shape
        t = numpy_helper.from_array
        inits = [
            t(self.mean.astype(np.float32).reshape(1, d), name="mean"),
            t(self.scale.astype(np.float32).reshape(1, d), name="scale"),
            t(self.w1.astype(np.float32), name="w1"),
            t(self.b1.astype(np.float32).reshape(1, h), name="b1"),
            t(self.w2.astype(np.float32).reshape(h, 1), name="w2"),
            t(np.array([self.b2], dtype=np.float32), name="b2"),
        ]
        nodes = [
            helper.make_node("Sub", ["features", "mean"], ["centered"]),
            helper.make_node("Div", ["centered", "scale"], ["z"]),
            helper.make_node("MatMul", ["z", "w1"], ["h_pre"]),
            helper.make_node("Add", ["h_pre", "b1"], ["h_lin"]),
            helper.make_node("Tanh", ["h_lin"], ["hidden"]),
            helper.make_node("MatMul", ["hidden", "w2"], ["out_pre"]),
            helper.make_node("Add", ["out_pre", "b2"], ["logit"]),
            helper.make_node("Sigmoid", ["logit"], ["prob"]),
        ]
        graph = helper.make_graph(
            nodes, name,
            [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", d])],
            [helper.make_tensor_value_info("logit", TensorProto.FLOAT, ["batch", 1]),
             helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["batch", 1])],
            initializer=inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="pantry")
        model.ir_version = IR_VERSION
        onnx.checker.check_model(model)
        return model.SerializeToString()

    def params(self) -> dict[str, object]:
        return {"kind": "mlp", "hidden": int(self.w1.shape[1]), "inputs": list(self.names)}


def fit_mlp(x: np.ndarray, y: np.ndarray, names: tuple[str, ...], hidden: int = 16, l2: float = 1e-3,
            max_iter: int = 300, seed: int = 0) -> Mlp:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    z = (x - mean) / scale
    n, d = z.shape
    rng = np.random.default_rng(seed)
    sizes = [(d, hidden), (hidden,), (hidden,), (1,)]

    def unpack(theta: np.ndarray):
        out, i = [], 0
        for shape in sizes:
            k = int(np.prod(shape))
            out.append(theta[i : i + k].reshape(shape))
            i += k
        return out

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w1, b1, w2, b2 = unpack(theta)
        hid = np.tanh(z @ w1 + b1)
        t = hid @ w2 + b2[0]
        p = 1.0 / (1.0 + np.exp(-t))
        value = np.mean(np.logaddexp(0.0, t) - y * t) + 0.5 * l2 * ((w1**2).sum() + (w2**2).sum())
        g = (p - y) / n
        gw2 = hid.T @ g + l2 * w2
        gb2 = np.array([g.sum()])
        gh = np.outer(g, w2) * (1.0 - hid**2)
        gw1 = z.T @ gh + l2 * w1
        gb1 = gh.sum(axis=0)
        return value, np.concatenate([gw1.ravel(), gb1, gw2, gb2])

    theta0 = np.concatenate([rng.normal(0, 0.3, d * hidden), np.zeros(hidden), rng.normal(0, 0.3, hidden), [0.0]])
    res = minimize(loss, theta0, jac=True, method="L-BFGS-B", options={"maxiter": max_iter})
    w1, b1, w2, b2 = unpack(res.x)
    return Mlp(names, mean, scale, w1, b1, w2, float(b2[0]))


def main(max_users: int) -> None:
    s = split(max_users)
    x, y, sizes = s.training_rows()
    start = time.perf_counter()
    gbm = fit_lambdarank(x, y, sizes, FEATURE_NAMES, RERANKER_GBM)
    print(f"served LightGBM {RERANKER_GBM}  p@10 {s.precision(gbm.logit):.4f}  fit {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    mlp = fit_mlp(x, y, FEATURE_NAMES)
    fit_s = time.perf_counter() - start
    onnx_logit = session(mlp.onnx("mlp_reranker")).run(["logit"], {"features": x[:2000]})[0][:, 0]
    parity = float(np.max(np.abs(onnx_logit - mlp.logit(x[:2000]))))
    print(f"MLP (16 tanh units)  p@10 {s.precision(mlp.logit):.4f}  fit {fit_s:.1f} s  ONNX parity {parity:.1e}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1500)
