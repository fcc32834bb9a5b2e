"""ONNX export checked against torch: a faithful graph passes, a graph that computes something else
fails loudly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from control_plane.training.trainer.export import OnnxMismatch, check_onnx, export_onnx
from control_plane.training.trainer.model import ServingModel, TabularMLP


def serving_model() -> ServingModel:
    torch.manual_seed(0)
    mean = np.array([1.0, -1.0, 0.5], np.float32)
    std = np.array([2.0, 1.0, 0.5], np.float32)
    return ServingModel(TabularMLP(mean, std, (6,), 3), classification=True).eval()


def rows() -> torch.Tensor:
    x = torch.randn(50, 3, generator=torch.Generator().manual_seed(1))
    x[::5, 2] = float("nan")
    return x


def test_exported_graph_matches_torch_and_describes_itself(tmp_path: Path) -> None:
    model = serving_model()
    path = export_onnx(model, 3, tmp_path / "m.onnx", "probabilities", {"classes": ["a", "b", "c"]})
    assert check_onnx(path, model, rows(), 1e-5) <= 1e-5
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"features": rows()[:7].numpy()})  # any batch size
    assert out.shape == (7, 3) and np.allclose(out.sum(axis=1), 1.0, atol=1e-6)
    assert json.loads(session.get_modelmeta().custom_metadata_map["aether.classes"]) == ["a", "b", "c"]


def test_a_graph_that_differs_from_torch_is_refused(tmp_path: Path) -> None:
    model = serving_model()
    path = export_onnx(model, 3, tmp_path / "m.onnx", "probabilities", {})
    graph = onnx.load(str(path))
    weight = next(t for t in graph.graph.initializer if numpy_helper.to_array(t).shape == (6, 3))
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) + 0.1, weight.name))
    onnx.save(graph, str(path))
    with pytest.raises(OnnxMismatch, match="refusing to register"):
        check_onnx(path, model, rows(), 1e-4)
