"""The prediction-log contract between the planes, through the real pieces: Predict requests to a real data
plane (its writer) → a real Redis Stream → the canary controller's parser (``observations.StepWindow``).
Every request leaves an entry, failures included, with its latency and gRPC status; features and outputs
only on sampled entries; mirrored shadow calls are logged with ``role=shadow`` and never counted."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import cast

import grpc
import grpc.aio
import numpy as np
import pytest
import redis
import redis.asyncio

from clients.aether.v1 import deployments_pb2 as dpb
from clients.aether.v1 import inference_pb2_grpc as pb_grpc
from clients.aether.v1 import model_registry_pb2 as mpb
from clients.sdk.inference import build_predict_request
from control_plane.deployments.canary import Action, Policy
from control_plane.deployments.log_entries import parse_entry
from control_plane.deployments.observations import PredictionLogObserver, StepWindow
from control_plane.features.online_writer import OnlineWriter
from data_plane.deployment_watch import plans_path
from data_plane.models.spec import ModelSpec, TensorSpec, load_model_config
from data_plane.registry_watch import save_snapshot
from data_plane.server import start_server
from data_plane.settings import DataPlaneSettings
from tests.integration.serving.conftest import FEATURES, NOW_US, STORED, serving_settings
from tests.support import onnx_models
from tests.support.redis_server import RedisServer
from tests.unit.data_plane.registry_builders import writable
from tests.unit.deployments.decisions import decide_fresh

pytestmark = pytest.mark.integration

STREAM = "contract:predictions"
Entry = dict[bytes, bytes]


def _planned(spec: ModelSpec, name: str, role: int, percent: float) -> dpb.PlannedVariant:
    def tensors(specs: tuple[TensorSpec, ...]) -> list[mpb.TensorSpec]:
        return [mpb.TensorSpec(name=t.name, dtype=t.dtype, shape=t.shape) for t in specs]

    model = dpb.ModelServingSpec(
        model_name=spec.name, version=spec.version, artifact_sha256=spec.artifact_sha256,
        artifact_uri=spec.artifact_uri, inputs=tensors(spec.inputs), outputs=tensors(spec.outputs),
        feature_refs=spec.feature_refs, serving=dpb.ServingConfig(warmup_requests=1),
    )  # fmt: skip
    return dpb.PlannedVariant(name=name, role=role, traffic_percent=percent, model=model)  # type: ignore[arg-type]


async def _entries(url: str, count: int) -> list[Entry]:
    client = redis.Redis.from_url(url)
    entries: list[tuple[bytes, Entry]] = []
    try:
        for _ in range(300):
            entries = cast(list[tuple[bytes, Entry]], client.xrange(STREAM))
            if len(entries) >= count:
                return [fields for _, fields in entries]
            await asyncio.sleep(0.01)
        raise AssertionError(f"the prediction log holds {len(entries)} entries, expected {count}")
    finally:
        client.close()


def _stack(redis_url: str, tmp_path: Path) -> tuple[DataPlaneSettings, dict[tuple[str, int], ModelSpec]]:
    """Every stored driver's features written, the data plane's settings (nothing sampled, so the log holds
    exactly the entries every request leaves) and the static model config's specs."""
    writer = OnlineWriter(redis.Redis.from_url(redis_url))
    writer.write(writable(FEATURES), [[str(k)] for k in STORED], np.stack(list(STORED.values())), NOW_US)
    settings = serving_settings(
        tmp_path, redis_url, prediction_log_stream=STREAM, prediction_log_sample_rate=0.0
    )
    assert settings.model_config is not None
    return settings, {(s.name, s.version): s for s in load_model_config(settings.model_config)}


