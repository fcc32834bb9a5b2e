"""Approval of model versions through the registry core on a real database, against a reference
state machine: any sequence of approve/reject calls ends where the reference says, refuses exactly the
reviews of a decided version that are not an exact repeat of its decision (a reversal, or the same
decision by another reviewer or with another reason), and keeps who decided and why from the first."""

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
from control_plane.model_registry.approval import Approval, Decided, decide
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


Review = tuple[str, str, str]  # (decision, reviewer, reason)


def reference(held: Review | None, review: Review) -> bool:
    """Whether ``review`` is accepted by a version holding ``held`` (None: pending)."""
    return held is None or held == review


actions = st.lists(
    st.tuples(
        st.sampled_from(["approved", "rejected"]),
        st.sampled_from(["ann", "bob"]),
        st.sampled_from(["ok", "meh"]),
    ),
    max_size=6,
)


@settings(max_examples=40, deadline=None)
@given(steps=actions)
def test_review_sequences_follow_the_reference(
    registry: tuple[ModelRegistry, str], steps: list[Review]
) -> None:
    core, sha256 = registry
    name = next(_names)
    core.create_version(
        pb.CreateModelVersionRequest(model_name=name, artifact_sha256=sha256, create_model=True), actor="ci"
    )
    held: Review | None = None
    for decision, actor, reason in steps:
        wire = pb.APPROVED if decision == "approved" else pb.REJECTED
        if not reference(held, (decision, actor, reason)):
            with pytest.raises(FailedPrecondition, match="nothing was changed"):
                core.review(name, 1, wire, reason, actor=actor)
            continue
        result = core.review(name, 1, wire, reason, actor=actor)
        held = (decision, actor, reason)
        assert result.approval.status == wire
    expected = "pending" if held is None else held[0]
    first_decider = "" if held is None else f"{held[1]}/{held[2]}"
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
        decide(Decided(Approval.PENDING), Approval.PENDING, "ann", "", "v")
    assert decide(Decided(Approval.PENDING), Approval.APPROVED, "ann", "ok", "v") is True
    held = Decided(Approval.APPROVED, "ann", "ok", 1_796_000_000_000_000)
    assert decide(held, Approval.APPROVED, "ann", "ok", "v") is False
    with pytest.raises(FailedPrecondition, match=r"already Approved by 'ann' at .* with reason 'ok'"):
        decide(held, Approval.APPROVED, "bob", "ok", "v")


def test_unknown_decision_is_invalid(registry: tuple[ModelRegistry, str], tmp_path: Path) -> None:
    core, sha256 = registry
    name = next(_names)
    core.create_version(
        pb.CreateModelVersionRequest(model_name=name, artifact_sha256=sha256, create_model=True), actor="ci"
    )
    with pytest.raises(InvalidArgument):
        core.review(name, 1, pb.PENDING_MANUAL_APPROVAL, "", actor="ann")
