"""The ONNX Runtime session wrapper: it calls onnxruntime's binding directly (skipping the per-call Python
checks of ``InferenceSession.run``) and must answer exactly as the public API does, fail as it does, and
still work where the binding is absent."""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from clients.errors import Unavailable
from data_plane.models.manager import ModelManager
from data_plane.models.runner import run_batch
from data_plane.models.spec import DYNAMIC, ModelSpec, TensorSpec
from data_plane.models.validation import ValidInputs
from data_plane.runtime.onnx import (
    OnnxOptions,
    OnnxRuntimeSession,
    _provider_options,
    warn_missing_named_providers,
)
from tests.support import onnx_models


def test_outputs_equal_the_public_api_s() -> None:
    model = onnx_models.mlp()
    session = OnnxRuntimeSession(model.SerializeToString(), OnnxOptions())
    reference = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(3).standard_normal((5, 512)).astype(np.float32)
    ours = session.run({"input": x})
    expected = reference.run(None, {"input": x})
    assert list(ours) == [o.name for o in reference.get_outputs()]
    np.testing.assert_array_equal(ours["output"], expected[0])


def test_a_failing_run_raises_what_the_public_api_raises() -> None:
    session = OnnxRuntimeSession(onnx_models.failing().SerializeToString(), OnnxOptions())
    fine = session.run({"x": np.full((2, 4), 0.5, np.float32)})
    assert fine["y"].shape == (2, 1)
    with pytest.raises(Exception, match=r"(?i)index|out of|bounds"):
        session.run({"x": np.full((1, 4), 7.0, np.float32)})  # index 7 of a one-row table


def test_without_the_binding_the_public_run_serves() -> None:
    """A fault that cannot be caused otherwise: an onnxruntime whose session has no ``_sess`` binding."""
    session = OnnxRuntimeSession(onnx_models.affine().SerializeToString(), OnnxOptions())
    x = np.ones((3, 4), np.float32)
    expected = session.run({"x": x})
    session._binding = None  # what getattr(..., "_sess", None) gives on such an onnxruntime
    again = session.run({"x": x})
    for name, array in expected.items():
        np.testing.assert_array_equal(again[name], array)


