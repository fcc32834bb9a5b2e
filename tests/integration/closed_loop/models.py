"""Models of the closed-loop tests: a slow one that reads the same features as a fast one (a chain of
matmuls, as in ``tests.support.onnx_models.slow``, behind a Tile that widens the features), so that the
only thing wrong with it is its latency."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.support.onnx_models import IR_VERSION, OPSET


def slow_on_features(
    layers: int = 200, width: int = 1024, seed: int = 3, features: int = 4
) -> onnx.ModelProto:
    """float32 ``x`` [batch, features] → ``y`` [batch, 1] through ``layers`` width×width matmuls (about
    5 ms per row per 100 layers at width 1024 on one core here)."""
    rng = np.random.default_rng(seed)
    weight, _ = np.linalg.qr(rng.standard_normal((width, width)))  # orthogonal: values stay bounded
    head = rng.standard_normal((width, 1)) / np.sqrt(width)
    initializers = [
        numpy_helper.from_array(np.array([1, width // features], np.int64), "repeats"),
        numpy_helper.from_array(weight.astype(np.float32), "w"),
        numpy_helper.from_array(head.astype(np.float32), "head"),
    ]
    nodes = [helper.make_node("Tile", ["x", "repeats"], ["h"])]
    current = "h"
    for layer in range(layers):
        nodes.append(helper.make_node("MatMul", [current, "w"], [f"h{layer}"]))
        current = f"h{layer}"
    nodes.append(helper.make_node("MatMul", [current, "head"], ["y"]))
    graph = helper.make_graph(
        nodes,
        "slow_on_features",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])],
        initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="aether-tests"
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model
