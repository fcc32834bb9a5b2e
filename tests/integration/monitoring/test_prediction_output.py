"""``MonitorConfig.prediction_output`` naming an output the model does not have.

It was accepted, and the monitor then indexed no prediction of the deployment, without a word: every
label was counted "orphaned (labels whose prediction was not logged)", which was false, and the quality
windows stopped moving. Now ConfigureMonitor refuses a name the deployed model versions do not have
(where their signatures list their outputs), and a logged prediction without the output (the deployment
serves another model since) is indexed without a value: its labels join, the windows count it invalid,
GetPerformance names the model version and the output, a counter counts its rows and a warning says so
once per model version."""

from __future__ import annotations

import asyncio
import logging
import time

import grpc
import grpc.aio
import numpy as np
import pytest

from clients.aether.v1 import deployments_pb2 as dpb
from clients.aether.v1 import model_registry_pb2 as mpb
from clients.aether.v1 import monitoring_pb2 as pb
from control_plane.deployments.core import DeploymentManager
from tests.integration.monitoring.conftest import Plane, eventually, record
from tests.integration.monitoring.test_feedback_loop import cli

SECOND = 1_000_000


def register_with_outputs(plane: Plane, model: str, outputs: list[str]) -> int:
    artifact = plane.registry.artifacts.put_bytes(f"onnx bytes of {model} {outputs}".encode())
    signature = mpb.ModelSignature(
        inputs=[mpb.TensorSpec(name="x", dtype="float32", shape=[-1, 3])],
        outputs=[mpb.TensorSpec(name=name, dtype="float32", shape=[-1, 2]) for name in outputs],
    )
    request = mpb.CreateModelVersionRequest(
        model_name=model, artifact_sha256=artifact.sha256, signature=signature, create_model=True
    )
    return int(plane.registry.create_version(request, actor="trainer").version)


