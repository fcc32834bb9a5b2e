"""Small real ONNX models for the evaluation gates: linear regressors and logistic classifiers with chosen
weights (so one is measurably better than another on data drawn from known weights), and a linear model
padded with orthogonal round trips that computes the same answers more slowly."""

from __future__ import annotations

import json

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def _model(
    nodes: list[onnx.NodeProto],
    width: int,
    inits: list[onnx.TensorProto],
    outputs: list[onnx.ValueInfoProto] | None = None,
) -> bytes:
    graph = helper.make_graph(
        nodes,
        "model",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        outputs or [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _weights(weights: npt.NDArray[np.float64], bias: float) -> list[onnx.TensorProto]:
    return [
        numpy_helper.from_array(weights.reshape(-1, 1).astype(np.float32), "w"),
        numpy_helper.from_array(np.array([bias], dtype=np.float32), "b"),
    ]


def linear(weights: npt.NDArray[np.float64], bias: float = 0.0, slow_layers: int = 0) -> bytes:
    """``y = x·w + b``; with ``slow_layers`` the input first goes through that many ``Q`` then ``Qᵀ``
    matmuls (identity up to rounding), which costs time and changes nothing."""
    width = weights.shape[0]
    nodes: list[onnx.NodeProto] = []
    inits = _weights(weights, bias)
    current = "x"
    if slow_layers:
        q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((width, width)))
        inits += [
            numpy_helper.from_array(q.astype(np.float32), "q"),
            numpy_helper.from_array(q.T.astype(np.float32), "qt"),
        ]
        for layer in range(slow_layers):
            nodes.append(helper.make_node("MatMul", [current, "q"], [f"a{layer}"]))
            nodes.append(helper.make_node("MatMul", [f"a{layer}", "qt"], [f"h{layer}"]))
            current = f"h{layer}"
    nodes.append(helper.make_node("Gemm", [current, "w", "b"], ["y"]))
    return _model(nodes, width, inits)


def logistic(weights: npt.NDArray[np.float64], bias: float = 0.0) -> bytes:
    """``y = sigmoid(x·w + b)``: one positive-class score per row."""
    nodes = [
        helper.make_node("Gemm", ["x", "w", "b"], ["z"]),
        helper.make_node("Sigmoid", ["z"], ["y"]),
    ]
    return _model(nodes, weights.shape[0], _weights(weights, bias))


def labelled_classifier(weights: npt.NDArray[np.float64]) -> bytes:
    """A binary classifier laid out as sklearn-onnx lays one out: ``label`` (int64 class code, ``[batch]``)
    first, then ``probabilities`` (``[batch, 2]``: softmax of ``(0, x·w)``, so class 1 iff ``x·w > 0``)."""
    width = weights.shape[0]
    inits = [
        numpy_helper.from_array(np.stack([np.zeros(width), weights], axis=1).astype(np.float32), "w2"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
    ]
    outputs = [
        helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
        helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 2]),
    ]
    return _model(nodes, width, inits, outputs)


def linear_nan_below(weights: npt.NDArray[np.float64], floor: float) -> bytes:
    """``y = x·w + 0·sqrt(x₀ − floor)``: the answers of ``linear(weights)``, but NaN on rows whose first
    feature lies below ``floor`` (a model that fails on inputs it never saw)."""
    inits = [
        *_weights(weights, 0.0),
        numpy_helper.from_array(np.array([-floor], dtype=np.float32), "shift"),
        numpy_helper.from_array(np.array([0.0], dtype=np.float32), "zero"),
        numpy_helper.from_array(np.array([0], dtype=np.int64), "first"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "one"),
    ]
    nodes = [
        helper.make_node("Gemm", ["x", "w", "b"], ["linear"]),
        helper.make_node("Slice", ["x", "first", "one", "one"], ["x0"]),
        helper.make_node("Add", ["x0", "shift"], ["shifted"]),
        helper.make_node("Sqrt", ["shifted"], ["root"]),
        helper.make_node("Mul", ["root", "zero"], ["nothing"]),
        helper.make_node("Add", ["linear", "nothing"], ["y"]),
    ]
    return _model(nodes, weights.shape[0], inits)


def with_classes(model: bytes, classes: list[object]) -> bytes:
    """``model`` with its classes in its metadata (``aether.classes``, JSON), as the built-in trainer's
    export writes them: the label value of each score column."""
    proto = onnx.load_from_string(model)
    proto.metadata_props.add(key="aether.classes", value=json.dumps(classes))
    return proto.SerializeToString()


def softmax_classifier(weights: npt.NDArray[np.float64]) -> bytes:
    """``probabilities = softmax(x·W)``: one score column per class (``W`` is ``[features, classes]``)."""
    inits = [numpy_helper.from_array(weights.astype(np.float32), "w")]
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    outputs = [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", weights.shape[1]])]
    return _model(nodes, weights.shape[0], inits, outputs)
