"""The approval state machine of a model version, as a pure function (tested against a brute-force
reference): a version starts PendingManualApproval and a reviewer moves it to Approved or Rejected,
once. Repeating the decision a version already has changes nothing (a retried call is harmless);
reversing it is refused, since a deployment may already rely on an approval, and a rejected build
is fixed by registering a new version, not by flipping the old one."""

from __future__ import annotations

from enum import StrEnum

from clients.aether.v1 import model_registry_pb2 as pb
from clients.errors import FailedPrecondition, InvalidArgument


class Approval(StrEnum):
    PENDING = "PendingManualApproval"
    APPROVED = "Approved"
    REJECTED = "Rejected"


_TO_PROTO = {
    Approval.PENDING: pb.PENDING_MANUAL_APPROVAL,
    Approval.APPROVED: pb.APPROVED,
    Approval.REJECTED: pb.REJECTED,
}
_FROM_PROTO = {value: key for key, value in _TO_PROTO.items()}


def to_proto(status: str) -> pb.ApprovalStatus:
    return _TO_PROTO[Approval(status)]


def from_proto(status: pb.ApprovalStatus, field: str = "status") -> Approval:
    try:
        return _FROM_PROTO[status]
    except KeyError:
        raise InvalidArgument(f"{field}: unknown approval status {status}") from None


def decide(current: Approval, decision: Approval, what: str) -> bool:
    """Whether ``decision`` changes a version that is ``current`` (False: it already is ``decision``).
    ``FailedPrecondition`` when the decision would reverse an earlier one; ``InvalidArgument`` when the
    decision is not Approved or Rejected. ``what`` names the version in messages."""
    if decision == Approval.PENDING:
        raise InvalidArgument("decision: a review approves or rejects; it cannot make a version pending")
    if current == decision:
        return False
    if current != Approval.PENDING:
        raise FailedPrecondition(
            f"{what} is already {current}; a decision is final (register a new version instead)"
        )
    return True