def test_a_named_gpu_provider_this_build_lacks_is_logged_not_silently_replaced(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # This onnxruntime build (the CPU one of the test environment) has no CUDA provider. Before, a named
    # CUDAExecutionProvider was dropped before the session was built, so the session "started with every
    # GPU provider it was asked for" and ran on the CPU with nothing logged.
    assert "CUDAExecutionProvider" not in ort.get_available_providers()
    named = ("CUDAExecutionProvider",)
    with caplog.at_level(logging.WARNING, logger="aether.data_plane.onnx"):
        assert warn_missing_named_providers(named) == ["CUDAExecutionProvider"]
        session = OnnxRuntimeSession(
            onnx_models.affine().SerializeToString(), OnnxOptions(allowed_providers=named)
        )
    assert session.providers == ("CPUExecutionProvider",)
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2, messages
    assert "AETHER_EXECUTION_PROVIDERS names CUDAExecutionProvider" in messages[0]
    assert (
        "CUDAExecutionProvider could not start (CUDAExecutionProvider not in this onnxruntime build)"
        in (messages[1])
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="aether.data_plane.onnx"):
        assert warn_missing_named_providers(("CPUExecutionProvider",)) == []
        OnnxRuntimeSession(onnx_models.affine().SerializeToString(), OnnxOptions())
    assert caplog.records == []  # nothing named, nothing missing: the CPU is what was asked for


def test_a_closed_session_answers_unavailable_and_holds_no_native_session(tmp_path: Path) -> None:
    """close() deleted only the public session: the binding (the native session) lived on and served, and
    a run that failed in it fell back to the deleted session, an AttributeError answered as INTERNAL."""
    model = onnx_models.affine()
    spec = onnx_models.save(model, tmp_path / "a.onnx", "a")
    session = OnnxRuntimeSession(model.SerializeToString(), OnnxOptions())
    rows = [ValidInputs({"x": np.ones((1, 4), np.float32)}, 1, ()) for _ in range(2)]
    assert all(isinstance(r, dict) for r in run_batch(session, spec, rows))
    session.close()
    with pytest.raises(Unavailable, match="unloaded"):
        session.run({"x": np.ones((1, 4), np.float32)})
    results = run_batch(session, spec, rows)
    assert [type(r) for r in results] == [Unavailable, Unavailable], results


def test_each_model_gets_its_own_tensorrt_engine_cache_prefix(tmp_path: Path) -> None:
    """The TensorRT provider's cache names an engine by the graph's tensor names, not its weights, for a
    model given as bytes: with one cache folder and no prefix, a retrained version of the same architecture
    loaded the previous version's engine and answered with its weights. The prefix is the model's sha256
    (the artifact checksum) and this onnxruntime's version; the sessions themselves need a GPU
    (tests/integration/serving/test_gpu_execution.py)."""
    options = OnnxOptions(trt_cache_dir=tmp_path / "trt")
    v1 = onnx_models.mlp(seed=1).SerializeToString()
    v2 = onnx_models.mlp(seed=2).SerializeToString()
    first = _provider_options("TensorrtExecutionProvider", options, v1)
    second = _provider_options("TensorrtExecutionProvider", options, v2)
    assert first["trt_engine_cache_path"] == second["trt_engine_cache_path"] == str(tmp_path / "trt")
    assert first["trt_engine_cache_enable"] is True
    prefix = first["trt_engine_cache_prefix"]
    assert prefix != second["trt_engine_cache_prefix"]
    assert hashlib.sha256(v1).hexdigest() in prefix
    assert ort.__version__.replace(".", "_") in prefix
    assert re.fullmatch(r"[A-Za-z0-9_]+", prefix), prefix  # a file name in the cache folder, nothing more
    assert _provider_options("TensorrtExecutionProvider", options, v1) == first  # the same model: a hit
    assert _provider_options("CUDAExecutionProvider", options, v1) == {}
    assert _provider_options("TensorrtExecutionProvider", OnnxOptions(), v1) == {}


def test_a_batch_answering_other_rows_than_it_has_is_run_request_by_request(tmp_path: Path) -> None:
    """One request whose row a row filter drops made every request batched with it INTERNAL, though each of
    the others alone is answered: a batch that raises is rerun request by request, and so is this one."""
    model = onnx_models.row_filter()
    spec = onnx_models.save(model, tmp_path / "f.onnx", "f")
    session = OnnxRuntimeSession(model.SerializeToString(), OnnxOptions())
    values = [1.0, 2.0, -1.0, 3.0]  # the third row is filtered out
    rows = [ValidInputs({"x": np.full((1, 2), v, np.float32)}, 1, ()) for v in values]
    results = run_batch(session, spec, rows)
    answers = [r["y"].tolist() for r in results if isinstance(r, dict)]
    assert answers == [[[1.0, 1.0]], [[2.0, 2.0]], [], [[3.0, 3.0]]], results


async def test_an_output_of_a_type_not_served_loads_when_the_spec_leaves_it_out(tmp_path: Path) -> None:
    """Every model output was converted to a TensorSpec, fetched or not: a classifier exported with a
    string label beside its scores could not be loaded even by a spec naming only the scores."""
    model = onnx_models.with_label()
    data = model.SerializeToString()
    session = OnnxRuntimeSession(data, OnnxOptions(), fetch=["score"])
    assert [t.name for t in session.outputs] == ["score"]
    x = np.array([[1.0, 2.0]], np.float32)
    assert session.run({"x": x})["score"].tolist() == [[3.0]]
    with pytest.raises(ValueError, match=r"tensor 'label' has type tensor\(string\)"):
        OnnxRuntimeSession(data, OnnxOptions(), fetch=["score", "label"])  # one it would have to serve
    (tmp_path / "c.onnx").write_bytes(data)
    spec = ModelSpec(
        name="c",
        version=1,
        artifact_sha256=hashlib.sha256(data).hexdigest(),
        artifact_uri=str(tmp_path / "c.onnx"),
        inputs=(TensorSpec("x", "float32", (DYNAMIC, 2)),),
        outputs=(TensorSpec("score", "float32", (DYNAMIC, 1)),),
        warmup_requests=2,
    )
    manager = ModelManager()
    try:
        await manager.ensure_loaded(spec)
        assert (await manager.infer("c", 1, {"x": x}))["score"].tolist() == [[3.0]]
    finally:
        await manager.close()
