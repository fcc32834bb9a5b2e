"""The approval state machine of a model version, as a pure function (tested against a brute-force
reference): a version starts PendingManualApproval and a reviewer moves it to Approved or Rejected,
once. Repeating exactly the decision a version already has (same decision, reviewer and reason: a
retried call) changes nothing; any other review of a decided version is refused, naming the decision it
holds. A reversal is refused since a deployment may already rely on an approval, and a rejected build
is fixed by registering a new version, not by flipping the old one. The same decision by another
reviewer or with another reason is refused rather than answered OK: a version records one reviewer and
reason, and an OK that kept the first ones told the second reviewer their review was recorded."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
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


#: How much of the recorded reason a refusal quotes: the refusal travels in gRPC's trailing metadata
#: (8 KiB by default), which a whole reason of 6,000 characters could overflow once escaped.
QUOTED_REASON_CHARS = 200


@dataclass(frozen=True)
class Decided:
    """The decision a version holds (``PENDING``: none yet), who made it, when and why."""

    status: Approval
    actor: str = ""
    reason: str = ""
    at_us: int = 0

    def describe(self) -> str:
        """E.g. ``Approved by 'ann' at 2026-12-07T19:30:00+00:00 with reason 'beats v2'``."""
        when = datetime.fromtimestamp(self.at_us / 1e6, UTC).isoformat(timespec="seconds")
        reason = repr(self.reason[:QUOTED_REASON_CHARS])
        if len(self.reason) > QUOTED_REASON_CHARS:
            reason += f"... ({len(self.reason)} characters)"
        return f"{self.status} by {self.actor!r} at {when} with reason {reason}"


def decide(current: Decided, decision: Approval, actor: str, reason: str, what: str) -> bool:
    """Whether ``decision`` by ``actor`` for ``reason`` changes a version holding ``current`` (False: it
    is the exact decision the version holds, a retried review). ``FailedPrecondition`` for any other
    review of a decided version, naming the decision it holds; ``InvalidArgument`` when the decision is
    not Approved or Rejected. ``what`` names the version in messages."""
    if decision == Approval.PENDING:
        raise InvalidArgument("decision: a review approves or rejects; it cannot make a version pending")
    if current.status == Approval.PENDING:
        return True
    if (current.status, current.actor, current.reason) == (decision, actor, reason):
        return False
    if current.status == decision:
        rule = "a version records one review; only an exact repeat (same reviewer and reason) is accepted"
    else:
        rule = "a decision is final (register a new version instead)"
    raise FailedPrecondition(f"{what} is already {current.describe()}; nothing was changed: {rule}")