async def _predict(
    stub: pb_grpc.InferenceStub, deployment: str, driver: int | str, routing_key: str, request_id: str = ""
) -> grpc.StatusCode:
    request = build_predict_request(
        deployment, [{"driver_id": driver}], routing_key=routing_key, request_id=request_id
    )
    try:
        await stub.Predict(request, timeout=5)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def test_every_request_reaches_the_canary_parser_with_its_outcome(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    settings, specs = _stack(own_redis.url, tmp_path)
    # blue serves everything; "broken" mirrors every request to a model whose input the features do not
    # fit (4 columns, not 8), so each shadow call fails.
    plan = dpb.DeploymentPlan(
        deployment="ranking", plan_revision=1, routing_salt="ranking",
        variants=[
            _planned(specs["scorer", 1], "blue", dpb.VARIANT_ROLE_PRIMARY, 100.0),
            _planned(specs["affine", 1], "broken", dpb.VARIANT_ROLE_SHADOW, 100.0),
        ],
    )  # fmt: skip
    save_snapshot(
        plans_path(settings), dpb.DeploymentPlanSnapshot(revision=1, plans=[plan]).SerializeToString()
    )
    handle = await start_server(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
            stub = pb_grpc.InferenceStub(channel)  # type: ignore[no-untyped-call]
            # Drivers 1 and 2 have features; driver 3 has none (NOT_FOUND under the default policy).
            drivers = [1, 2, 3, 1, 3, 2, 1, 1]
            codes = [await _predict(stub, "ranking", d, f"r{i}", f"r{i}") for i, d in enumerate(drivers)]
        assert codes.count(grpc.StatusCode.NOT_FOUND) == 2 and codes.count(grpc.StatusCode.OK) == 6
        # One served entry per request, and a shadow entry per answered (hence mirrored) one.
        entries = await _entries(own_redis.url, len(drivers) + codes.count(grpc.StatusCode.OK))
    finally:
        await handle.stop(None)

    served = {e[b"request_id"].decode(): e for e in entries if e[b"role"] == b"served"}
    assert sorted(served) == sorted(f"r{i}" for i in range(len(drivers)))
    for i, code in enumerate(codes):
        entry = served[f"r{i}"]
        assert entry[b"ok"] == (b"1" if code == grpc.StatusCode.OK else b"0")
        assert entry[b"error_code"] == code.name.encode()
        assert entry[b"variant"] == b"blue" and entry[b"model"] == b"scorer" and entry[b"version"] == b"1"
        assert 0.0 < float(entry[b"latency_ms"]) < 5000.0
        # A mirrored request is logged in full; a failed one was never mirrored, and nothing is sampled.
        ok = code == grpc.StatusCode.OK
        assert entry[b"sampled"] == (b"1" if ok else b"0") and (b"features" in entry) == ok
    shadows = [e for e in entries if e[b"role"] == b"shadow"]
    assert len(shadows) == 6 and all(e[b"ok"] == b"0" and e[b"variant"] == b"broken" for e in shadows)
    # The shadow's model cannot take what its references read: its fault, not the request's.
    assert {e[b"error_code"] for e in shadows} == {b"FAILED_PRECONDITION"}
    assert all(parse_entry(e) is None for e in shadows)  # the controller never counts a shadow

    client = redis.asyncio.Redis.from_url(own_redis.url)
    try:
        # Told what "blue" serves, as the canary controller tells it from the plan: the entries name the
        # model version that served them in the form the observer compares.
        window = StepWindow("ranking", started_at_us=0, serves={"blue": ("scorer", 1)})
        assert await window.read(client, STREAM) == len(entries)
        elsewhere = StepWindow("ranking", started_at_us=0, serves={"blue": ("scorer", 2)})
        await elsewhere.read(client, STREAM)
    finally:
        await client.aclose()
    blue = window.observe("blue")
    # The two NOT_FOUNDs (entities without features) are the callers' errors: requests, not errors.
    assert (blue.requests, blue.errors) == (8, 0) and blue.p99_ms is not None
    assert window.observe("broken").requests == 0
    assert elsewhere.observe("blue").requests == 0  # another version's "blue": not served by scorer v2


async def test_the_canary_is_judged_on_its_own_failures_not_its_callers_errors(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    settings, specs = _stack(own_redis.url, tmp_path)
    # A model that fails (INTERNAL) on every stored driver's features (values of 1 and more).
    broken = onnx_models.save(
        onnx_models.failing(width=8), tmp_path / "broken.onnx", "broken", feature_refs=("driver_stats",)
    )
    # "ranking": a healthy canary (scorer v2) beside its primary; "fragile": a canary that fails.
    plans = [
        dpb.DeploymentPlan(
            deployment=deployment, plan_revision=1, routing_salt=deployment,
            variants=[
                _planned(specs["scorer", 1], "blue", dpb.VARIANT_ROLE_PRIMARY, 50.0),
                _planned(canary, "green", dpb.VARIANT_ROLE_CANARY, 50.0),
            ],
        )
        for deployment, canary in (("ranking", specs["scorer", 2]), ("fragile", broken))
    ]  # fmt: skip
    save_snapshot(
        plans_path(settings), dpb.DeploymentPlanSnapshot(revision=1, plans=plans).SerializeToString()
    )
    handle = await start_server(settings)
    codes: dict[tuple[str, str], int] = {}
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
            stub = pb_grpc.InferenceStub(channel)  # type: ignore[no-untyped-call]
            for i in range(300):
                # 1 caller in 10 asks for a driver without stored features (NOT_FOUND), 1 in 15 sends a
                # driver id that is not an integer (INVALID_ARGUMENT).
                driver = "3" if i % 10 == 0 else "x7" if i % 15 == 1 else "1"
                for deployment in ("ranking", "fragile"):
                    code = await _predict(stub, deployment, driver, f"u{i}")
                    codes[deployment, code.name] = codes.get((deployment, code.name), 0) + 1
        await _entries(own_redis.url, 600)
    finally:
        await handle.stop(None)
    assert codes["ranking", "NOT_FOUND"] == 30 and codes["ranking", "INVALID_ARGUMENT"] == 20, codes
    assert codes["fragile", "INTERNAL"] > 0, codes

    observer = PredictionLogObserver(redis.asyncio.Redis.from_url(own_redis.url), STREAM)
    try:
        healthy, primary, read_all, since_us, *_ = await observer.observe("ranking", 0, "green", "blue")
        failing, fragile_primary, *_ = await observer.observe("fragile", 0, "green", "blue")
    finally:
        await observer.close()
    # Judged on errors only: a shared machine's latency is no part of this test.
    policy = Policy(bake_seconds=0, min_requests=50, max_p99_ratio=0.0)
    # The healthy canary failed only its callers' requests, as its primary did: it goes on.
    assert healthy.requests > 50 and primary.requests > 50 and healthy.requests + primary.requests == 300
    assert (healthy.errors, primary.errors) == (0, 0) and read_all and since_us == 0  # nothing trimmed
    assert decide_fresh(policy, 0, 1.0, healthy, primary).action is Action.ADVANCE
    # The failing canary's INTERNALs are its own: rolled back.
    assert failing.errors == codes["fragile", "INTERNAL"] and fragile_primary.errors == 0
    decision = decide_fresh(policy, 0, 1.0, failing, fragile_primary)
    assert decision.action is Action.ROLLBACK and decision.reason.startswith("error rate "), decision.reason


async def test_unmirrored_entries_carry_features_only_when_sampled(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    writer = OnlineWriter(redis.Redis.from_url(own_redis.url))
    writer.write(writable(FEATURES), [[str(k)] for k in STORED], np.stack(list(STORED.values())), NOW_US)
    settings = serving_settings(
        tmp_path, own_redis.url, prediction_log_stream=STREAM, prediction_log_sample_rate=0.0
    )
    handle = await start_server(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
            stub = pb_grpc.InferenceStub(channel)  # type: ignore[no-untyped-call]
            for i in range(5):
                await stub.Predict(
                    build_predict_request("scorer", [{"driver_id": 1}], request_id=f"s{i}"), timeout=5
                )
            handle.prediction_log.sample_rate = 1.0
            await stub.Predict(
                build_predict_request("scorer", [{"driver_id": 2}], request_id="sampled"), timeout=5
            )
        entries = await _entries(own_redis.url, 6)
    finally:
        await handle.stop(None)
    by_id = {e[b"request_id"]: e for e in entries}
    for i in range(5):
        entry = by_id[f"s{i}".encode()]
        assert entry[b"sampled"] == b"0" and entry[b"ok"] == b"1" and entry[b"error_code"] == b"OK"
        assert not any(k.startswith((b"features", b"output:", b"entities")) for k in entry)
    sampled = by_id[b"sampled"]
    assert sampled[b"sampled"] == b"1" and sampled[b"entities"] == b'[{"driver_id":"2"}]'
    np.testing.assert_array_equal(np.frombuffer(sampled[b"features"], np.float32), STORED[2])
    assert b"output:output" in sampled
    parsed = parse_entry(sampled)
    assert parsed is not None and parsed[:3] == ("scorer", "static", False)  # not failed
