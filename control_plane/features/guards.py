"""The plug-in point through which other parts of the control plane (the model registry first) stop the
feature registry from retiring or deleting what they still use."""

from __future__ import annotations

from typing import Protocol

from sqlalchemy.orm import Session


class ReferenceGuard(Protocol):
    def references(self, session: Session, view: str, version: int | None) -> list[str]:
        """Who still references feature view ``view`` at ``version`` (``None``: at any version), as
        human-readable names such as ``"model 'eta' version 3"``; empty when nothing does.

        Called inside the registry's write transaction with its session, so a guard backed by the same
        database sees a consistent state and no reference can appear between the check and the change."""
        ...
