"""The registry's hot read paths (get and list of models and versions), with built messages reused.

Building a message from a row (JSON columns decoded, protobuf filled field by field) costs far more
than finding the row, and registry rows change rarely. So a read first asks the database only for the
ids and ``updated_at_us`` stamps of the rows it returns, and builds (one query for all of them) only
the rows whose (id, stamp) it has not built before. Every mutation of anything a message shows moves
the stamp of the rows concerned forward (:func:`touch`: strictly increasing, so two changes within
one microsecond still differ), and the stamp is read from the database on every call, so a change made
by another control-plane process is seen at once: the cache can serve a message only for the exact row
state it was built from."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Generic, TypeVar

from google.protobuf.message import Message
from sqlalchemy import func, literal_column, select
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import model_registry_pb2 as pb
from clients.errors import InvalidArgument, NotFound
from control_plane.db import keyset, pages, strings
from control_plane.db.engine import read_session
from control_plane.db.models import NAME_LENGTH
from control_plane.db.strings import byte_order
from control_plane.model_registry import messages
from control_plane.model_registry.approval import from_proto
from control_plane.model_registry.queries import now_us, page_size_of, require_model
from control_plane.model_registry.tables import ModelAliasRow, ModelVersionRow, RegisteredModelRow
from control_plane.model_registry.validation import (
    check_alias,
    check_model_name,
    check_version,
    parse_version_token,
    version_token,
)

M = TypeVar("M", bound=Message)
CACHE_CAPACITY = 50_000
#: Versions built at once while a page is filled (the default page size).
_BUILD_BATCH = 100
#: Models are listed by name, which is unique.
_MODEL_ORDER = [keyset.KeyColumn(byte_order(RegisteredModelRow.name), str)]


def touch(row: ModelVersionRow | RegisteredModelRow) -> None:
    """Marks ``row`` changed: its stamp moves strictly forward."""
    row.updated_at_us = max(now_us(), row.updated_at_us + 1)


class MessageCache(Generic[M]):
    """Messages built from rows, by (row id, stamp), least recently used evicted first. Thread-safe
    (the servicer runs reads in worker threads). Cached messages are never handed out to be mutated:
    lists copy them into their response, single gets return a copy."""

    def __init__(self, capacity: int = CACHE_CAPACITY) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[tuple[int, int], M] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[int, int]) -> M | None:
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
            return found

    def put(self, key: tuple[int, int], message: M) -> None:
        with self._lock:
            self._entries[key] = message
            self._entries.move_to_end(key)
            while len(self._entries) > self._capacity:
                self._entries.popitem(last=False)


def _copy(message: M) -> M:
    copy = type(message)()
    copy.CopyFrom(message)
    return copy


def _lookup(cache: MessageCache[M], stamps: Sequence[tuple[int, int]]) -> tuple[dict[int, M], list[int]]:
    """The cached messages by row id, and the ids to build. Built rows are cached under the stamp they
    were loaded with (on PostgreSQL a row may have moved on between the two queries; it is then
    returned as it is now, which is what a reader would have seen a moment later anyway)."""
    found: dict[int, M] = {}
    missing: list[int] = []
    for row_id, stamp in stamps:
        message = cache.get((row_id, stamp))
        if message is None:
            missing.append(row_id)
        else:
            found[row_id] = message
    return found, missing


class CachedReads:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions
        self._models: MessageCache[pb.RegisteredModel] = MessageCache()
        self._versions: MessageCache[pb.ModelVersion] = MessageCache()

    # -- building what the cache lacks ---------------------------------------------------------------

    def _model_messages(
        self, session: Session, stamps: Sequence[tuple[int, int]]
    ) -> list[pb.RegisteredModel]:
        found, missing = _lookup(self._models, stamps)
        if missing:
            rows = session.scalars(select(RegisteredModelRow).where(RegisteredModelRow.id.in_(missing))).all()
            aliases = messages.aliases_of_models(session, missing)
            newest_query = (
                select(ModelVersionRow.model_id, func.max(ModelVersionRow.version))
                .where(ModelVersionRow.model_id.in_(missing))
                .group_by(ModelVersionRow.model_id)
            )
            newest = {model_id: version for model_id, version in session.execute(newest_query)}
            for row in rows:
                found[row.id] = messages.model_message(row, aliases.get(row.id, {}), newest.get(row.id, 0))
                self._models.put((row.id, row.updated_at_us), found[row.id])
        return [found[row_id] for row_id, _ in stamps if row_id in found]

    def _version_messages(
        self, session: Session, name: str, stamps: Sequence[tuple[int, int]]
    ) -> list[pb.ModelVersion]:
        found, missing = _lookup(self._versions, stamps)
        if missing:
            rows = session.scalars(select(ModelVersionRow).where(ModelVersionRow.id.in_(missing))).all()
            for row, message in zip(rows, messages.version_messages(session, name, rows), strict=True):
                found[row.id] = message
                self._versions.put((row.id, row.updated_at_us), message)
        return [found[row_id] for row_id, _ in stamps if row_id in found]

    # -- models --------------------------------------------------------------------------------------

    def get_model(self, name: str) -> pb.RegisteredModel:
        check_model_name(name)
        with read_session(self._sessions) as session:
            found = session.execute(
                select(RegisteredModelRow.id, RegisteredModelRow.updated_at_us).where(
                    RegisteredModelRow.name == name
                )
            ).first()
            if found is None:
                raise NotFound(f"registered model {name!r} not found")
            built = self._model_messages(session, [(found[0], found[1])])
            if not built:  # deleted between the two queries (PostgreSQL)
                raise NotFound(f"registered model {name!r} not found")
            return _copy(built[0])

    def list_models(
        self, name_prefix: str, tags: Mapping[str, str], page_size: int, page_token: str
    ) -> tuple[list[pb.RegisteredModel], str]:
        """Models ordered by name, a page at a time (the next page's token is empty on the last one).
        Tag filters are applied while paging, so pages stay full. ``name_prefix`` holds at most a model
        name's ``NAME_LENGTH`` characters: a longer one matches nothing (and SQLite refused one over 50,000
        bytes when the filter was a LIKE pattern, "too complex": INTERNAL), so it is refused before any
        query. It matches exactly (:func:`strings.starts_with`): as LIKE it ignored case on SQLite only."""
        if len(name_prefix) > NAME_LENGTH:
            raise InvalidArgument(
                f"name_prefix: {len(name_prefix)} characters; a model name, and so a prefix of one, holds"
                f" at most {NAME_LENGTH} characters"
            )
        size, wanted = page_size_of(page_size), dict(tags)
        scope = keyset.scope_digest(name_prefix, wanted)
        last = keyset.decode(
            page_token, "ListRegisteredModels", scope, _MODEL_ORDER, scope_name="name prefix or tags"
        )
        found: list[tuple[int, int, str]] = []
        after, exhausted = ("" if last is None else str(last[0])), False
        with read_session(self._sessions) as session:
            while len(found) <= size and not exhausted:
                # Tags are JSON: decoded only when a filter needs them.
                tags_column = RegisteredModelRow.tags if wanted else literal_column("NULL")
                query = (
                    select(
                        RegisteredModelRow.id,
                        RegisteredModelRow.updated_at_us,
                        RegisteredModelRow.name,
                        tags_column,
                    )
                    .order_by(byte_order(RegisteredModelRow.name))
                    .limit(size + 1)
                )
                if name_prefix:
                    query = query.where(strings.starts_with(RegisteredModelRow.name, name_prefix))
                if after:
                    query = query.where(byte_order(RegisteredModelRow.name) > after)
                rows = session.execute(query).all()
                exhausted = len(rows) <= size
                if rows:
                    after = rows[-1].name
                found += [
                    (row_id, stamp, name)
                    for row_id, stamp, name, row_tags in rows
                    if not wanted or all(row_tags.get(key) == value for key, value in wanted.items())
                ]
            page = found[:size]
            built = self._model_messages(session, [(row_id, stamp) for row_id, stamp, _ in page])
            models = list(pages.fitting(built))
        if len(found) <= size and len(models) == len(built):
            return models, ""
        # A cut page ends at its last model; a full one at its last row (which may have been deleted).
        end = models[-1].name if len(models) < len(built) else page[-1][2]
        return models, keyset.encode("ListRegisteredModels", scope, [end])

    # -- versions ------------------------------------------------------------------------------------

    def get_version(self, name: str, version: int, alias: str) -> pb.ModelVersion:
        """Version ``version``, or the one ``alias`` points at, or (neither given) the latest."""
        with read_session(self._sessions) as session:
            return self.version_in(session, name, version, alias)

    def version_in(self, session: Session, name: str, version: int, alias: str) -> pb.ModelVersion:
        """:meth:`get_version` in the caller's transaction: a caller that holds a connection (and perhaps
        a lock) must not wait for a second one from the pool, whose every connection may be held by
        writers queued behind that lock. The transaction must not have changed the version's row: the
        message is cached under the row's stamp, as if committed."""
        if version and alias:
            raise InvalidArgument(
                f"version, alias: give a version or an alias, not both (got version {version} and alias"
                f" {alias[:200]!r})"
            )
        check_model_name(name)
        query = (
            select(ModelVersionRow.id, ModelVersionRow.updated_at_us)
            .join(RegisteredModelRow, RegisteredModelRow.id == ModelVersionRow.model_id)
            .where(RegisteredModelRow.name == name)
        )
        if alias:
            query = query.join(ModelAliasRow, ModelAliasRow.model_version_id == ModelVersionRow.id).where(
                ModelAliasRow.alias == check_alias(alias)
            )
        elif version:
            query = query.where(ModelVersionRow.version == check_version(version))
        else:
            query = query.order_by(ModelVersionRow.version.desc()).limit(1)
        found = session.execute(query).first()
        if found is None:
            require_model(session, name)  # NotFound for the model itself, else for what was asked
            if alias:
                raise NotFound(f"model {name!r} has no alias {alias!r}")
            if version:
                raise NotFound(f"model {name!r} has no version {version}")
            raise NotFound(f"model {name!r} has no versions")
        built = self._version_messages(session, name, [(found[0], found[1])])
        if not built:  # deleted between the two queries (PostgreSQL)
            raise NotFound(f"model {name!r} version not found")
        return _copy(built[0])

    def list_versions(
        self, name: str, status: pb.ApprovalStatus, page_size: int, page_token: str
    ) -> tuple[list[pb.ModelVersion], str]:
        """Versions in ascending order, a page at a time, optionally only those with one approval status.
        A page also ends where its versions fill :data:`pages.MAX_PAGE_BYTES` (a dozen versions of
        large hyperparameters took more than gRPC's 4 MiB, and the listing failed for good)."""
        size = page_size_of(page_size)
        after = parse_version_token(page_token, name, status)
        query = (
            select(ModelVersionRow.id, ModelVersionRow.updated_at_us, ModelVersionRow.version)
            .join(RegisteredModelRow, RegisteredModelRow.id == ModelVersionRow.model_id)
            .where(RegisteredModelRow.name == check_model_name(name), ModelVersionRow.version > after)
            .order_by(ModelVersionRow.version)
            .limit(size + 1)
        )
        if status != pb.APPROVAL_STATUS_UNSPECIFIED:
            query = query.where(ModelVersionRow.approval_status == from_proto(status).value)
        with read_session(self._sessions) as session:
            rows = session.execute(query).all()
            if not rows:
                require_model(session, name)
            page = rows[:size]
            versions: list[pb.ModelVersion] = []
            budget = pages.PageBudget()
            # Built a hundred at a time, and no further than the page's bytes reach: 1,000 versions of
            # large hyperparameters would be hundreds of megabytes to build for a page of a few.
            for start in range(0, len(page), _BUILD_BATCH):
                stamps = [(row.id, row.updated_at_us) for row in page[start : start + _BUILD_BATCH]]
                built = self._version_messages(session, name, stamps)
                kept = list(budget.take(built))
                versions += kept
                if len(kept) < len(built):
                    return versions, version_token(name, status, versions[-1].version)
        return versions, version_token(name, status, page[-1].version) if len(rows) > size else ""
