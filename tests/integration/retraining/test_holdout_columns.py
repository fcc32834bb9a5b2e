"""A challenger is evaluated on the champion's logged rows with each column given to it by feature ref
name: the logged entries carry values without names, in the order of the logging version's
``feature_refs``, and a challenger listing its refs in another order (or needing one the log does not
carry) used to be run on them by position. Real registry, feature views, ONNX models, prediction-log
stream (written by the data plane's writer) and labels."""

from __future__ import annotations

import time

import numpy as np
import numpy.typing as npt

from clients.aether.v1 import feature_registry_pb2 as fpb
from clients.aether.v1 import model_registry_pb2 as mpb
from clients.aether.v1 import monitoring_pb2 as monpb
from clients.aether.v1 import types_pb2
from control_plane.monitoring.feedback import IndexedPrediction, index_predictions, record_feedback
from control_plane.retraining import evaluation_records, records
from data_plane.prediction_log import PredictionRecord
from tests.integration.retraining.conftest import STREAM, TRUE_W, World
from tests.integration.retraining.test_champion_moved import deploy
from tests.integration.retraining.test_closed_loop import submitted_decision, succeeded_retraining_job
from tests.support.prediction_log import append_records
from tests.unit.retraining.models import linear

CHAMPION_REFS = ["trip@1:a", "trip@1:b", "trip@1:c", "trip@1:d"]
ROWS = 120


def trip_view(world: World) -> None:
    world.features.create_entity(
        fpb.Entity(name="rider", join_keys=[fpb.JoinKey(name="rider_id", value_type=types_pb2.INT64)])
    )
    world.features.create_feature_view(
        fpb.FeatureViewSpec(
            name="trip",
            entity="rider",
            features=[fpb.Feature(name=n, value_type=types_pb2.FLOAT32) for n in "abcde"],
        ),
        fpb.FeatureViewMetadata(),
    )


def register(world: World, onnx: bytes, refs: list[str], run_id: str = "") -> int:
    artifact = world.registry.artifacts.put_bytes(onnx)
    request = mpb.CreateModelVersionRequest(
        model_name="eta", artifact_sha256=artifact.sha256, feature_refs=refs, run_id=run_id
    )
    return int(world.registry.create_version(request, actor="trainer").version)


async def serve_champion_with_refs(world: World, redis_url: str) -> npt.NDArray[np.float64]:
    """Makes a version listing :data:`CHAMPION_REFS` the champion (served by "eta") and replaces the
    stream with labelled traffic it logged (columns in its refs' order); returns the logged features."""
    trip_view(world)
    champion = register(world, linear(TRUE_W), CHAMPION_REFS)
    world.registry.review("eta", champion, mpb.APPROVED, "refs", actor="reviewer")
    world.registry.set_alias("eta", "champion", champion, actor="reviewer")
    deploy(world, champion)  # the challenger is judged against the version the deployment serves
    world.champion = champion
    await world.client.delete(STREAM)  # the fixture's traffic was logged by a version without refs
    rng = np.random.default_rng(11)
    x = rng.standard_normal((ROWS, 4))
    now = time.time_ns() // 1000
    logged = [
        PredictionRecord(
            request_id=f"refs{i}",
            deployment="eta",
            model="eta",
            version=champion,
            variant="eta-v2",
            role="served",
            routing_key="",
            ts_us=now - 600_000_000 + i * 1000,
            entities=[{"rider_id": "1"}],
            features=x[i : i + 1].astype(np.float32),
            outputs={"y": np.array([[0.0]], dtype=np.float32)},
        )
        for i in range(ROWS)
    ]
    await append_records(redis_url, STREAM, logged)
    index_predictions(
        world.sessions,
        [
            IndexedPrediction(r.request_id, 0, "eta", "eta", champion, "eta-v2", r.ts_us, [0.0], False)
            for r in logged
        ],
    )
    labels = x @ TRUE_W + rng.normal(0, 0.1, ROWS)
    record_feedback(
        world.sessions, [monpb.Feedback(request_id=f"refs{i}", row=0, label=labels[i]) for i in range(ROWS)]
    )
    return x


async def test_a_challenger_with_reordered_refs_gets_each_logged_column_by_name(
    world: World, redis_url: str
) -> None:
    await serve_champion_with_refs(world, redis_url)
    # The champion's model with its inputs listed backwards: the same answers on the same features.
    reordered = register(world, linear(TRUE_W[::-1].copy()), CHAMPION_REFS[::-1])
    evaluation = await world.retrainer.evaluate_challenger(submitted_decision(world), reordered)
    assert evaluation.holdout_rows == ROWS
    assert evaluation.passed, evaluation.reasons
    assert abs(evaluation.challenger_metrics["mae"] - evaluation.champion_metrics["mae"]) < 1e-4


async def test_a_challenger_needing_a_feature_the_log_lacks_is_not_evaluated(
    world: World, redis_url: str
) -> None:
    await serve_champion_with_refs(world, redis_url)
    job, run = succeeded_retraining_job(world)
    # Four inputs, as many as the logged rows have, so by position ONNX Runtime ran it on them.
    wider = register(world, linear(TRUE_W), ["trip@1:e", "trip@1:c", "trip@1:b", "trip@1:a"], run.run_id)
    decision = submitted_decision(world, job.job_id)
    await world.retrainer.tick()
    ended = next(d for d in records.list_decisions(world.sessions, "eta") if d.id == decision.id)
    assert ended.outcome == "evaluation_failed", ended.reasons
    assert "trip@1:e" in ended.reasons[-1] and "do not carry" in ended.reasons[-1]
    assert evaluation_records.list_evaluations(world.sessions, "eta") == []
    assert world.registry.get_version("eta", wider).approval.status != mpb.APPROVED
    assert world.registry.get_version("eta", alias="champion").version == world.champion
