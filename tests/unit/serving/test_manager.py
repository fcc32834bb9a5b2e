"""The model manager with real ONNX Runtime sessions: checksum verification, signature checks, states,
versions side by side, unloading, per-request validation and the static model config."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import re
from pathlib import Path

import numpy as np
import pytest

from clients.aether.v1 import deployments_pb2
from clients.env_values import ConfigurationError
from clients.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted, Unavailable
from clients.serving_rules import MAX_WARMUP_REQUESTS
from data_plane.batching import BatchObserver
from data_plane.deployment_plan import model_spec_from_proto
from data_plane.models.manager import ModelManager
from data_plane.models.options import ManagerObserver, ManagerOptions
from data_plane.models.spec import (
    ModelSpec,
    TensorSpec,
    defaults_problem,
    dump_model_config,
    load_model_config,
)
from data_plane.models.validation import answer_overhead_bytes
from data_plane.models.version import ModelState, Use
from data_plane.models.warmup import recorded_inputs
from data_plane.runtime.onnx import choose_providers, dropped_gpu_providers
from tests.support import onnx_models


async def test_versions_load_side_by_side_and_serve_until_unloaded(tmp_path: Path) -> None:
    v1 = onnx_models.save(onnx_models.mlp(input_size=6, hidden=(3,), seed=1), tmp_path / "a.onnx", "m", 1)
    v2 = onnx_models.save(onnx_models.mlp(input_size=6, hidden=(3,), seed=2), tmp_path / "b.onnx", "m", 2)
    manager = ModelManager()
    try:
        await asyncio.gather(manager.ensure_loaded(v1), manager.ensure_loaded(v2), manager.ensure_loaded(v1))
        assert manager.state("m", 1) is manager.state("m", 2) is ModelState.READY
        x = {"input": np.ones((2, 6), np.float32)}
        one, two = await manager.infer("m", 1, x), await manager.infer("m", 2, x)
        assert one["output"].shape == (2, 1) and not np.allclose(one["output"], two["output"])
        assert manager.resolve("m", None).version == 2
        await manager.unload("m", 2)
        assert manager.state("m", 2) is ModelState.UNLOADED and manager.resolve("m", None).version == 1
        with pytest.raises(NotFound, match="no version 2"):
            await manager.infer("m", 2, x)
    finally:
        await manager.close()


async def test_a_version_only_a_plan_loaded_is_reached_only_by_its_version(tmp_path: Path) -> None:
    """A plan's canary or shadow is leased by its version (the plan's routing) but never by a call naming
    the model: not as its newest version, and not named (``named_lease``), until loaded otherwise too."""
    v1 = onnx_models.save(onnx_models.mlp(input_size=6, hidden=(3,), seed=1), tmp_path / "a.onnx", "m", 1)
    v2 = onnx_models.save(onnx_models.mlp(input_size=6, hidden=(3,), seed=2), tmp_path / "b.onnx", "m", 2)
    manager = ModelManager()
    try:
        await manager.ensure_loaded(v1)
        await manager.ensure_loaded(v2, use=Use.PLAN_ONLY)
        assert manager.resolve("m", None).version == 1 and manager.versions("m", by_name=True) == [1]
        with manager.lease("m", None) as lease, manager.named_lease("m", None) as named:
            assert lease.spec.version == named.spec.version == 1
        with manager.lease("m", 2) as lease:  # a plan routes to it by its version
            assert lease.spec.version == 2
        with pytest.raises(NotFound, match="version 2 answers only through the deployment plan"):
            manager.named_lease("m", 2)
        await manager.ensure_loaded(v2)  # loaded otherwise too (the static config): reachable by name
        assert manager.resolve("m", None).version == 2
        with manager.lease("m", None) as lease, manager.named_lease("m", 2) as named:
            assert lease.spec.version == named.spec.version == 2
        await manager.ensure_loaded(v2, use=Use.PLAN_ONLY)  # a plan referring to it again changes nothing
        assert manager.versions("m", by_name=True) == [1, 2]
    finally:
        await manager.close()


async def test_a_primary_demoted_to_canary_stops_being_reachable_by_name(tmp_path: Path) -> None:
    """A plan's primary is reachable by name; once the plans keep it only as a canary (an UpdateDeployment
    that made v1 primary and kept v2 at 10 %), it was still reached, named and as the newest version
    (``plan_only`` could only ever turn False): every call naming no version bypassed the canary
    controller. The manager remembers what each version is held for; the plans' use changes with the
    plans, a direct hold (the static config) lasts, and requests holding the version are answered."""
    v1 = onnx_models.save(onnx_models.mlp(input_size=6, hidden=(3,), seed=1), tmp_path / "a.onnx", "m", 1)
    v2 = onnx_models.save(onnx_models.mlp(input_size=6, hidden=(3,), seed=2), tmp_path / "b.onnx", "m", 2)
    x = {"input": np.ones((1, 6), np.float32)}
    manager = ModelManager()
    try:
        await manager.ensure_loaded(v2, use=Use.PLAN_PRIMARY)
        with manager.named_lease("m", None) as newest:  # caches v2 as the newest a name reaches
            assert newest.spec.version == 2
        await manager.ensure_loaded(v1, use=Use.PLAN_PRIMARY)
        in_flight = manager.named_lease("m", 2)  # a call admitted before the demotion
        manager.set_plan_use("m", 2, Use.PLAN_ONLY)
        manager.set_plan_use("m", 1, Use.PLAN_PRIMARY)
        with pytest.raises(NotFound, match="answers only through the deployment plans"):
            manager.named_lease("m", 2)
        with pytest.raises(NotFound):
            manager.resolve("m", 2, by_name=True)
        assert manager.versions("m", by_name=True) == [1] and manager.versions("m") == [1, 2]
        with manager.named_lease("m", None) as newest, manager.lease("m", None) as unversioned:
            assert newest.spec.version == unversioned.spec.version == 1  # not the cached v2
        with manager.lease("m", 2) as routed:  # its plan still routes to it by its version
            assert routed.spec.version == 2
        with in_flight:  # the demotion failed no request that already held the version
            answer = await in_flight.run(in_flight.prepare(x), None)
        assert answer["output"].shape == (1, 1)

        manager.set_plan_use("m", 2, Use.PLAN_PRIMARY)  # promoted again
        with manager.named_lease("m", 2) as named, manager.named_lease("m", None) as newest:
            assert named.spec.version == newest.spec.version == 2
        await manager.ensure_loaded(v2)  # the static config holds it too: no demotion hides it now
        manager.set_plan_use("m", 2, Use.PLAN_ONLY)
        assert manager.versions("m", by_name=True) == [1, 2] and manager.resolve("m", None).version == 2
        manager.set_plan_use("m", 3, Use.PLAN_ONLY)  # a version not held: nothing to change
        with pytest.raises(ValueError):
            manager.set_plan_use("m", 1, Use.DIRECT)  # only ensure_loaded holds a version directly
    finally:
        await manager.close()


async def test_a_failed_version_loaded_again_keeps_what_it_was_held_for(tmp_path: Path) -> None:
    """A FAILED version's next load is a new entry: it must keep the direct hold of the static config
    (a plan's canary of a static version stays reachable by name) and the plans' last use."""
    spec = onnx_models.save(onnx_models.mlp(input_size=6, hidden=(3,), seed=1), tmp_path / "a.onnx", "m", 1)
    tampered = dataclasses.replace(spec, artifact_uri=str(tmp_path / "missing.onnx"))
    manager = ModelManager()
    try:
        with pytest.raises(FailedPrecondition):
            await manager.ensure_loaded(tampered)  # the static config's load fails
        with pytest.raises(FailedPrecondition):
            await manager.ensure_loaded(tampered, use=Use.PLAN_ONLY)  # a plan's canary: tried again
        await manager.ensure_loaded(spec, use=Use.PLAN_ONLY)  # the artifact is back
        assert manager.versions("m", by_name=True) == [1]  # the static hold outlived both failures
    finally:
        await manager.close()


async def test_an_artifact_that_does_not_match_its_checksum_fails_the_load(tmp_path: Path) -> None:
    spec = onnx_models.save(onnx_models.affine(), tmp_path / "a.onnx", "a")
    tampered = dataclasses.replace(spec, artifact_sha256="0" * 64)
    manager = ModelManager()
    try:
        with pytest.raises(FailedPrecondition, match="sha256"):
            await manager.ensure_loaded(tampered)
        assert manager.state("a", 1) is ModelState.FAILED and "refusing to load" in manager.failure("a", 1)
        with pytest.raises(NotFound, match=r"no version 9 here \(it has: 1 FAILED\)"):  # not "loaded"
            manager.resolve("a", 9)
        with pytest.raises(Unavailable, match="FAILED"):
            await manager.infer("a", 1, {"x": np.zeros((1, 4), np.float32)})
    finally:
        await manager.close()


async def test_a_spec_that_contradicts_the_model_fails_the_load(tmp_path: Path) -> None:
    spec = onnx_models.save(onnx_models.affine(), tmp_path / "a.onnx", "a")
    wrong = dataclasses.replace(spec, inputs=(TensorSpec("x", "float32", (-1, 5)),))
    manager = ModelManager()
    try:
        with pytest.raises(FailedPrecondition, match=r"tensor 'x' has shape \[-1, 4\] in the model"):
            await manager.ensure_loaded(wrong)
    finally:
        await manager.close()


async def test_each_request_is_validated_against_the_signature(tmp_path: Path) -> None:
    spec = onnx_models.save(onnx_models.two_inputs(), tmp_path / "t.onnx", "t")
    manager = ModelManager()
    try:
        await manager.ensure_loaded(spec)
        good: dict[str, np.ndarray] = {"x": np.ones((2, 3), np.float32), "k": np.array([[2], [3]], np.int64)}
        assert (await manager.infer("t", 1, good))["product"].tolist() == [[2, 2, 2], [3, 3, 3]]
        cases: list[tuple[dict[str, np.ndarray], str]] = [
            ({"x": good["x"]}, "input 'k' is missing"),
            ({**good, "k": good["k"].astype(np.int32)}, "input 'k' has dtype int32, expected int64"),
            ({**good, "k": np.ones((3, 1), np.int64)}, "'k' has 3 rows but 'x' has 2"),
            ({**good, "z": good["x"]}, "no input named 'z'"),
            ({**good, "x": np.full((2, 3), np.inf, np.float32)}, "NaN or infinite"),
        ]
        for inputs, message in cases:
            with pytest.raises(InvalidArgument, match=message) as info:
                await manager.infer("t", 1, inputs)
            if "has dtype" in message or "missing" in message:
                assert "x: float32[-1, 3]; k: int64[-1, 1]" in info.value.message
    finally:
        await manager.close()


async def test_rows_are_bounded_by_every_output_the_model_computes_before_it_runs(tmp_path: Path) -> None:
    """Rows were bounded by the smallest output's row (score: 4 bytes), but the runtime computes every
    output (embedding: 1,024 bytes a row): a 28-byte [262000, 0] request was admitted under a 1 MiB limit
    and made the model allocate ~260 MiB before its answer was refused."""
    spec = onnx_models.save(onnx_models.score_and_embedding(256), tmp_path / "e.onnx", "e")
    limit = 1 << 20
    manager = ModelManager(ManagerOptions(max_answer_bytes=limit))
    try:
        await manager.ensure_loaded(spec)
        # 1,020 rows of both outputs would be 1,044,480 bytes; with the answer's own fields on top, 1,019.
        fits = (limit - answer_overhead_bytes(spec)) // (4 + 4 * 256)
        assert fits == 1019
        with manager.lease("e", 1) as lease:
            with pytest.raises(ResourceExhausted, match=f"send at most {fits} rows per call"):
                lease.prepare({"x": np.zeros((262_000, 0), np.float32)}, answerable=True)
            with pytest.raises(ResourceExhausted, match=f"a request of {fits + 1} rows"):
                lease.prepare({"x": np.zeros((fits + 1, 0), np.float32)}, answerable=True)
            answer = await lease.run(
                lease.prepare({"x": np.ones((fits, 2), np.float32)}, answerable=True), None
            )
        assert answer["embedding"].shape == (fits, 256) and answer["score"][0, 0] == 2.0
    finally:
        await manager.close()


def test_the_static_model_config_round_trips_with_paths_relative_to_the_file(tmp_path: Path) -> None:
    spec = onnx_models.save(onnx_models.affine(), tmp_path / "models" / "a.onnx", "a", feature_refs=("v:f",))
    relative = dataclasses.replace(spec, artifact_uri="models/a.onnx")
    dump_model_config([relative], tmp_path / "config.json")
    (loaded,) = load_model_config(tmp_path / "config.json")
    assert loaded == dataclasses.replace(spec, artifact_uri=str((tmp_path / "models" / "a.onnx").resolve()))


def test_a_model_config_that_cannot_be_used_is_a_configuration_error_naming_file_and_entry(
    tmp_path: Path,
) -> None:
    """A missing or malformed file, or a bad entry, escaped as OSError, JSONDecodeError, TypeError,
    ValueError or KeyError, which ``python -m data_plane`` printed as a traceback."""
    good = {"name": "m", "version": 1, "artifact_sha256": "00", "artifact_uri": "m.onnx"}
    tensors = {"inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 4]}], "outputs": []}
    cases = [
        (None, r"cannot be read: No such file or directory"),
        ('{"models": [', r"not valid JSON: Expecting value: line 1"),
        ('{"model": []}', r'expected \{"models": \[model, ...\]\}'),
        ("[3]", r"expected \{\"models\""),
        ('{"models": [3]}', r"models\[0\]: expected an object, got int"),
        (json.dumps({"models": [{**good, **tensors}, good]}), r"models\[1\] \('m'\): missing field 'inputs'"),
        (
            json.dumps({"models": [{**good, "version": "one", **tensors}]}),
            r"models\[0\] \('m'\): version must be a whole number, got 'one'",
        ),
        # 1e999 reads as infinity: int() raised OverflowError, a traceback again; 1.7 was cut to 1.
        (
            json.dumps({"models": [{**good, **tensors, "version": 0}]}).replace(
                '"version": 0', '"version": 1e999'
            ),
            r"models\[0\] \('m'\): version must be a whole number, got inf",
        ),
        (
            json.dumps({"models": [{**good, **tensors, "max_batch_size": 1.7}]}),
            r"models\[0\] \('m'\): max_batch_size must be a whole number, got 1.7",
        ),
        # Accepted, they started the server and failed the version's load with a ValueError's repr.
        (
            json.dumps({"models": [{**good, **tensors, "max_batch_size": 0}]}),
            r"models\[0\] \('m'\): max_batch_size must be at least 1, got 0$",
        ),
        (
            json.dumps({"models": [{**good, **tensors, "max_queue_delay_us": -5}]}),
            r"models\[0\] \('m'\): max_queue_delay_us must be at least 0, got -5$",
        ),
        (
            json.dumps({"models": [{**good, **tensors, "warmup_requests": -1}]}),
            r"models\[0\] \('m'\): warmup_requests must be at least 0, got -1$",
        ),
        # Accepted, the version's warm-up built 2**31 - 1 requests at once and the data plane's memory grew
        # until it was killed.
        (
            json.dumps({"models": [{**good, **tensors, "warmup_requests": 2**31 - 1}]}),
            r"models\[0\] \('m'\): warmup_requests must be at most 10000, got 2147483647$",
        ),
        ('{"models": ' + "[" * 100_000 + "]" * 100_000 + "}", r"not valid JSON: nested too deeply"),
        (
            json.dumps(
                {"models": [{**good, **tensors, "inputs": [{"name": "x", "dtype": "float33", "shape": [4]}]}]}
            ),
            r"models\[0\] \('m'\): data type 'float33' not understood",
        ),
        (
            json.dumps({"models": [{**good, **tensors, "missing_entity_policy": "skip"}]}),
            r"models\[0\] \('m'\): missing_entity_policy must be 'error' or 'defaults'",
        ),
    ]
    for index, (text, reason) in enumerate(cases):
        path = tmp_path / f"config{index}.json"
        if text is not None:
            path.write_text(text)
        with pytest.raises(ConfigurationError, match=f"^model config {re.escape(str(path))}: {reason}"):
            load_model_config(path)


@pytest.mark.parametrize(
    ("refs", "problem"),
    [
        (
            ["driver_stats@1:f0", "driver_stats@x"],
            "feature_refs[1]: malformed feature reference 'driver_stats@x'",
        ),
        (["driver stats"], "feature_refs[0]: malformed feature reference 'driver stats'"),
        (
            ["driver_stats@0:f0"],
            "feature_refs[0]: malformed feature reference 'driver_stats@0:f0': versions start",
        ),
        (["request:"], "feature_refs[0]: 'request:' names no request-time feature"),
        ("driver_stats", "feature_refs must be a list of feature references, got str"),
        ([7], "feature_refs[0] must be a feature reference (text), got int 7"),
    ],
)
def test_a_malformed_feature_reference_in_the_model_config_fails_the_load(
    tmp_path: Path, refs: object, problem: str
) -> None:
    """Such a reference was accepted, and every Predict of the model answered INVALID_ARGUMENT, blaming its
    caller for the operator's config. It is now the config's one-line error, naming the model, its version
    and the reference; the data plane does not start."""
    entry = {
        "name": "ranker", "version": 3, "artifact_sha256": "00", "artifact_uri": "m.onnx",
        "inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 4]}], "outputs": [], "feature_refs": refs,
    }  # fmt: skip
    path = tmp_path / "models.json"
    path.write_text(json.dumps({"models": [entry]}))
    with pytest.raises(ConfigurationError) as refused:
        load_model_config(path)
    assert str(refused.value).startswith(f"model config {path}: models[0] ('ranker'): version 3: {problem}")


class _BatchRows(ManagerObserver, BatchObserver):
    """Records the rows of every batch the manager starts."""

    def __init__(self) -> None:
        self.rows: list[int] = []

    def for_model(self, name: str, version: int) -> BatchObserver:
        return self

    def batch_started(self, size: int, rows: int, queue_depth: int) -> None:
        self.rows.append(rows)


async def test_a_new_spec_for_a_loaded_version_changes_its_batching_without_a_reload(tmp_path: Path) -> None:
    spec = onnx_models.save(
        onnx_models.mlp(input_size=6, hidden=(3,)),
        tmp_path / "m.onnx",
        "m",
        max_batch_size=4,
        warmup_requests=2,
    )
    batches = _BatchRows()
    # Every batch in a worker thread, so that concurrent requests queue and batch together.
    manager = ModelManager(ManagerOptions(inline_batch_below_us=0), observer=batches)
    x = {"input": np.ones((1, 6), np.float32)}
    try:
        await manager.ensure_loaded(spec)
        description = manager.description("m", 1)
        await asyncio.gather(*(manager.infer("m", 1, x) for _ in range(12)))
        assert max(batches.rows) == 4

        larger = dataclasses.replace(spec, max_batch_size=8, max_queue_delay_us=50_000)
        await manager.ensure_loaded(larger)
        batches.rows.clear()
        await asyncio.gather(*(manager.infer("m", 1, x) for _ in range(12)))
        assert max(batches.rows) == 8
        assert manager.resolve("m", 1) == larger and manager.description("m", 1) == description
        with manager.lease("m", 1) as lease:
            assert lease.spec.max_batch_size == 8

        await manager.ensure_loaded(dataclasses.replace(larger, max_batch_size=2))
        batches.rows.clear()
        await asyncio.gather(*(manager.infer("m", 1, x) for _ in range(12)))
        assert max(batches.rows) == 2
    finally:
        await manager.close()


async def test_a_new_spec_changes_input_validation_and_refuses_a_new_signature(tmp_path: Path) -> None:
    spec = onnx_models.save(onnx_models.affine(), tmp_path / "a.onnx", "a")
    manager = ModelManager()
    nan = {"x": np.full((1, 4), np.nan, np.float32)}
    try:
        await manager.ensure_loaded(spec)
        with pytest.raises(InvalidArgument, match="NaN or infinite"):
            await manager.infer("a", 1, nan)
        lenient = dataclasses.replace(spec, allow_non_finite=True)
        await manager.ensure_loaded(lenient)
        assert np.isnan((await manager.infer("a", 1, nan))["y"]).all()  # it reached the model

        resized = dataclasses.replace(
            lenient, inputs=(TensorSpec("x", "float32", (-1, 5)),), max_batch_size=3
        )
        with pytest.raises(FailedPrecondition, match="cannot change inputs"):
            await manager.ensure_loaded(resized)
        assert manager.resolve("a", 1) == lenient  # nothing of the refused spec applied
        assert manager.state("a", 1) is ModelState.READY
    finally:
        await manager.close()


def test_execution_providers_are_preferred_tensorrt_then_cuda_then_cpu() -> None:
    available = ["CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"]
    assert choose_providers(available) == available[::-1]
    assert choose_providers(available, allowed=("CUDAExecutionProvider",)) == [
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert choose_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]


def test_tensorrt_is_not_offered_when_its_libraries_cannot_load() -> None:
    # onnxruntime-gpu lists TensorRT wherever it is installed (seen on an H200 without TensorRT).
    available = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(available, tensorrt_loadable=False) == [
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert choose_providers(available, tensorrt_loadable=True)[0] == "TensorrtExecutionProvider"


def test_gpu_providers_a_session_did_not_start_with_are_named() -> None:
    requested = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert dropped_gpu_providers(requested, ["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "TensorrtExecutionProvider"
    ]
    assert dropped_gpu_providers(requested, ["CPUExecutionProvider"]) == requested[:2]
    assert dropped_gpu_providers(requested, requested) == []
    assert dropped_gpu_providers(["CPUExecutionProvider"], ["CPUExecutionProvider"]) == []


async def test_feature_defaults_that_cannot_fill_the_input_fail_the_load_or_the_change(
    tmp_path: Path,
) -> None:
    # They were accepted and failed only requests for unknown entities, as INVALID_ARGUMENT (the caller's).
    spec = onnx_models.save(onnx_models.affine(), tmp_path / "a.onnx", "a")  # input x: [-1, 4]
    manager = ModelManager()
    try:
        with pytest.raises(FailedPrecondition, match="3 feature_defaults for the 4 features of input 'x'"):
            await manager.ensure_loaded(dataclasses.replace(spec, feature_defaults=(0.1, 0.2, 0.3)))
        assert manager.state("a", 1) is ModelState.FAILED
        other = dataclasses.replace(spec, version=2, feature_defaults=(0.0, 1.0, math.nan, 0.0))
        with pytest.raises(FailedPrecondition, match="must be finite numbers, not nan"):
            await manager.ensure_loaded(other)
        good = dataclasses.replace(spec, version=3, feature_defaults=(0.0, 1.0, 2.0, 3.0))
        await manager.ensure_loaded(good)
        with pytest.raises(FailedPrecondition, match="3 feature_defaults for the 4 features"):
            await manager.ensure_loaded(dataclasses.replace(good, feature_defaults=(1.0, 2.0, 3.0)))
        assert manager.state("a", 3) is ModelState.READY
        assert manager.resolve("a", 3).feature_defaults == (0.0, 1.0, 2.0, 3.0)
    finally:
        await manager.close()


async def test_feature_defaults_an_integer_input_cannot_hold_fail_the_load(tmp_path: Path) -> None:
    """A default is what the model gets for a missing feature, cast to its input's dtype: 2.5 into an int64
    input was fed as 2 without a word (a stored 2.5, or a request-time one, is refused), 300 into a uint8
    input failed each request that needed it as INTERNAL (numpy's OverflowError), and any non-zero value
    into a bool input became True. Such defaults now fail the load, as a wrong count does."""
    spec = onnx_models.save(onnx_models.integer_input(2), tmp_path / "i.onnx", "counts")  # x: int64[-1, 2]
    manager = ModelManager()
    try:
        with pytest.raises(FailedPrecondition, match=r"feature_defaults\[1\] is 2.5; input 'x' is int64"):
            await manager.ensure_loaded(dataclasses.replace(spec, feature_defaults=(1.0, 2.5)))
        assert manager.state("counts", 1) is ModelState.FAILED
        await manager.ensure_loaded(dataclasses.replace(spec, version=2, feature_defaults=(1.0, -2.0)))
        assert manager.state("counts", 2) is ModelState.READY
    finally:
        await manager.close()


@pytest.mark.parametrize(
    ("dtype", "defaults", "problem"),
    [
        ("uint8", (300.0,), "feature_defaults[0] is 300.0; input 'x' is uint8: whole numbers from 0 to 255"),
        ("int32", (-1.0, 0.5), "feature_defaults[1] is 0.5; input 'x' is int32"),
        ("bool", (2.0,), "feature_defaults[0] is 2.0; input 'x' is bool: whole numbers from 0 to 1"),
        ("float16", (1e6,), "feature_defaults[0] is 1000000.0; input 'x' is float16: finite values from"),
        ("float32", (1e39,), "feature_defaults[0] is 1e+39; input 'x' is float32"),
    ],
)
def test_feature_defaults_are_held_to_the_input_dtype(
    dtype: str, defaults: tuple[float, ...], problem: str
) -> None:
    spec = ModelSpec(
        name="m", version=1, artifact_sha256="", artifact_uri="",
        inputs=(TensorSpec("x", dtype, (-1, len(defaults))),), outputs=(TensorSpec("y", "float32", (-1, 1)),),
        feature_defaults=defaults,
    )  # fmt: skip
    assert (defaults_problem(spec) or "").startswith(problem)
    fitting = dataclasses.replace(spec, feature_defaults=(1.0,) * len(defaults))
    assert defaults_problem(fitting) is None
    assert defaults_problem(dataclasses.replace(spec, inputs=(TensorSpec("x", "float64", (-1, -1)),))) is None


async def test_warm_up_samples_are_read_from_a_uri_as_the_artifact_is(tmp_path: Path) -> None:
    """A ``file:`` URI (any URI an artifact may have) was opened as a local path and failed the load."""
    samples = tmp_path / "samples.npz"
    np.savez(samples, input=np.ones((3, 6), np.float32))
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, input=np.array([{"row": 1}] * 3, dtype=object))
    model = onnx_models.mlp(input_size=6, hidden=(3,))
    specs = [
        onnx_models.save(model, tmp_path / "m.onnx", name, warmup_samples_uri=uri)
        for name, uri in [
            ("by_path", str(samples)),
            ("by_uri", samples.as_uri()),
            ("pickled", pickled.as_uri()),
        ]
    ]
    manager = ModelManager()
    try:
        for spec in specs[:2]:
            await manager.ensure_loaded(spec)
            assert manager.state(spec.name, 1) is ModelState.READY
        with pytest.raises(FailedPrecondition, match=r"not an \.npz file of plain arrays"):
            await manager.ensure_loaded(specs[2])  # never unpickled
    finally:
        await manager.close()


async def test_warm_up_samples_without_rows_fail_the_load_naming_the_file(tmp_path: Path) -> None:
    """A 0-d array failed the load with a bare "TypeError: len() of unsized object"; a file of no rows was
    silently replaced by synthetic inputs, though recorded samples were asked for."""
    scalar, empty = tmp_path / "scalar.npz", tmp_path / "empty.npz"
    np.savez(scalar, input=np.float32(1.0))
    np.savez(empty, input=np.ones((0, 6), np.float32))
    model = onnx_models.mlp(input_size=6, hidden=(3,))
    manager = ModelManager()
    try:
        cases = [("scalar", scalar, "hold a single value"), ("empty", empty, "hold no rows")]
        for name, path, reason in cases:
            spec = onnx_models.save(model, tmp_path / f"{name}.onnx", name, warmup_samples_uri=str(path))
            with pytest.raises(FailedPrecondition, match=f"warm-up samples .*{name}.npz.*{reason}"):
                await manager.ensure_loaded(spec)
    finally:
        await manager.close()


async def test_a_planned_version_with_too_many_warm_up_requests_fails_its_load(tmp_path: Path) -> None:
    """A plan from a control plane that predates the bound is not refused whole (every other deployment's
    plans would wait): the version's load fails, naming the field and the bound, before any warm-up runs."""
    plan = deployments_pb2.ModelServingSpec(
        model_name="m",
        version=1,
        serving=deployments_pb2.ServingConfig(warmup_requests=MAX_WARMUP_REQUESTS + 1),
    )
    saved = onnx_models.save(onnx_models.mlp(), tmp_path / "m.onnx", "m")
    spec = dataclasses.replace(saved, warmup_requests=model_spec_from_proto(plan).warmup_requests)
    manager = ModelManager()
    try:
        with pytest.raises(
            FailedPrecondition,
            match=r"^model m v1 failed to load: warmup_requests must be from 0 to 10000, got 10001$",
        ):
            await manager.ensure_loaded(spec)
    finally:
        await manager.close()


async def test_a_spec_may_not_free_a_size_the_model_fixes(tmp_path: Path) -> None:
    """A spec batching (-1) a model of batch 1 was accepted: its full-batch warm-up then failed the load in
    ONNX Runtime's words, or, warmed by single rows, multi-row requests failed INTERNAL."""
    fixed = onnx_models.save(onnx_models.affine(batch=1), tmp_path / "a.onnx", "a", warmup_requests=1)
    assert fixed.inputs == (TensorSpec("x", "float32", (1, 4)),)
    manager = ModelManager()
    try:
        loose = dataclasses.replace(fixed, inputs=(TensorSpec("x", "float32", (-1, 4)),))
        with pytest.raises(
            FailedPrecondition, match=r"tensor 'x' has shape \[1, 4\] in the model, \[-1, 4\]"
        ):
            await manager.ensure_loaded(loose)
        await manager.ensure_loaded(fixed)
        with pytest.raises(InvalidArgument, match="'x'"):  # checked against the spec, before the model
            await manager.infer("a", 1, {"x": np.zeros((3, 4), np.float32)})
    finally:
        await manager.close()


async def test_recorded_warm_up_samples_load_a_model_without_a_batch_dimension(tmp_path: Path) -> None:
    """Recorded rows were sliced off one at a time ([1, 4]) even for a model of x: float32[2, 4], so no
    .npz layout could load it. Now the array is one request, or a stack of them; any other shape fails the
    load naming the shapes expected."""
    model = onnx_models.affine(batch=2)
    layouts = [("one", (2, 4)), ("stacked", (5, 2, 4)), ("rows", (3, 4))]
    manager = ModelManager()
    try:
        for name, shape in layouts:
            np.savez(tmp_path / f"{name}.npz", x=np.ones(shape, np.float32))
            spec = onnx_models.save(
                model, tmp_path / f"{name}.onnx", name, warmup_samples_uri=str(tmp_path / f"{name}.npz")
            )
            if name == "rows":
                expected = r"'x' has shape \[3, 4\].*one request of shape \[2, 4\] or .*\[N, 2, 4\]"
                with pytest.raises(FailedPrecondition, match=expected):
                    await manager.ensure_loaded(spec)
                continue
            await manager.ensure_loaded(spec)
            assert manager.state(name, 1) is ModelState.READY
            assert (await manager.infer(name, 1, {"x": np.ones((2, 4), np.float32)}))["y"].shape == (2, 4)
    finally:
        await manager.close()


async def test_an_artifact_hash_in_capitals_names_the_same_artifact(tmp_path: Path) -> None:
    """fetch_verified compared the hash lowercased, ensure_loaded as given: a deployment naming the loaded
    version's hash in capitals was refused as "a version's artifact cannot change"."""
    spec = onnx_models.save(onnx_models.affine(), tmp_path / "a.onnx", "a")
    manager = ModelManager()
    try:
        await manager.ensure_loaded(spec)
        await manager.ensure_loaded(dataclasses.replace(spec, artifact_sha256=spec.artifact_sha256.upper()))
        assert manager.state("a", 1) is ModelState.READY
        assert manager.resolve("a", 1).artifact_sha256 == spec.artifact_sha256.lower()
    finally:
        await manager.close()


def test_recorded_samples_of_a_scalar_input_are_one_request_shaped_as_the_inputs(tmp_path: Path) -> None:
    """A model without a batch dimension whose input is a scalar (t: float32[]) could not use the layout
    "one request shaped as the inputs": every 0-d array was refused as a single value, not rows."""
    spec = ModelSpec(
        name="scale", version=1, artifact_sha256="0" * 64, artifact_uri=str(tmp_path / "m.onnx"),
        inputs=(TensorSpec("x", "float32", (4,)), TensorSpec("t", "float32", ())),
        outputs=(TensorSpec("y", "float32", (4,)),),
    )  # fmt: skip
    np.savez(tmp_path / "one.npz", x=np.ones(4, np.float32), t=np.float32(0.5))
    (request,) = recorded_inputs(spec, str(tmp_path / "one.npz"))
    assert (request["x"].shape, request["t"].shape, float(request["t"])) == ((4,), (), 0.5)
    np.savez(tmp_path / "stacked.npz", x=np.ones((3, 4), np.float32), t=np.full(3, 0.5, np.float32))
    assert [r["t"].shape for r in recorded_inputs(spec, str(tmp_path / "stacked.npz"))] == [(), (), ()]


async def test_only_the_outputs_the_spec_declares_are_computed_answered_and_batched(tmp_path: Path) -> None:
    """A spec may serve a subset of a model's outputs. The undeclared ones were answered anyway (though
    ModelMetadata did not list them and a request for one was refused), and one without a row per request
    (a scalar total) failed every batch of two or more with INTERNAL."""
    full = onnx_models.save(onnx_models.with_total(), tmp_path / "t.onnx", "t", max_queue_delay_us=50_000)
    spec = dataclasses.replace(full, outputs=full.outputs[:1])  # serves y only
    manager = ModelManager()
    try:
        await manager.ensure_loaded(spec)
        answers = await asyncio.gather(
            *(manager.infer("t", 1, {"x": np.full((1, 4), k, np.float32)}) for k in range(6))
        )
        for k, answer in enumerate(answers):
            assert list(answer) == ["y"]
            np.testing.assert_array_equal(answer["y"], np.full((1, 4), 2.0 * k, np.float32))
    finally:
        await manager.close()


async def test_a_time_major_model_is_not_batched_and_each_caller_gets_its_own_answer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A dynamic first dimension is not always a batch: concurrent requests to a time-major model were
    concatenated into one longer sequence, so each answer was computed from other callers' data (status
    OK). Rows run together and alone disagree at load, so it serves one request at a time; a real batch
    model still batches."""
    sequence = onnx_models.save(
        onnx_models.running_sum(), tmp_path / "s.onnx", "seq", max_queue_delay_us=50_000
    )
    mlp = onnx_models.save(onnx_models.mlp(input_size=2, hidden=(3,)), tmp_path / "m.onnx", "mlp")
    noisy = onnx_models.save(onnx_models.noisy(), tmp_path / "n.onnx", "noisy")  # random, yet a batch
    # Random and time-major: its noise must not hide that batching mixes callers' sequences.
    noisy_sequence = onnx_models.save(onnx_models.running_sum(noise=0.01), tmp_path / "ns.onnx", "noisy_seq")
    manager = ModelManager()
    try:
        with caplog.at_level(logging.WARNING, logger="aether.data_plane.models"):
            for spec in (sequence, mlp, noisy, noisy_sequence):
                await manager.ensure_loaded(spec)
        assert "model seq v1: output 'y' of two requests run together differs" in caplog.text
        assert "model noisy_seq v1: output 'y' of two requests run together differs" in caplog.text
        assert "mlp v1" not in caplog.text and "model noisy v1" not in caplog.text  # both still batch
        requests = [np.full((3, 2), k + 1, np.float32) for k in range(6)]
        answers = await asyncio.gather(*(manager.infer("seq", 1, {"x": x}) for x in requests))
        for x, answer in zip(requests, answers, strict=True):
            np.testing.assert_allclose(answer["y"], np.cumsum(x, axis=0))
    finally:
        await manager.close()
