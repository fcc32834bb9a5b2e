"""A model's aliases (movable pointers such as ``champion`` at one of its versions), written in the
caller's write transaction: the model's row is locked first, so concurrent changes of one model's aliases
(and the count that :data:`~validation.MAX_ALIASES` bounds) are serialized. Every change is audited, one
entry per alias."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from clients.aether.v1 import model_registry_pb2 as pb
from clients.errors import FailedPrecondition, NotFound
from control_plane.audit.log import record
from control_plane.db import pages
from control_plane.model_registry import messages
from control_plane.model_registry.queries import now_us, require_model, require_version
from control_plane.model_registry.reads import touch
from control_plane.model_registry.tables import ModelAliasRow, ModelVersionRow, RegisteredModelRow
from control_plane.model_registry.validation import MAX_ALIASES, check_alias


def set_alias(session: Session, name: str, alias: str, version: int, *, actor: str) -> pb.ModelVersion:
    """Points ``alias`` at ``version``, moving it if it pointed at another version. A model has at most
    :data:`~validation.MAX_ALIASES` aliases (FAILED_PRECONDITION for one more; moving one is allowed),
    and the model's and the version's messages with the alias must still fit
    :data:`~control_plane.db.pages.MAX_GROWN_ITEM_BYTES` (INVALID_ARGUMENT): both checked before the
    audit entry, so a refused change is rolled back whole."""
    check_alias(alias)
    model = require_model(session, name, lock=True)  # serializes the count below
    row = require_version(session, model, version)
    current = session.get(ModelAliasRow, (model.id, alias))
    before_version = None
    if current is None:
        count = session.scalar(
            select(func.count()).select_from(ModelAliasRow).where(ModelAliasRow.model_id == model.id)
        )
        if (count or 0) >= MAX_ALIASES:
            raise FailedPrecondition(
                f"model {name!r} already has {count} aliases, the most a model may have;"
                f" move or delete one of them (aetherctl models alias ... --delete) to add {alias!r}"
            )
        session.add(
            ModelAliasRow(model_id=model.id, alias=alias, model_version_id=row.id, updated_at_us=now_us())
        )
    else:
        previous = session.get(ModelVersionRow, current.model_version_id)
        before_version = previous.version if previous is not None else None
        if previous is not None and previous.id != row.id:
            touch(previous)  # its message lists its aliases
        current.model_version_id = row.id
        current.updated_at_us = now_us()
    if before_version != version:
        touch(row)
        touch(model)
    session.flush()
    message = messages.version_messages(session, name, [row])[0]
    if before_version != version:
        pages.check_item(message, f"model {name!r} version {version}", pages.MAX_GROWN_ITEM_BYTES)
        model_aliases = messages.aliases_of_models(session, [model.id]).get(model.id, {})
        pages.check_item(
            messages.model_message(model, model_aliases, model.latest_version),
            f"registered model {name!r}",
            pages.MAX_GROWN_ITEM_BYTES,
        )
        record(
            session,
            actor=actor,
            action="update" if current is not None else "create",
            object_type="model_alias",
            object_id=f"{name}@{alias}",
            before=None if before_version is None else {"version": before_version},
            after={"version": version},
        )
    return message


def delete_alias(session: Session, name: str, alias: str, *, actor: str) -> None:
    """Removes ``alias``; NOT_FOUND when the model has no such alias."""
    model = require_model(session, name, lock=True)
    current = session.get(ModelAliasRow, (model.id, check_alias(alias)))
    if current is None:
        raise NotFound(f"model {name!r} has no alias {alias!r}")
    remove_alias(session, model, current, actor)


def clear_alias(session: Session, name: str, alias: str, version: int, *, actor: str) -> bool:
    """Removes ``alias`` when it still points at ``version``; whether it did. Checked and removed in the
    one transaction, so an alias another caller moved to a newer version meanwhile stays."""
    model = require_model(session, name, lock=True)
    current = session.get(ModelAliasRow, (model.id, check_alias(alias)))
    if current is None:
        return False
    pointed = session.get(ModelVersionRow, current.model_version_id)
    if pointed is None or pointed.version != version:
        return False
    remove_alias(session, model, current, actor)
    return True


def remove_alias(session: Session, model: RegisteredModelRow, current: ModelAliasRow, actor: str) -> None:
    """Deletes the alias row ``current`` of ``model`` (whose row the caller locked), with its audit entry."""
    pointed = session.get(ModelVersionRow, current.model_version_id)
    version = pointed.version if pointed is not None else None
    if pointed is not None:
        touch(pointed)  # its message lists its aliases
    touch(model)
    session.delete(current)
    record(
        session,
        actor=actor,
        action="delete",
        object_type="model_alias",
        object_id=f"{model.name}@{current.alias}",
        before={"version": version},
        after=None,
    )
