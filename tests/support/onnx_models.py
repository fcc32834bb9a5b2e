"""Small, real ONNX models built with ``onnx.helper`` and numpy weights, for serving tests and benchmarks.

* :func:`mlp` — the benchmark MLP: float32 [batch, 512] → 256 → 64 → 1 with ReLU (input size adjustable).
* :func:`affine` — ``y = 2x + 1`` on float32 [batch, 4]: outputs are easy to check by hand.
* :func:`two_inputs` — float32 ``x`` [batch, 3] and int64 ``k`` [batch, 1] → ``x * k`` (dtype checks).
* :func:`failing` — fails at runtime for any row with a value of magnitude ≥ 1 (a table lookup out of
  range) and answers zeros otherwise, so it loads and warms up (zeros) and then breaks on real traffic.
* :func:`integer_input` — ``y = float(x)`` on int64 [batch, width]: a model whose input is not float.
* :func:`tiled` — ``x`` repeated ``times`` times along its features, float32 [batch, width] → [batch,
  width × times]: an answer far larger than its request (message size limits).
* :func:`slow` — a chain of ``layers`` width×width matmuls over [batch, width]: ≈10 ms per row on one
  core here.
* :func:`spinning` — ``y = x`` on float32 [batch, 1] after a loop of ``max(x)`` empty turns: as fast as any
  model on the zeros of a warm-up, and as long as a request asks (1e9: until killed).

:func:`save` writes a model and returns the :class:`ModelSpec` that serves it (sha256, signature).
"""

from __future__ import annotations

import hashlib
import itertools
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from data_plane.models.spec import ModelSpec, TensorSpec

OPSET = 17
IR_VERSION = 9

_ELEM = {TensorProto.FLOAT: "float32", TensorProto.INT64: "int64", TensorProto.DOUBLE: "float64"}


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="aether-tests"
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def _float_io(name: str, width: int | str, batch: int | str = "batch") -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [batch, width])


