"""Lookups of registry rows shared by the registry's operations; ``NotFound`` for what is missing."""

from __future__ import annotations

import time

from sqlalchemy import select
from sqlalchemy.orm import Session

from clients.errors import InvalidArgument, NotFound
from control_plane.model_registry.tables import ModelVersionRow, RegisteredModelRow
from control_plane.model_registry.validation import check_model_name, check_version

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


def now_us() -> int:
    return time.time_ns() // 1000


def page_size_of(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument(f"page_size: must be >= 0, got {requested}")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def find_model(session: Session, name: str, *, lock: bool = False) -> RegisteredModelRow | None:
    query = select(RegisteredModelRow).where(RegisteredModelRow.name == name)
    return session.scalar(query.with_for_update() if lock else query)


def require_model(session: Session, name: str, *, lock: bool = False) -> RegisteredModelRow:
    row = find_model(session, check_model_name(name), lock=lock)
    if row is None:
        raise NotFound(f"registered model {name!r} not found")
    return row


def require_version(
    session: Session, model: RegisteredModelRow, version: int, *, lock: bool = False
) -> ModelVersionRow:
    query = select(ModelVersionRow).where(
        ModelVersionRow.model_id == model.id, ModelVersionRow.version == check_version(version)
    )
    row = session.scalar(query.with_for_update() if lock else query)
    if row is None:
        raise NotFound(f"model {model.name!r} has no version {version}")
    return row
