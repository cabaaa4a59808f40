"""The onnxruntime session every served graph runs in (the graphs are built by training/onnx_export.py)."""

from __future__ import annotations


def session(model_bytes: bytes):
    """An onnxruntime session tuned for tiny per-request batches (one thread, no spinning)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model_bytes, sess_options=opts, providers=["CPUExecutionProvider"])