def mlp(
    input_size: int = 512,
    hidden: tuple[int, ...] = (256, 64),
    seed: int = 0,
    impute_mean: Sequence[float] | None = None,
) -> onnx.ModelProto:
    """``impute_mean``: NaN inputs are replaced by these values first, in the graph, as the built-in
    trainer's models do (``torch.where(torch.isfinite(x), x, mean)``)."""
    rng = np.random.default_rng(seed)
    sizes = [input_size, *hidden, 1]
    nodes: list[onnx.NodeProto] = []
    initializers: list[onnx.TensorProto] = []
    current = "input"
    if impute_mean is not None:
        initializers.append(numpy_helper.from_array(np.asarray(impute_mean, np.float32), "mean"))
        nodes += [
            helper.make_node("IsNaN", ["input"], ["is_nan"]),
            helper.make_node("Where", ["is_nan", "mean", "input"], ["filled"]),
        ]
        current = "filled"
    for layer, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        weight = (rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        bias = (rng.standard_normal(fan_out) * 0.01).astype(np.float32)
        initializers += [
            numpy_helper.from_array(weight, f"w{layer}"),
            numpy_helper.from_array(bias, f"b{layer}"),
        ]
        last = layer == len(sizes) - 2
        out = "output" if last else f"h{layer}"
        nodes.append(
            helper.make_node("Gemm", [current, f"w{layer}", f"b{layer}"], [out if last else f"z{layer}"])
        )
        if not last:
            nodes.append(helper.make_node("Relu", [f"z{layer}"], [out]))
        current = out
    graph = helper.make_graph(
        nodes, "mlp", [_float_io("input", input_size)], [_float_io("output", 1)], initializers
    )
    return _model(graph)


def affine(batch: int | str = "batch") -> onnx.ModelProto:
    """y = 2x + 1 over [batch, 4]; an int ``batch`` fixes the first dimension."""
    two = numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two")
    one = numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one")
    nodes = [
        helper.make_node("Mul", ["x", "two"], ["scaled"]),
        helper.make_node("Add", ["scaled", "one"], ["y"]),
    ]
    inputs, outputs = [_float_io("x", 4, batch)], [_float_io("y", 4, batch)]
    graph = helper.make_graph(nodes, "affine", inputs, outputs, [two, one])
    return _model(graph)


def two_inputs() -> onnx.ModelProto:
    nodes = [
        helper.make_node("Cast", ["k"], ["k_float"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["x", "k_float"], ["product"]),
    ]
    graph = helper.make_graph(
        nodes,
        "two_inputs",
        [_float_io("x", 3), helper.make_tensor_value_info("k", TensorProto.INT64, ["batch", 1])],
        [_float_io("product", 3)],
    )
    return _model(graph)


def failing(width: int = 4) -> onnx.ModelProto:
    """Fails (ONNX Runtime raises: INTERNAL) on a row holding a value of magnitude 1 or more."""
    table = numpy_helper.from_array(np.zeros((1, 1), dtype=np.float32), "table")
    nodes = [
        helper.make_node("Abs", ["x"], ["magnitude"]),
        helper.make_node("ReduceMax", ["magnitude"], ["row_max"], axes=[1], keepdims=0),
        helper.make_node("Floor", ["row_max"], ["floored"]),
        helper.make_node("Cast", ["floored"], ["index"], to=TensorProto.INT64),
        helper.make_node(
            "Gather", ["table", "index"], ["y"], axis=0
        ),  # [batch, 1]; index ≥ 1 is out of range
    ]
    graph = helper.make_graph(nodes, "failing", [_float_io("x", width)], [_float_io("y", 1)], [table])
    return _model(graph)


def row_filter(width: int = 2) -> onnx.ModelProto:
    """y = the rows of x: float32[batch, width] whose first value is 0 or more (ONNX Compress): as many
    rows out as in for such data, fewer for a row that starts below 0."""
    first = numpy_helper.from_array(np.array(0, dtype=np.int64), "first")
    zero = numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero")
    nodes = [
        helper.make_node("Gather", ["x", "first"], ["column"], axis=1),  # [batch]
        helper.make_node("GreaterOrEqual", ["column", "zero"], ["keep"]),
        helper.make_node("Compress", ["x", "keep"], ["y"], axis=0),
    ]
    graph = helper.make_graph(
        nodes, "row_filter", [_float_io("x", width)], [_float_io("y", width)], [first, zero]
    )
    return _model(graph)


def with_label() -> onnx.ModelProto:
    """A classifier as sklearn exports one: x: float32[batch, 2] → ``score`` [batch, 1] (the row's sum) and
    ``label`` string[batch] ("no" or "yes", the larger column): an output type the data plane does not
    serve beside one it does."""
    labels = helper.make_tensor("labels", TensorProto.STRING, [2], [b"no", b"yes"])
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")
    nodes = [
        helper.make_node("ReduceSum", ["x", "axes"], ["score"], keepdims=1),
        helper.make_node("ArgMax", ["x"], ["index"], axis=1, keepdims=0),
        helper.make_node("Gather", ["labels", "index"], ["label"], axis=0),
    ]
    label = helper.make_tensor_value_info("label", TensorProto.STRING, ["batch"])
    graph = helper.make_graph(
        nodes, "with_label", [_float_io("x", 2)], [_float_io("score", 1), label], [labels, axes]
    )
    return _model(graph)


def integer_input(width: int = 2) -> onnx.ModelProto:
    nodes = [helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)]
    graph = helper.make_graph(
        nodes,
        "integer_input",
        [helper.make_tensor_value_info("x", TensorProto.INT64, ["batch", width])],
        [_float_io("y", width)],
    )
    return _model(graph)


def spinning() -> onnx.ModelProto:
    """``y = x`` on float32 [batch, 1], after a Loop of ``max(x)`` turns that do nothing. Its warm-up (zeros)
    runs no turn, so a data plane runs its batches on the event loop (``--inline-batch-below-us``), and one
    request of x = 1e9 then blocks that loop for real, as a hung handler would (onnxruntime releases the GIL
    while it runs, so the data plane's other threads, its /metrics among them, go on)."""
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond"], ["cond_out"]),
            helper.make_node("Identity", ["v"], ["v_out"]),
        ],
        "turn",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v", TensorProto.FLOAT, ["batch", 1]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_out", TensorProto.FLOAT, ["batch", 1]),
        ],
    )
    nodes = [
        helper.make_node("ReduceMax", ["x"], ["most"], keepdims=0),
        helper.make_node("Cast", ["most"], ["turns"], to=TensorProto.INT64),
        helper.make_node("Loop", ["turns", "", "x"], ["y"], body=body),
    ]
    graph = helper.make_graph(nodes, "spinning", [_float_io("x", 1)], [_float_io("y", 1)])
    return _model(graph)


