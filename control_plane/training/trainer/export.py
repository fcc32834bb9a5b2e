"""ONNX export of the serving model, checked against torch before anything is registered.

The check runs the exported graph in ONNX Runtime (CPU) on the held-out rows — raw features, missing
values included — and compares with torch's outputs; a difference above the tolerance raises
:class:`OnnxMismatch`, which fails the job (a model that serves different numbers than it was evaluated
with must never reach the registry).

The TorchScript-based exporter is used (``dynamo=False``): the graph is a plain MLP, and the dynamo
exporter would need ``onnxscript`` on every training host.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from control_plane.training.trainer.model import ServingModel

INPUT_NAME = "features"
OPSET = 17


class OnnxMismatch(Exception):
    """ONNX Runtime's outputs differ from torch's beyond the tolerance."""


def export_onnx(
    model: ServingModel, n_features: int, path: Path, output_name: str, metadata: Mapping[str, object]
) -> Path:
    """Writes ``model`` (batch dimension dynamic) to ``path`` with ``metadata`` as JSON-valued metadata
    properties (feature order, classes, task), so the artifact describes itself."""
    model.eval()
    example = torch.zeros((2, n_features), dtype=torch.float32)
    with warnings.catch_warnings():  # the legacy exporter announces its deprecation on every call
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[output_name],
            dynamic_axes={INPUT_NAME: {0: "batch"}, output_name: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    graph = onnx.load(str(path))
    for key, value in metadata.items():
        graph.metadata_props.add(key=f"aether.{key}", value=json.dumps(value))
    onnx.save(graph, str(path))
    return path


def check_onnx(path: Path, model: ServingModel, features: torch.Tensor, tolerance: float) -> float:
    """The largest absolute difference between ONNX Runtime and torch on ``features``; raises
    :class:`OnnxMismatch` when it exceeds ``tolerance`` or the shapes differ."""
    with torch.no_grad():
        expected = model(features).numpy()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    (actual,) = session.run(None, {INPUT_NAME: features.numpy()})
    actual = np.asarray(actual)
    if actual.shape != expected.shape:
        raise OnnxMismatch(f"ONNX output shape {actual.shape} differs from torch's {expected.shape}")
    difference = float(np.max(np.abs(actual.astype(np.float64) - expected.astype(np.float64)), initial=0.0))
    if not difference <= tolerance:  # also catches NaN
        raise OnnxMismatch(
            f"ONNX Runtime differs from torch by up to {difference:.3g} on the held-out rows "
            f"(tolerance {tolerance:.3g}); refusing to register the model"
        )
    return difference
