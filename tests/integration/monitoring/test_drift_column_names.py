"""Drift columns are paired by name: the reference profile's feature names against the columns the data
plane logs, which are the model version's ``feature_refs`` in model-input order. A real control plane
and monitor, a real Redis stream written by the data plane's prediction-log writer, a real model version
with feature references into a real feature view, and a real profile registered from a training table
whose columns come in another order than the model's input."""

from __future__ import annotations

import asyncio

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from clients.aether.v1 import feature_registry_pb2 as fpb
from clients.aether.v1 import model_registry_pb2 as mpb
from clients.aether.v1 import monitoring_pb2 as pb
from clients.aether.v1 import types_pb2
from control_plane.features.registry import FeatureRegistry
from control_plane.monitoring.profiles import register_reference_profile
from tests.integration.monitoring.conftest import Plane, eventually, record
from tests.integration.monitoring.test_feedback_loop import cli

T0 = 1_800_000_000_000_000
#: The model's input, in order: what the data plane assembles and logs.
REFS = ["usage@1:calls", "usage@1:minutes", "usage@1:spend"]
#: Each feature's distribution, far apart so that a column compared with another's reads as drift.
MEANS = {"calls": 0.0, "minutes": 50.0, "spend": 500.0}
SCALES = {"calls": 1.0, "minutes": 5.0, "spend": 50.0}
ROWS = 600


def register_model_reading(plane: Plane, refs: list[str], features: tuple[str, ...]) -> int:
    """A feature view ``usage`` v1 with ``features``, and a version of ``churn-model`` reading ``refs``."""
    registry = FeatureRegistry(plane.server.context.sessions)
    registry.create_entity(
        fpb.Entity(name="customer", join_keys=[fpb.JoinKey(name="customer_id", value_type=types_pb2.INT64)])
    )
    registry.create_feature_view(
        fpb.FeatureViewSpec(
            name="usage",
            entity="customer",
            ttl_seconds=3600,
            source=fpb.Source(kind="batch", uri="s3://lake/usage.parquet", timestamp_field="ts"),
            features=[fpb.Feature(name=name, value_type=types_pb2.FLOAT64) for name in features],
        ),
        fpb.FeatureViewMetadata(owner="growth"),
    )
    artifact = plane.registry.artifacts.put_bytes(b"onnx bytes of churn-model")
    request = mpb.CreateModelVersionRequest(
        model_name="churn-model", artifact_sha256=artifact.sha256, create_model=True, feature_refs=refs
    )
    return int(plane.registry.create_version(request, actor="trainer").version)


def sample(rng: np.random.Generator, feature: str, rows: int) -> npt.NDArray[np.float64]:
    return rng.normal(MEANS[feature], SCALES[feature], size=rows)


async def log_traffic(plane: Plane, rng: np.random.Generator, version: int, columns: list[str]) -> None:
    """``ROWS`` rows drawn like the training data, logged in ``columns`` order (the model's input)."""
    features = np.stack([sample(rng, name, ROWS) for name in columns], axis=1)
    scores = np.full((2, 1), 0.5, dtype=np.float32)
    await plane.log(
        [
            record(f"req-{i}", features[i : i + 2], {"score": scores}, T0 + i, version=version)
            for i in range(0, ROWS, 2)
        ]
    )


async def first_report(plane: Plane) -> pb.DriftReport:
    async def reported() -> bool:
        answer = await plane.stub.GetDriftReports(pb.GetDriftReportsRequest(deployment="churn"))
        return len(answer.reports) >= 1

    await eventually(reported)
    answer = await plane.stub.GetDriftReports(pb.GetDriftReportsRequest(deployment="churn"))
    return answer.reports[-1]


async def configure(plane: Plane) -> None:
    await plane.stub.ConfigureMonitor(
        pb.ConfigureMonitorRequest(config=pb.MonitorConfig(deployment="churn", window_rows=ROWS))
    )


async def test_a_profile_whose_columns_come_in_another_order_is_compared_column_by_name(plane: Plane) -> None:
    version = register_model_reading(plane, REFS, ("calls", "minutes", "spend"))
    plane.deploy("churn", version)
    rng = np.random.default_rng(7)
    # The training table's columns come in another order than the model's input.
    training_order = ["usage@1:spend", "usage@1:calls", "usage@1:minutes"]
    training = pa.table({ref: sample(rng, ref.rsplit(":", 1)[1], 5000) for ref in training_order})
    register_reference_profile(
        plane.server.context.sessions, plane.registry.artifacts, "churn-model", version, training, actor="t"
    )
    await configure(plane)

    await log_traffic(plane, rng, version, [ref.rsplit(":", 1)[1] for ref in REFS])

    report = await first_report(plane)
    assert report.n_rows == ROWS
    # Before, column j of the window was compared with column j of the profile: spend's training values
    # with the calls served, and so on, so unchanged traffic read as drift on every feature.
    assert report.status == pb.DRIFT_STATUS_NO_DRIFT, [(f.name, f.psi) for f in report.features]
    assert [f.name for f in report.features] == training_order
    assert [f.logged_column for f in report.features] == training_order
    assert not any(f.drifted or f.not_compared or f.paired_by_position for f in report.features)
    assert all(f.psi < 0.1 for f in report.features)