async def test_configure_refuses_an_output_the_deployed_model_does_not_have(plane: Plane) -> None:
    version = register_with_outputs(plane, "churn-model", ["label", "probabilities"])
    plane.deploy("churn", version)
    typo = pb.ConfigureMonitorRequest(
        config=pb.MonitorConfig(deployment="churn", prediction_output="probabilitise")
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await plane.stub.ConfigureMonitor(typo)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = str(refused.value.details())
    assert "'probabilitise'" in details and f"churn-model v{version}" in details
    assert "label, probabilities" in details, details
    stored = await plane.stub.GetMonitorConfig(pb.GetMonitorConfigRequest(deployment="churn"))
    assert stored.revision == 0 and not stored.prediction_output  # nothing stored

    # An output the model has is taken, conditional writes included.
    right = pb.ConfigureMonitorRequest(
        config=pb.MonitorConfig(deployment="churn", prediction_output="probabilities"), expected_revision=0
    )
    answer = await plane.stub.ConfigureMonitor(right)
    assert (answer.prediction_output, answer.revision) == ("probabilities", 1)
    stale = pb.ConfigureMonitorRequest(
        config=pb.MonitorConfig(deployment="churn", prediction_output="label"), expected_revision=0
    )
    with pytest.raises(grpc.aio.AioRpcError) as aborted:
        await plane.stub.ConfigureMonitor(stale)
    assert aborted.value.code() == grpc.StatusCode.ABORTED


async def test_predictions_without_the_configured_output_are_counted_and_their_labels_join(
    plane: Plane, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="aether.control_plane.monitoring")
    version = register_with_outputs(plane, "churn-model", ["probabilities"])
    plane.deploy("churn", version)
    await plane.stub.ConfigureMonitor(
        pb.ConfigureMonitorRequest(
            config=pb.MonitorConfig(
                deployment="churn",
                prediction_output="probabilities",
                task=pb.TASK_TYPE_CLASSIFICATION,
                performance_window_seconds=3600,
                min_labels=5,
            )
        )
    )
    # Served since by version 7 of another model, whose answers have no "probabilities".
    now = time.time_ns() // 1000
    ids = [f"r-{i}" for i in range(12)]
    records = [
        record(rid, np.zeros((1, 3)), {"score": np.array([[0.2, 0.8]], dtype=np.float32)}, now - i * SECOND,
               model="other-model", version=7)
        for i, rid in enumerate(ids)
    ]  # fmt: skip
    await plane.log(records)
    request = pb.GetPerformanceRequest(deployment="churn", since_us=now - 3600 * SECOND, until_us=now + 1)

    async def indexed() -> bool:
        answer: pb.GetPerformanceResponse = await plane.stub.GetPerformance(request)
        return sum(w.n_predictions for w in answer.windows) == len(ids)

    await eventually(indexed)
    answer = await plane.stub.RecordFeedback(
        pb.RecordFeedbackRequest(feedback=[pb.Feedback(request_id=rid, label=1) for rid in ids])
    )
    assert (answer.joined, answer.orphaned, answer.orphaned_total) == (len(ids), 0, 0)  # not "not logged"

    performance = await plane.stub.GetPerformance(request)
    assert performance.orphaned_feedback == 0
    assert sum(w.n_labels for w in performance.windows) == len(ids)
    assert sum(w.n_invalid_predictions for w in performance.windows) == len(ids)  # none scored
    (unscored,) = performance.unscored
    assert (unscored.model_name, unscored.version, unscored.output, unscored.n_labels) == (
        "other-model",
        7,
        "probabilities",
        len(ids),
    )
    counted = plane.gauges.get_sample_value(
        "aether_monitor_predictions_unscored_total",
        {"deployment": "churn", "model": "other-model", "version": "7", "output": "probabilities"},
    )
    assert counted == len(ids)
    code, text = await asyncio.to_thread(cli, plane, "performance", "churn")
    assert code == 0 and f"not scored: {len(ids)} labelled predictions of other-model v7" in text, text
    warnings = [r.getMessage() for r in caplog.records if "'probabilities'" in r.getMessage()]
    assert len(warnings) == 1, warnings  # once per model version, not once per entry
    assert "other-model v7" in warnings[0] and "score" in warnings[0]


async def test_a_shadow_without_the_output_does_not_block_naming_the_served_models_output(
    plane: Plane,
) -> None:
    # The check read every variant of the plan, shadows too: a shadow whose answers have other names
    # (they are logged, never returned nor monitored) refused the primary's own output.
    primary = register_with_outputs(plane, "churn-model", ["probabilities"])
    shadow = register_with_outputs(plane, "challenger", ["score"])
    for model, version in (("churn-model", primary), ("challenger", shadow)):
        plane.registry.review(model, version, mpb.APPROVED, "to serve", actor="reviewer")
    variants = [
        dpb.Variant(model_name="churn-model", version=primary, role=dpb.VARIANT_ROLE_PRIMARY),
        dpb.Variant(
            model_name="challenger", version=shadow, role=dpb.VARIANT_ROLE_SHADOW, traffic_percent=50
        ),
    ]
    manager = DeploymentManager(plane.server.context.sessions, plane.registry)
    manager.create(dpb.CreateDeploymentRequest(name="churn", variants=variants), actor="operator")
    named = pb.ConfigureMonitorRequest(
        config=pb.MonitorConfig(deployment="churn", prediction_output="probabilities")
    )
    answer = await plane.stub.ConfigureMonitor(named)
    assert answer.prediction_output == "probabilities"

    # The shadow's output is no name of a served answer: refused, naming the variants checked.
    other = pb.ConfigureMonitorRequest(config=pb.MonitorConfig(deployment="churn", prediction_output="score"))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await plane.stub.ConfigureMonitor(other)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = str(refused.value.details())
    assert f"churn-model v{primary} (primary; outputs: probabilities)" in details, details
    assert "challenger" not in details and "shadow" in details, details


async def test_a_canary_parked_at_no_traffic_does_not_block_naming_the_served_models_output(
    plane: Plane,
) -> None:
    # A canary at 0 % (parked so that another canary may be promoted) answers no request, but the check
    # read it as served: its other output names refused the primary's own. A primary at 0 % (its canary
    # at 100 %) still answers the calls naming its model, and is checked.
    primary = register_with_outputs(plane, "churn-model", ["probabilities"])
    canary = register_with_outputs(plane, "challenger", ["score"])
    for model, version in (("churn-model", primary), ("challenger", canary)):
        plane.registry.review(model, version, mpb.APPROVED, "to serve", actor="reviewer")
    variants = [
        dpb.Variant(
            name="main", model_name="churn-model", version=primary, role=dpb.VARIANT_ROLE_PRIMARY,
            traffic_percent=100,
        ),
        dpb.Variant(
            name="parked", model_name="challenger", version=canary, role=dpb.VARIANT_ROLE_CANARY,
            traffic_percent=0,
        ),
    ]  # fmt: skip
    manager = DeploymentManager(plane.server.context.sessions, plane.registry)
    manager.create(dpb.CreateDeploymentRequest(name="churn", variants=variants), actor="operator")
    named = pb.ConfigureMonitorRequest(
        config=pb.MonitorConfig(deployment="churn", prediction_output="probabilities")
    )
    answer = await plane.stub.ConfigureMonitor(named)
    assert answer.prediction_output == "probabilities"

    manager.set_traffic("churn", "parked", 100.0, actor="operator")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await plane.stub.ConfigureMonitor(named)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = str(refused.value.details())
    assert f"challenger v{canary} (canary; outputs: score)" in details, details
    assert "churn-model" not in details, details  # the primary, at 0 % now, has the output
    other = pb.ConfigureMonitorRequest(config=pb.MonitorConfig(deployment="churn", prediction_output="score"))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await plane.stub.ConfigureMonitor(other)
    assert f"churn-model v{primary} (primary; outputs: probabilities)" in str(refused.value.details())
