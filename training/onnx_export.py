"""ONNX graphs built with onnx.helper (served in pantry.models.onnx's sessions), and the parity check of an export.

- ALS item scoring: user_factors [batch, F] -> MatMul(item_factors^T initializer) -> scores [batch, n_items],
  then TopK -> top_scores, top_indices.
- Logistic ranker: features [batch, D] -> standardize -> MatMul(w) + b -> logit [batch, 1], Sigmoid -> prob.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from pantry.models.onnx import session

OPSET = 17
IR_VERSION = 8
PARITY_TOLERANCE = 1e-4  # the most an exported graph may differ from the fitted model (a larger gap fails training)


def _model(graph: onnx.GraphProto) -> bytes:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="pantry")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model.SerializeToString()


def als_scoring_graph(item_factors: np.ndarray, top_k: int) -> bytes:
    n_items, n_factors = item_factors.shape
    k = int(min(top_k, n_items))
    item_t = numpy_helper.from_array(np.ascontiguousarray(item_factors.T, dtype=np.float32), name="item_factors_t")
    k_tensor = numpy_helper.from_array(np.array([k], dtype=np.int64), name="k")
    nodes = [
        helper.make_node("MatMul", ["user_factors", "item_factors_t"], ["scores"]),
        helper.make_node("TopK", ["scores", "k"], ["top_scores", "top_indices"], axis=-1, largest=1, sorted=1),
    ]
    graph = helper.make_graph(
        nodes,
        "als_item_scores",
        [helper.make_tensor_value_info("user_factors", TensorProto.FLOAT, ["batch", n_factors])],
        [
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", n_items]),
            helper.make_tensor_value_info("top_scores", TensorProto.FLOAT, ["batch", k]),
            helper.make_tensor_value_info("top_indices", TensorProto.INT64, ["batch", k]),
        ],
        initializer=[item_t, k_tensor],
    )
    return _model(graph)


def logistic_graph(mean: np.ndarray, scale: np.ndarray, weights: np.ndarray, bias: float, name: str) -> bytes:
    d = len(weights)
    inits = [
        numpy_helper.from_array(mean.astype(np.float32).reshape(1, d), name="mean"),
        numpy_helper.from_array(scale.astype(np.float32).reshape(1, d), name="scale"),
        numpy_helper.from_array(weights.astype(np.float32).reshape(d, 1), name="w"),
        numpy_helper.from_array(np.array([bias], dtype=np.float32), name="b"),
    ]
    nodes = [
        helper.make_node("Sub", ["features", "mean"], ["centered"]),
        helper.make_node("Div", ["centered", "scale"], ["standardized"]),
        helper.make_node("MatMul", ["standardized", "w"], ["wx"]),
        helper.make_node("Add", ["wx", "b"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["prob"]),
    ]
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", d])],
        [
            helper.make_tensor_value_info("logit", TensorProto.FLOAT, ["batch", 1]),
            helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["batch", 1]),
        ],
        initializer=inits,
    )
    return _model(graph)


def ranker_parity(model_bytes: bytes, ranker, x: np.ndarray) -> float:
    """Max |ONNX logit - the fitted ranker's own logit| over the rows `x` (Logistic or Boosted)."""
    onnx_logit = session(model_bytes).run(["logit"], {"features": x})[0][:, 0]
    return float(np.max(np.abs(onnx_logit - ranker.logit(x))))
