"""Lineage and FindUsages name a retraining promotion in progress that is moving a version toward its
deployment (awaiting approval, pending, shadow, canary), read from the retraining tables by the same guard
that refuses the version's delete. They listed deployments only, so a version about to be deployed by a
promotion looked unused until its canary started (and again while it waited for a reviewer)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import model_registry_pb2 as pb
from clients.sdk.models import ModelRegistryClient
from control_plane.db import create_db_engine, create_session_factory
from control_plane.retraining import evaluation_records, records
from control_plane.retraining.evaluation import EvaluationResult, ModelScore
from control_plane.retraining.promotion import AWAITING_APPROVAL, CANARY, ROLLED_BACK
from tests.integration.model_registry.conftest import Plane
from tests.integration.model_registry.test_lineage import run_cli


@pytest.fixture
def sessions(plane: Plane) -> Iterator[sessionmaker[Session]]:
    engine = create_db_engine(plane.db_url)
    yield create_session_factory(engine)
    engine.dispose()


def promoting(sessions: sessionmaker[Session], challenger: int, status: str) -> int:
    """A retraining evaluation of eta's challenger ``challenger`` that passed, its promotion at ``status``,
    recorded as the retraining loop records them; returns the evaluation's id."""
    draft = records.Draft("eta-prod", records.now_us(), True, ("manual",), "tester", "eta", 1)
    records.add_decision(sessions, draft, ["asked by a test"], records.SUBMITTED)
    decision = records.submitted(sessions, "eta-prod")[-1]
    score = ModelScore({"mae": 0.1}, 1.0)
    result = EvaluationResult(True, ("mae ok",), score, score, 200, "production_feedback")
    evaluation = evaluation_records.add_evaluation(
        sessions, "eta-prod", decision, challenger, "mae", result, actor="retraining"
    )
    evaluation_records.set_promotion(sessions, evaluation.id, status, "a test", actor="retraining")
    return int(evaluation.id)


def test_lineage_and_usages_name_a_promotion_in_progress(
    plane: Plane,
    models: ModelRegistryClient,
    rider_stats: str,
    sessions: sessionmaker[Session],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    artifact = tmp_path / "model.onnx"
    artifact.write_bytes(b"weights")
    for _ in range(2):
        models.register_version("eta", artifact, feature_refs=["rider_stats@1:trips"])
    plane.deployments.serving[("eta", 1)] = ["eta-prod"]
    evaluation = promoting(sessions, 2, AWAITING_APPROVAL)
    waiting = (f"evaluation {evaluation}", "challenger of deployment 'eta-prod', promotion awaiting_approval")

    lineage = models.lineage("eta", 2)
    assert list(lineage.deployments) == []  # not deployed yet: the promotion is what is about to
    assert [(p.name, p.detail) for p in lineage.promotions] == [waiting]
    assert list(models.lineage("eta", 1).promotions) == []
    by_version = {u.version: u for u in models.usages("rider_stats", 1)}
    assert [(p.name, p.detail) for p in by_version[2].promotions] == [waiting]
    assert list(by_version[1].promotions) == [] and [d.name for d in by_version[1].deployments] == [
        "eta-prod"
    ]

    assert run_cli(plane, "lineage", "eta", "2") == 0
    tree = capsys.readouterr().out.splitlines()
    assert tree[0] == f"deployments: none; retraining promotions: {waiting[0]} ({waiting[1]})"
    assert run_cli(plane, "lineage", "--feature-view", "rider_stats") == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["MODEL", "VERSION", "APPROVAL", "FEATURES", "DEPLOYMENTS", "PROMOTIONS"]
    assert table[1].split() == ["eta", "1", "PendingManualApproval", "rider_stats@1:trips", "eta-prod", "-"]
    assert table[2].split() == [
        "eta", "2", "PendingManualApproval", "rider_stats@1:trips", "-", "evaluation", str(evaluation)
    ]  # fmt: skip

    evaluation_records.set_promotion(sessions, evaluation, CANARY, "canary started", actor="retraining")
    [promotion] = models.lineage("eta", 2).promotions
    assert promotion.detail == "challenger of deployment 'eta-prod', promotion canary"
    evaluation_records.set_promotion(sessions, evaluation, ROLLED_BACK, "canary failed", actor="retraining")
    assert list(models.lineage("eta", 2).promotions) == []  # ended: no longer about to deploy it
    assert all(not u.promotions for u in models.usages("rider_stats"))
    assert models.get_version("eta", 2).approval.status == pb.PENDING_MANUAL_APPROVAL