async def test_columns_on_one_side_only_are_reported_not_compared(plane: Plane) -> None:
    version = register_model_reading(plane, REFS, ("calls", "minutes", "spend", "tenure"))
    plane.deploy("churn", version)
    rng = np.random.default_rng(8)
    # A profile of calls and minutes (in another order) and of a column the model does not read, but
    # none of spend, which it does: three columns on each side, one of them unpaired.
    training = pa.table(
        {
            "usage@1:minutes": sample(rng, "minutes", 5000),
            "usage@1:tenure": rng.normal(3.0, 1.0, size=5000),
            "usage@1:calls": sample(rng, "calls", 5000),
        }
    )
    register_reference_profile(
        plane.server.context.sessions, plane.registry.artifacts, "churn-model", version, training, actor="t"
    )
    await configure(plane)

    await log_traffic(plane, rng, version, ["calls", "minutes", "spend"])

    report = await first_report(plane)
    by_name = {f.name: f for f in report.features}
    assert report.status == pb.DRIFT_STATUS_NO_DRIFT and report.n_rows == ROWS
    assert list(by_name) == ["usage@1:minutes", "usage@1:tenure", "usage@1:calls", "usage@1:spend"]
    assert not by_name["usage@1:minutes"].not_compared and not by_name["usage@1:calls"].not_compared
    assert "no logged column" in by_name["usage@1:tenure"].not_compared
    assert "reference profile has no feature" in by_name["usage@1:spend"].not_compared
    assert not by_name["usage@1:tenure"].drifted and not by_name["usage@1:spend"].drifted
    # Scored only where paired: 2 features, neither drifted.
    assert report.drifted_share == 0.0
    # aetherctl shows which were not compared, and why.
    code, text = await asyncio.to_thread(cli, plane, "drift", "report", "churn", "--features")
    assert code == 0
    lines = {line.split()[0]: line for line in text.splitlines() if line.startswith("usage@1:")}
    assert "not compared: the reference profile has no feature" in lines["usage@1:spend"]
    assert "not compared: no logged column" in lines["usage@1:tenure"]
    assert "not compared" not in lines["usage@1:calls"]


async def test_a_profile_wider_than_the_logged_rows_reports_its_extra_column(plane: Plane) -> None:
    version = register_model_reading(plane, REFS, ("calls", "minutes", "spend", "tenure"))
    plane.deploy("churn", version)
    rng = np.random.default_rng(9)
    training = pa.table(
        {
            "usage@1:tenure": rng.normal(3.0, 1.0, size=5000),
            **{ref: sample(rng, ref.rsplit(":", 1)[1], 5000) for ref in reversed(REFS)},
        }
    )
    register_reference_profile(
        plane.server.context.sessions, plane.registry.artifacts, "churn-model", version, training, actor="t"
    )
    await configure(plane)

    await log_traffic(plane, rng, version, ["calls", "minutes", "spend"])

    # Before, the windows took the profile's 4 features as the count every logged row must have, and
    # dropped every 3-feature row as mismatched: no report ever came, only a counter.
    report = await first_report(plane)
    assert report.n_rows == ROWS and report.mismatched_rows == 0
    assert report.status == pb.DRIFT_STATUS_NO_DRIFT
    not_compared = [f.name for f in report.features if f.not_compared]
    assert not_compared == ["usage@1:tenure"]


async def test_names_that_pair_with_no_logged_column_are_a_schema_mismatch(plane: Plane) -> None:
    version = register_model_reading(plane, REFS, ("calls", "minutes", "spend"))
    plane.deploy("churn", version)
    rng = np.random.default_rng(10)
    # Names of another vocabulary than the feature references: nothing to pair them by.
    training = pa.table({name: rng.normal(size=5000) for name in ("amount", "duration", "cost")})
    register_reference_profile(
        plane.server.context.sessions, plane.registry.artifacts, "churn-model", version, training, actor="t"
    )
    await configure(plane)

    await log_traffic(plane, rng, version, ["calls", "minutes", "spend"])

    report = await first_report(plane)
    assert report.status == pb.DRIFT_STATUS_SCHEMA_MISMATCH
    assert [f.name for f in report.features] == ["amount", "duration", "cost", *REFS]
    assert all(f.not_compared for f in report.features)
