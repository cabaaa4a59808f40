"""Gradient-boosted rankers (LightGBM, binary or lambdarank objective) exported to ONNX with onnxmltools.

The exported graph has the same contract as the logistic graph (input `features` [batch, D], outputs `logit` and
`prob` [batch, 1]), so the served scorers run either without knowing which it is. Trees and leaves are capped so
a request over a few hundred candidates stays well under a millisecond.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GbmParams:
    objective: str = "binary"  # or "lambdarank" (slightly better on validation, 6x slower to fit here)
    n_trees: int = 100
    num_leaves: int = 15
    learning_rate: float = 0.1
    min_child_samples: int = 100
    subsample: float = 0.8
    colsample: float = 0.8
    seed: int = 0
    # One thread: on the shared 2-core machine (load 5+) a 2-thread fit of the substitution ranker took 29 s, a
    # 1-thread fit 8.7 s with the same model quality (OpenMP threads spin waiting for a busy core).
    num_threads: int = 1


@dataclass(frozen=True)
class Boosted:
    names: tuple[str, ...]
    model_text: str  # LightGBM's own text dump: the model, reproducible and diffable

    def _booster(self):
        import lightgbm as lgb

        return lgb.Booster(model_str=self.model_text)

    def logit(self, x: np.ndarray) -> np.ndarray:
        """LightGBM's raw score (the parity reference for the ONNX graph)."""
        return self._booster().predict(np.asarray(x, dtype=np.float32), raw_score=True, num_threads=1)

    def onnx(self, name: str) -> bytes:
        # Split thresholds rounded down to float32 (`float32_thresholds`): the float32 ONNX trees then take
        # LightGBM's branches. onnxmltools turns a binary booster into a classifier graph; the same trees read as
        # a regression give the raw score the ranker contract wants: relabel the objective line only.
        import lightgbm as lgb

        lines = [("objective=regression" if ln.startswith("objective=") else ln)
                 for ln in float32_thresholds(self.model_text).split("\n")]
        return boosted_graph(lgb.Booster(model_str="\n".join(lines)), len(self.names), name)

    def params(self) -> dict[str, float]:
        """Gain importance per feature, as shares of the total (what the report shows instead of weights)."""
        gain = self._booster().feature_importance(importance_type="gain")
        total = float(gain.sum()) or 1.0
        return {n: round(float(g) / total, 4) for n, g in zip(self.names, gain, strict=True)}


def float32_thresholds(model_text: str) -> str:
    """Each split threshold t (a double) replaced by the largest float32 <= t. For a float32 feature x,
    x <= t exactly when x <= that float32, so LightGBM's decisions do not change, and the float32 ONNX trees take
    the same branches: rounding t to the nearest float32 instead (what the converter does) can land on a value
    the data holds (popularity counts sit a float32 step apart) and send that row the other way."""
    lines = model_text.split("\n")
    for j, line in enumerate(lines):
        if not line.startswith("threshold="):
            continue
        t = np.array([float(v) for v in line[len("threshold="):].split()], dtype=np.float64)
        t32 = t.astype(np.float32)
        t32 = np.where(t32.astype(np.float64) > t, np.nextafter(t32, np.float32(-np.inf)), t32)
        lines[j] = "threshold=" + " ".join(repr(float(v)) for v in t32)
    # tree_sizes (byte offsets, an optional index for parallel loading) no longer match: LightGBM then reads the
    # trees one after the other
    return "\n".join(ln for ln in lines if not ln.startswith("tree_sizes="))


def fit_lambdarank(x: np.ndarray, labels: np.ndarray, group_sizes: np.ndarray, names: tuple[str, ...],
                   params: GbmParams = GbmParams(), eval_at: int = 10) -> Boosted:
    """Rows are grouped contiguously (one group per list: a customer's candidates, a switch event's pool...);
    the groups are used by lambdarank only."""
    import lightgbm as lgb

    data = lgb.Dataset(np.asarray(x, dtype=np.float32), label=np.asarray(labels, dtype=np.float32),
                       group=np.asarray(group_sizes, dtype=np.int64), feature_name=list(names), free_raw_data=True)
    booster = lgb.train(
        {
            "objective": params.objective, "lambdarank_truncation_level": max(eval_at * 2, 20),
            "eval_at": [eval_at], "num_leaves": params.num_leaves, "learning_rate": params.learning_rate,
            "min_child_samples": params.min_child_samples, "bagging_fraction": params.subsample, "bagging_freq": 1,
            "feature_fraction": params.colsample, "seed": params.seed, "deterministic": True,
            "num_threads": params.num_threads, "verbose": -1, "max_bin": 63,
        },
        data,
        num_boost_round=params.n_trees,
    )
    return Boosted(names=names, model_text=booster.model_to_string())


def boosted_graph(booster, n_features: int, name: str) -> bytes:
    """onnxmltools' TreeEnsembleRegressor graph, renamed to the ranker contract (features -> logit, prob)."""
    import onnx
    from onnx import helper
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    model = convert_lightgbm(booster, initial_types=[("features", FloatTensorType([None, n_features]))],
                             target_opset=15, zipmap=False)
    graph = model.graph
    # Keep the TreeEnsembleRegressor alone (its output is the raw score: sum of leaves + base), whatever the
    # converter appended after it.
    trees = [n for n in graph.node if n.op_type == "TreeEnsembleRegressor"]
    if len(trees) != 1 or any(a.name == "post_transform" and a.s not in (b"", b"NONE") for a in trees[0].attribute):
        raise ValueError("unexpected onnxmltools graph for a LightGBM booster")
    raw = trees[0].output[0]
    del graph.node[:]
    del graph.output[:]
    unused = [init for init in graph.initializer if init.name not in trees[0].input]
    for init in unused:
        graph.initializer.remove(init)
    graph.node.extend([trees[0],
        helper.make_node("Identity", [raw], ["logit"]),
        helper.make_node("Sigmoid", [raw], ["prob"]),
    ])
    graph.output.extend([
        helper.make_tensor_value_info("logit", onnx.TensorProto.FLOAT, ["batch", 1]),
        helper.make_tensor_value_info("prob", onnx.TensorProto.FLOAT, ["batch", 1]),
    ])
    graph.name = name
    onnx.checker.check_model(model)
    return model.SerializeToString()