def row_sum() -> onnx.ModelProto:
    """y[i] = sum of row i, over x: float32[batch, n] (any width, 0 included): one float per row out."""
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")
    nodes = [helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=1)]
    graph = helper.make_graph(nodes, "row_sum", [_float_io("x", "n")], [_float_io("y", 1)], [axes])
    return _model(graph)


def noisy(width: int = 4) -> onnx.ModelProto:
    """y = x + noise drawn anew on each run (as a model with dropout kept at inference): rows independent,
    a real batch dimension, but no two runs of one row agree."""
    nodes = [
        helper.make_node("RandomNormalLike", ["x"], ["noise"], scale=0.1),
        helper.make_node("Add", ["x", "noise"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "noisy", [_float_io("x", width)], [_float_io("y", width)])
    return _model(graph)


def running_sum(width: int = 2, noise: float = 0.0) -> onnx.ModelProto:
    """y[t] = x[0] + ... + x[t] over x: float32[steps, width], steps dynamic: a time-major sequence model
    (like torch's exported ``nn.RNN``), whose dynamic first dimension is no batch dimension; with
    ``noise``, plus normal noise of that scale drawn anew on each run (dropout kept at inference)."""
    axis = numpy_helper.from_array(np.array(0, dtype=np.int64), "axis")
    nodes = [helper.make_node("CumSum", ["x", "axis"], ["y" if not noise else "sums"])]
    if noise:
        nodes += [
            helper.make_node("RandomNormalLike", ["x"], ["drawn"], scale=noise),
            helper.make_node("Add", ["sums", "drawn"], ["y"]),
        ]
    graph = helper.make_graph(
        nodes, "running_sum", [_float_io("x", width, "steps")], [_float_io("y", width, "steps")], [axis]
    )
    return _model(graph)


def with_total(width: int = 4) -> onnx.ModelProto:
    """y = 2x per row (float32[batch, width]) and a second output, ``total``: the sum of the whole input,
    one scalar whatever the batch (no row of its own, so batching cannot split it by rows)."""
    two = numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two")
    nodes = [
        helper.make_node("Mul", ["x", "two"], ["y"]),
        helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
    ]
    total = helper.make_tensor_value_info("total", TensorProto.FLOAT, [])
    graph = helper.make_graph(
        nodes, "with_total", [_float_io("x", width)], [_float_io("y", width), total], [two]
    )
    return _model(graph)


def tiled(width: int = 1, times: int = 2048) -> onnx.ModelProto:
    repeats = numpy_helper.from_array(np.array([1, times], dtype=np.int64), "repeats")
    nodes = [helper.make_node("Tile", ["x", "repeats"], ["y"])]
    graph = helper.make_graph(
        nodes, "tiled", [_float_io("x", width)], [_float_io("y", width * times)], [repeats]
    )
    return _model(graph)


def score_and_embedding(width: int = 256) -> onnx.ModelProto:
    """Two outputs over x: float32[batch, n] (any width, 0 included): ``score`` [batch, 1], the row's sum,
    and ``embedding`` [batch, ``width``], the score repeated: a small output and a large one."""
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")
    repeats = numpy_helper.from_array(np.array([1, width], dtype=np.int64), "repeats")
    nodes = [
        helper.make_node("ReduceSum", ["x", "axes"], ["score"], keepdims=1),
        helper.make_node("Tile", ["score", "repeats"], ["embedding"]),
    ]
    graph = helper.make_graph(
        nodes,
        "score_and_embedding",
        [_float_io("x", "n")],
        [_float_io("score", 1), _float_io("embedding", width)],
        [axes, repeats],
    )
    return _model(graph)


def slow(layers: int = 400, width: int = 1024, seed: int = 1, rows: int = 1) -> onnx.ModelProto:
    """``layers`` matmuls of each input row by one orthogonal ``width``×``width`` matrix. With ``rows`` > 1
    each input row is copied ``rows`` times first and the copies averaged at the end (the same answer):
    ``rows`` times the work per layer, for a slow model with few nodes (one that loads fast)."""
    rng = np.random.default_rng(seed)
    # An orthogonal matrix keeps the values bounded however many times it is applied.
    weight, _ = np.linalg.qr(rng.standard_normal((width, width)))
    initializers = [numpy_helper.from_array(weight.astype(np.float32), "w")]
    nodes = []
    current = "x"
    if rows > 1:
        initializers += [
            numpy_helper.from_array(np.array([1], dtype=np.int64), "copy_axis"),
            numpy_helper.from_array(np.array([1, rows, 1], dtype=np.int64), "copies"),
        ]
        nodes += [
            helper.make_node("Unsqueeze", ["x", "copy_axis"], ["x_one"]),
            helper.make_node("Tile", ["x_one", "copies"], ["x_rows"]),
        ]
        current = "x_rows"
    for layer in range(layers):
        out = "y" if layer == layers - 1 and rows == 1 else f"h{layer}"
        nodes.append(helper.make_node("MatMul", [current, "w"], [out]))
        current = out
    if rows > 1:
        nodes.append(helper.make_node("ReduceMean", [current], ["y"], axes=[1], keepdims=0))
    graph = helper.make_graph(nodes, "slow", [_float_io("x", width)], [_float_io("y", width)], initializers)
    return _model(graph)


def slow_at_least(seconds: float, width: int = 1024) -> onnx.ModelProto:
    """A :func:`slow` model whose one-row run takes at least ``seconds`` on this machine, single-threaded
    as the data plane runs it: the number of layers is scaled from a timed run, so that a test which needs
    a call to outlast its deadline does not depend on how fast the machine is."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    probe_layers, rows = 10, 128
    session = ort.InferenceSession(
        slow(probe_layers, width, rows=rows).SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    x = np.zeros((1, width), np.float32)
    session.run(None, {"x": x})
    started = time.perf_counter()
    session.run(None, {"x": x})
    per_layer = max(time.perf_counter() - started, 1e-6) / probe_layers
    return slow(max(probe_layers, math.ceil(seconds / per_layer)), width, rows=rows)


def _tensor_specs(values: Any) -> tuple[TensorSpec, ...]:
    specs = []
    for value in values:
        tensor_type = value.type.tensor_type
        shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim)
        specs.append(TensorSpec(value.name, _ELEM[tensor_type.elem_type], shape))
    return tuple(specs)


def save(model: onnx.ModelProto, path: Path, name: str, version: int = 1, **spec_fields: Any) -> ModelSpec:
    """Writes ``model`` to ``path`` and returns a spec serving it from there."""
    data = model.SerializeToString()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    fields: dict[str, Any] = {"warmup_requests": 2, **spec_fields}
    return ModelSpec(
        name=name,
        version=version,
        artifact_sha256=hashlib.sha256(data).hexdigest(),
        artifact_uri=str(path),
        inputs=_tensor_specs(model.graph.input),
        outputs=_tensor_specs(model.graph.output),
        **fields,
    )
