"""The plug-in point through which deployments (and anything else that uses a model version) stop the
registry from deleting what they still use, and appear in lineage."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.orm import Session

#: The kinds of :class:`ModelUser` lineage tells apart: a deployment serving the version, and a
#: retraining promotion in progress moving it toward one (``control_plane/retraining/model_guard.py``).
DEPLOYMENT = "deployment"
PROMOTION = "retraining promotion"


@dataclass(frozen=True)
class ModelUser:
    """Something using a model version, e.g. ``ModelUser("deployment", "eta-prod", "90% traffic")``."""

    kind: str
    name: str
    detail: str = ""

    def describe(self) -> str:
        return f"{self.kind} {self.name!r}"


class ModelReferenceGuard(Protocol):
    def references(self, session: Session, model: str, version: int | None) -> list[ModelUser]:
        """Who uses model ``model`` at ``version`` (``None``: at any version); empty when nobody does.

        Called inside the registry's transaction with its session (a write transaction for deletes), so
        a guard backed by the same database sees a consistent state and no new user can appear between
        the check and the delete."""
        ...
