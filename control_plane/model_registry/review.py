"""Reviewing a model version: approving or rejecting it (the rules are :mod:`approval`'s), with the
artifact read whole and checked against its sha256 before an approval, and the check that a version may
be deployed."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import model_registry_pb2 as pb
from clients.errors import DataLoss, FailedPrecondition, NotFound
from control_plane.artifacts.store import ArtifactStore
from control_plane.audit.log import record
from control_plane.db import pages
from control_plane.db.engine import read_session
from control_plane.model_registry import messages
from control_plane.model_registry.approval import Approval, Decided, decide, from_proto
from control_plane.model_registry.queries import now_us, require_model, require_version
from control_plane.model_registry.reads import touch


def verify_artifact(
    sessions: sessionmaker[Session], artifacts: ArtifactStore, name: str, version: int
) -> None:
    """FAILED_PRECONDITION unless the artifact of pending version ``version`` is stored and verifies.
    A version already decided is left to :func:`decide` (an exact repeat of its decision changes
    nothing, any other review is refused for that reason), so a retried approval does not read the
    artifact again."""
    with read_session(sessions) as session:
        row = require_version(session, require_model(session, name), version)
        status, sha256 = row.approval_status, row.artifact_sha256
    if status != Approval.PENDING.value:
        return
    what = f"cannot approve model {name!r} version {version}: its artifact sha256:{sha256}"
    try:
        artifacts.verify(sha256)
    except NotFound:
        raise FailedPrecondition(
            f"{what} is missing from the artifact store {artifacts.root}; register a new version"
            " with the artifact uploaded again"
        ) from None
    except DataLoss as damaged:
        raise FailedPrecondition(
            f"{what} does not verify ({damaged}); register a new version with the artifact uploaded again"
        ) from None


def record_decision(
    session: Session, name: str, version: int, target: Approval, reason: str, *, actor: str
) -> pb.ModelVersion:
    """Moves pending version ``version`` to ``target`` in the caller's write transaction (unchanged when
    it already holds exactly this decision by ``actor`` for ``reason``; any other review of a decided
    version is FAILED_PRECONDITION, see :func:`decide`); INVALID_ARGUMENT, before the audit entry, when
    the version's message with the reason would no longer fit
    :data:`~control_plane.db.pages.MAX_GROWN_ITEM_BYTES`."""
    model = require_model(session, name)
    # Locked, so that two concurrent reviews cannot both see the version pending (PostgreSQL).
    row = require_version(session, model, version, lock=True)
    held = Decided(Approval(row.approval_status), row.approval_actor, row.approval_reason, row.approval_at_us)
    if not decide(held, target, actor, reason, f"model {name!r} version {version}"):
        return messages.version_messages(session, name, [row])[0]
    before = {"approval_status": row.approval_status}
    row.approval_status = target.value
    row.approval_actor = actor
    row.approval_reason = reason
    row.approval_at_us = now_us()
    touch(row)
    message = messages.version_messages(session, name, [row])[0]
    pages.check_item(message, f"model {name!r} version {version}", pages.MAX_GROWN_ITEM_BYTES)
    record(
        session,
        actor=actor,
        action="approve" if target == Approval.APPROVED else "reject",
        object_type="model_version",
        object_id=f"{name}/{version}",
        before=before,
        after={"approval_status": target.value, "reason": reason},
    )
    return message


def require_deployable(found: pb.ModelVersion) -> pb.ModelVersion:
    """``found`` when it may be deployed; FAILED_PRECONDITION unless it is Approved."""
    if found.approval.status != pb.APPROVED:
        status = from_proto(found.approval.status).value
        raise FailedPrecondition(
            f"model {found.model_name!r} version {found.version} is {status}:"
            " only an Approved version can be deployed"
        )
    return found
