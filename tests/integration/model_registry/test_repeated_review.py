"""A review repeated on a version already decided: the exact repeat (same decision, reviewer and reason, as
a retried call sends) is an idempotent OK; one by another reviewer or with another reason used to answer
OK too while the version silently kept the first reviewer and reason, so the second reviewer believed
their decision was recorded. It is FAILED_PRECONDITION now, naming who decided, when and why, and saying
nothing was changed; the version and its audit trail keep the first decision only."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from clients.aether.v1 import model_registry_pb2 as pb
from clients.errors import FailedPrecondition
from clients.sdk.models import ModelRegistryClient
from tests.integration.model_registry.conftest import Plane
from tests.integration.model_registry.test_approval_verifies_artifact import decisions


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"onnx weights " * 100)
    return path


@pytest.fixture
def bob(plane: Plane) -> Iterator[ModelRegistryClient]:
    with ModelRegistryClient(plane.address, actor="bob", timeout=20) as client:
        yield client


def decided_at(version: pb.ModelVersion) -> str:
    return datetime.fromtimestamp(version.approval.decided_at_us / 1e6, UTC).isoformat(timespec="seconds")


@pytest.mark.parametrize("decision", [pb.APPROVED, pb.REJECTED])
def test_a_repeated_review_is_ok_only_when_it_is_the_same_decision(
    plane: Plane,
    models: ModelRegistryClient,
    bob: ModelRegistryClient,
    artifact: Path,
    decision: pb.ApprovalStatus,
) -> None:
    review = models.approve if decision == pb.APPROVED else models.reject
    review_as_bob = bob.approve if decision == pb.APPROVED else bob.reject
    word = "Approved" if decision == pb.APPROVED else "Rejected"
    version = models.register_version("eta", artifact).version
    first = review("eta", version, "holdout rmse 3.1")
    when = decided_at(first)

    again = review("eta", version, "holdout rmse 3.1")  # a retried call: OK, nothing changes
    assert again.approval == first.approval

    for attempt, reason in [(review_as_bob, "holdout rmse 3.1"), (review, "second look"), (review, "")]:
        with pytest.raises(FailedPrecondition) as refused:
            attempt("eta", version, reason)
        message = str(refused.value)
        assert f"model 'eta' version {version} is already {word}" in message
        assert f"by 'alice' at {when}" in message and "reason 'holdout rmse 3.1'" in message
        assert "nothing was changed" in message

    kept = models.get_version("eta", version).approval
    assert (kept.status, kept.actor, kept.reason, kept.decided_at_us) == (
        decision,
        "alice",
        "holdout rmse 3.1",
        first.approval.decided_at_us,
    )
    action = "approve" if decision == pb.APPROVED else "reject"
    entries = decisions(plane, f"eta/{version}")
    assert entries[0] == (action, "") and len(entries) == 4  # the decision, then the three refusals
    assert all(outcome.startswith("refused: FAILED_PRECONDITION: ") for _, outcome in entries[1:])


def test_a_reversal_names_the_decision_it_would_reverse(
    models: ModelRegistryClient, bob: ModelRegistryClient, artifact: Path
) -> None:
    version = models.register_version("eta", artifact).version
    first = models.approve("eta", version, "beats the champion")
    with pytest.raises(FailedPrecondition) as refused:
        bob.reject("eta", version, "leaks the label")
    message = str(refused.value)
    assert f"is already Approved by 'alice' at {decided_at(first)}" in message
    assert "reason 'beats the champion'" in message and "nothing was changed" in message


def test_a_long_first_reason_is_shortened_in_the_refusal(
    models: ModelRegistryClient, bob: ModelRegistryClient, artifact: Path
) -> None:
    """The refusal travels in gRPC's trailing metadata (8 KiB by default): a reason of 6,000 characters,
    quoted whole, could push it past that and turn the refusal into another error."""
    version = models.register_version("eta", artifact).version
    models.reject("eta", version, "é" * 6000)
    with pytest.raises(FailedPrecondition) as refused:
        bob.reject("eta", version, "another reason")
    message = str(refused.value)
    assert "reason 'ééé" in message and "(6000 characters)" in message and len(message) < 1000
