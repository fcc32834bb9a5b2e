"""Approval of model versions through the registry core on a real database, against a reference
state machine: any sequence of approve/reject calls ends where the reference says, refuses exactly the
reversals, and keeps who decided and why from the first decision."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clients.aether.v1 import model_registry_pb2 as pb
from clients.errors import FailedPrecondition, InvalidArgument
from control_plane.artifacts.store import ArtifactStore
from control_plane.db import create_db_engine, create_session_factory, upgrade_to_head
from control_plane.model_registry.approval import Approval, decide
from control_plane.model_registry.registry import ModelRegistry

_names = (f"model-{index}" for index in itertools.count())


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ModelRegistry, str]]:
    folder = tmp_path_factory.mktemp("approval")
    engine = create_db_engine(f"sqlite:///{folder / 'aether.db'}")
    upgrade_to_head(engine)
    store = ArtifactStore(str(folder / "artifacts"))
    sha256 = store.put_bytes(b"weights").sha256
    yield ModelRegistry(create_session_factory(engine), store), sha256
    engine.dispose()


def reference(status: str, decision: str) -> str | None:
    """The status after ``decision``, None when it is refused."""
    if status == "pending" or status == decision:
        return decision
    return None


actions = st.lists(
    st.tuples(st.sampled_from(["approved", "rejected"]), st.sampled_from(["ann", "bob"])), max_size=6
)


@settings(max_examples=40, deadline=None)
@given(steps=actions)
def test_review_sequences_follow_the_reference(
    registry: tuple[ModelRegistry, str], steps: list[tuple[str, str]]
) -> None:
    core, sha256 = registry
    name = next(_names)
    core.create_version(
        pb.CreateModelVersionRequest(model_name=name, artifact_sha256=sha256, create_model=True), actor="ci"
    )
    expected, first_decider = "pending", ""
    for index, (decision, actor) in enumerate(steps):
        wire = pb.APPROVED if decision == "approved" else pb.REJECTED
        after = reference(expected, decision)
        if after is None:
            with pytest.raises(FailedPrecondition):
                core.review(name, 1, wire, f"reason {index}", actor=actor)
            continue
        result = core.review(name, 1, wire, f"reason {index}", actor=actor)
        if expected == "pending":
            first_decider = f"{actor}/reason {index}"
        expected = after
        assert result.approval.status == wire
    version = core.get_version(name, 1)
    assert (
        version.approval.status
        == {
            "pending": pb.PENDING_MANUAL_APPROVAL,
            "approved": pb.APPROVED,
            "rejected": pb.REJECTED,
        }[expected]
    )
    assert (f"{version.approval.actor}/{version.approval.reason}" if first_decider else "") == first_decider
    deployable = expected == "approved"
    if deployable:
        assert core.can_deploy(name, 1).version == 1
    else:
        with pytest.raises(FailedPrecondition, match="only an Approved version can be deployed"):
            core.can_deploy(name, 1)


def test_pending_is_not_a_decision() -> None:
    with pytest.raises(InvalidArgument):
        decide(Approval.PENDING, Approval.PENDING, "v")
    assert decide(Approval.PENDING, Approval.APPROVED, "v") is True
    assert decide(Approval.APPROVED, Approval.APPROVED, "v") is False


def test_unknown_decision_is_invalid(registry: tuple[ModelRegistry, str], tmp_path: Path) -> None:
    core, sha256 = registry
    name = next(_names)
    core.create_version(
        pb.CreateModelVersionRequest(model_name=name, artifact_sha256=sha256, create_model=True), actor="ci"
    )
    with pytest.raises(InvalidArgument):
        core.review(name, 1, pb.PENDING_MANUAL_APPROVAL, "", actor="ann")
