"""The feature registry core: entities, feature views and their immutable versions, stored in the
metadata database. Transport-free and synchronous (the gRPC servicer calls it from worker threads): wire
messages in, wire messages out, ``clients.errors`` exceptions for every refusal.

Every mutation increments the registry revision in its own transaction, which is how watchers in any
process notice it, and appends an audit entry in that same transaction (who, what, before and after as
proto JSON; ``object_type`` "entity" or "feature_view", ``object_id`` the name; the version a change
touched is inside the before/after state)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from control_plane.audit.log import record
from control_plane.db.engine import read_session, write_session
from control_plane.db.models import EntityRow, FeatureViewRow, FeatureViewVersionRow
from control_plane.db.revision import BUMPED_REVISION, bump_revision, current_revision, lock_registry
from control_plane.db.strings import byte_order
from control_plane.features import listing, store
from control_plane.features.apply import ENTITY, FEATURE_VIEW, apply_definitions
from control_plane.features.changes import new_version_reasons
from control_plane.features.guards import ReferenceGuard
from control_plane.features.listing import MAX_VIEW_MESSAGE_BYTES
from control_plane.features.online_cleanup import cleanup_states
from control_plane.features.store import SERVABLE, Status, now_us
from control_plane.features.validation import (
    check_aggregated_rule,
    validate_entity,
    validate_metadata,
    validate_rule,
    validate_spec,
    validate_with_entity,
)

_log = logging.getLogger("aether.features.registry")

#: The actor of a mutation made in process without a caller (CLI dev mode, tests, background loops).
ANONYMOUS = "anonymous"

#: Called with the new revision after a mutation committed, in the thread that made it.
ChangeListener = Callable[[int], None]


class _DryRun(Exception):
    """Unwinds a dry-run Apply so its transaction rolls back."""

    def __init__(self, steps: list[pb.PlanStep]) -> None:
        super().__init__("dry run")
        self.steps = steps


class FeatureRegistry:
    def __init__(self, sessions: sessionmaker[Session], guards: Sequence[ReferenceGuard] = ()) -> None:
        self._sessions = sessions
        self._guards = list(guards)
        self._listeners: list[ChangeListener] = []

    @contextmanager
    def _write(self) -> Iterator[Session]:
        with write_session(self._sessions) as session:
            lock_registry(session)
            yield session
        revision = session.info.get(BUMPED_REVISION)
        if revision is not None:  # committed a change: tell this process's watchers at once
            for listener in list(self._listeners):
                try:
                    listener(revision)
                except Exception:
                    _log.exception("registry change listener failed")

    def add_listener(self, listener: ChangeListener) -> None:
        """Calls ``listener(revision)`` after every mutation this object commits (other processes'
        mutations are seen only by polling :meth:`revision`)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: ChangeListener) -> None:
        self._listeners.remove(listener)

    def add_guard(self, guard: ReferenceGuard) -> None:
        """Plugs in another part of the system that may refuse retiring or deleting what it uses."""
        self._guards.append(guard)

    # -- entities ------------------------------------------------------------------------------------

    def create_entity(self, entity: pb.Entity, *, actor: str = ANONYMOUS) -> pb.Entity:
        validate_entity(entity)
        with self._write() as session:
            if store.find_entity(session, entity.name) is not None:
                raise AlreadyExists(f"entity {entity.name!r} already exists")
            created = store.entity_message(store.insert_entity(session, entity, now_us()))
            bump_revision(session)
            _audit(session, actor, "create", ENTITY, entity.name, None, created)
            return created

    def get_entity(self, name: str) -> pb.Entity:
        with read_session(self._sessions) as session:
            return store.entity_message(store.require_entity(session, name))

    def list_entities(self) -> list[pb.Entity]:
        """Every entity, by name (in process: no page, as no message carries it)."""
        with read_session(self._sessions) as session:
            return [
                store.entity_message(row)
                for row in session.scalars(select(EntityRow).order_by(byte_order(EntityRow.name)))
            ]

    def list_entities_page(self, page_size: int = 0, page_token: str = "") -> tuple[list[pb.Entity], str]:
        """One page of entities for ListEntities, and the next page's token (:mod:`listing`)."""
        with read_session(self._sessions) as session:
            return listing.entities_page(session, page_size, page_token)

    def delete_entity(self, name: str, *, actor: str = ANONYMOUS) -> None:
        with self._write() as session:
            row = store.require_entity(session, name)
            users = store.views_using_entity(session, row)
            if users:
                raise FailedPrecondition(
                    f"cannot delete entity {name!r}: used by feature views {', '.join(users)}"
                )
            before = store.entity_message(row)
            session.delete(row)
            bump_revision(session)
            _audit(session, actor, "delete", ENTITY, name, before, None)

    # -- feature views -------------------------------------------------------------------------------

    def create_feature_view(
        self, spec: pb.FeatureViewSpec, metadata: pb.FeatureViewMetadata, *, actor: str = ANONYMOUS
    ) -> pb.FeatureView:
        """Creates the first version of a new view: 1, or for a name whose view was deleted, one above the
        highest version that view reached (a name's versions are never reused)."""
        validate_spec(spec)
        validate_metadata(metadata)
        with self._write() as session:
            if store.find_view(session, spec.name) is not None:
                raise AlreadyExists(f"feature view {spec.name!r} already exists")
            entity = _entity_for(session, spec.entity, "spec.entity")
            validate_with_entity(spec, (key["name"] for key in entity.join_keys))
            view, version = store.insert_view(session, spec, metadata, entity, now_us())
            self._require_fits(session, spec.name)
            bump_revision(session)
            created = store.view_message(view, version)
            _audit(session, actor, "create", FEATURE_VIEW, spec.name, None, created)
            return created

    def get_feature_view(self, name: str, version: int = 0) -> pb.FeatureView:
        """``version`` 0 is the latest version that is not retired; an explicit retired version is still
        returned (with status RETIRED) so that it can be inspected."""
        with read_session(self._sessions) as session:
            view = store.find_view(session, name)
            if view is None:
                raise NotFound(f"feature view {name!r} not found{_deleted_note(session, name)}")
            return store.view_message(view, store.require_version(session, view, version))

    def list_feature_views(
        self, owner: str = "", tags: Mapping[str, str] | None = None, include_retired: bool = False
    ) -> list[pb.FeatureView]:
        """The latest servable version of every view owned by ``owner`` (any when empty) carrying every
        tag in ``tags``; a view whose versions are all retired appears only with ``include_retired``
        (in process: no page)."""
        with read_session(self._sessions) as session:
            return list(listing.matching_views(session, owner, dict(tags or {}), include_retired))

    def list_feature_views_page(
        self,
        owner: str = "",
        tags: Mapping[str, str] | None = None,
        include_retired: bool = False,
        page_size: int = 0,
        page_token: str = "",
    ) -> tuple[list[pb.FeatureView], str]:
        """One page of :meth:`list_feature_views` for ListFeatureViews, and the next page's token."""
        with read_session(self._sessions) as session:
            return listing.views_page(
                session, owner, dict(tags or {}), include_retired, page_size, page_token
            )

    def list_feature_view_versions(self, name: str) -> list[pb.FeatureView]:
        """Every version of a view, retired ones included, oldest first (in process: no page)."""
        with read_session(self._sessions) as session:
            view = store.require_view(session, name)
            return [store.view_message(view, row) for row in store.versions_of(session, view)]

    def list_feature_view_versions_page(
        self, name: str, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[pb.FeatureView], str]:
        """One page of :meth:`list_feature_view_versions` for ListFeatureViewVersions, and the next
        page's token."""
        with read_session(self._sessions) as session:
            return listing.versions_page(session, name, page_size, page_token)

    def update_feature_view_metadata(
        self,
        name: str,
        metadata: pb.FeatureViewMetadata | None,
        feature_descriptions: Mapping[str, str] | None = None,
        *,
        actor: str = ANONYMOUS,
    ) -> pb.FeatureView:
        """Replaces description, owner and tags as a whole when ``metadata`` is given, and sets the
        descriptions of the named features of the latest version that is not retired (the one
        ``get_feature_view`` shows; a retired version is not served, so describing its features there would
        change nothing a user sees). Never creates a version."""
        if metadata is not None:
            validate_metadata(metadata)
        with self._write() as session:
            view = store.require_view(session, name)
            # Metadata belongs to the view, so a view whose versions are all retired still takes it.
            latest = (
                store.require_version(session, view, 0)
                if feature_descriptions
                else store.latest_version(session, view)
            )
            before = store.view_message(view, latest)
            now = now_us()
            if metadata is not None:
                store.set_metadata(view, metadata, now)
            if feature_descriptions:
                spec = store.spec_from_json(latest.spec)
                features = {feature.name: feature for feature in spec.features}
                for feature_name, description in feature_descriptions.items():
                    _feature_of(features, view, latest, feature_name).description = description
                store.set_feature_details(latest, spec, now)
            self._require_fits(session, name)
            bump_revision(session)
            after = store.view_message(view, latest)
            _audit(session, actor, "update_metadata", FEATURE_VIEW, name, before, after)
            return after

    def update_validation(
        self, name: str, version: int, rules: Mapping[str, pb.ValidationRule], *, actor: str = ANONYMOUS
    ) -> pb.FeatureView:
        """Replaces the rules of the named features of one version (0 = latest not retired); the other
        features keep theirs. Never creates a version: rules do not change stored values."""
        with self._write() as session:
            view = store.require_view(session, name)
            row = store.require_version(session, view, version)
            before = store.view_message(view, row)
            spec = store.spec_from_json(row.spec)
            features = {feature.name: feature for feature in spec.features}
            for feature_name, rule in rules.items():
                feature = _feature_of(features, view, row, feature_name)
                validate_rule(rule, feature.value_type, f"rules[{feature_name}]")
                for aggregation in spec.aggregations:
                    if aggregation.output == feature_name:
                        check_aggregated_rule(aggregation, rule, f"rules[{feature_name}]")
                feature.validation.CopyFrom(rule)
            store.set_feature_details(row, spec, now_us())
            self._require_fits(session, name)
            bump_revision(session)
            after = store.view_message(view, row)
            _audit(session, actor, "update_validation", FEATURE_VIEW, name, before, after)
            return after

    def create_feature_view_version(
        self, spec: pb.FeatureViewSpec, *, actor: str = ANONYMOUS
    ) -> pb.FeatureView:
        """Creates version N+1 of an existing view when anything versioned differs from version N."""
        validate_spec(spec)
        with self._write() as session:
            view = store.require_view(session, spec.name)
            latest = store.latest_version(session, view)
            retired = latest.status == Status.RETIRED
            if not new_version_reasons(store.spec_from_json(latest.spec), retired, spec):
                raise FailedPrecondition(
                    f"nothing versioned changed in feature view {spec.name!r} since version {latest.version}"
                    " (descriptions, owner, tags and validation rules are edited without a new version)"
                )
            entity = _entity_for(session, spec.entity, "spec.entity")
            validate_with_entity(spec, (key["name"] for key in entity.join_keys))
            before = store.view_message(view, latest)
            row = store.insert_version(session, view, spec, entity, now_us())
            self._require_fits(session, spec.name)
            bump_revision(session)
            after = store.view_message(view, row)
            _audit(session, actor, "create_version", FEATURE_VIEW, spec.name, before, after)
            return after

    def deprecate_version(self, name: str, version: int, *, actor: str = ANONYMOUS) -> pb.FeatureView:
        """ACTIVE -> DEPRECATED: still served, but marked for removal."""
        return self._change_status(name, version, Status.ACTIVE, Status.DEPRECATED, actor)

    def retire_version(self, name: str, version: int, *, actor: str = ANONYMOUS) -> pb.FeatureView:
        """DEPRECATED -> RETIRED: no longer served; refused while anything references the version."""
        return self._change_status(name, version, Status.DEPRECATED, Status.RETIRED, actor)

    def _change_status(
        self, name: str, version: int, expected: Status, target: Status, actor: str
    ) -> pb.FeatureView:
        if version < 1:
            raise InvalidArgument(
                f"version: a lifecycle change names an explicit version (>= 1), got {version}"
            )
        with self._write() as session:
            view = store.require_view(session, name)
            row = store.require_version(session, view, version)
            if row.status != expected:
                raise FailedPrecondition(
                    f"feature view {name!r} version {version} is {row.status};"
                    f" only a version that is {expected} can become {target}"
                )
            if target == Status.RETIRED:
                self._refuse_if_referenced(
                    session, name, version, f"retire feature view {name!r} version {version}"
                )
            before = store.view_message(view, row)
            row.status = target.value
            row.updated_at_us = now_us()
            bump_revision(session)
            after = store.view_message(view, row)
            action = "deprecate" if target == Status.DEPRECATED else "retire"
            _audit(session, actor, action, FEATURE_VIEW, name, before, after)
            return after

    def delete_feature_view(self, name: str, *, actor: str = ANONYMOUS) -> None:
        """Deletes a view with all its versions; refused while any version is referenced. The highest
        version it reached is kept, so a view created again under the name continues above it. The
        versions' online values are removed in the background (``online_cleanup``), not in this call;
        their offline-store data is kept (training sets and lineage refer to it)."""
        with self._write() as session:
            view = store.require_view(session, name)
            self._refuse_if_referenced(session, name, None, f"delete feature view {name!r}")
            before = store.view_message(view, store.latest_version(session, view))
            store.delete_view(session, view, now_us())
            bump_revision(session)
            _audit(session, actor, "delete", FEATURE_VIEW, name, before, None)

    @staticmethod
    def _require_fits(session: Session, name: str) -> None:
        """INVALID_ARGUMENT (the write rolls back) when a version of view ``name`` would no longer fit one
        listing page as a message: it could then never be sent (a page always carries its first item), so
        the view, and every view listed after it, could not be listed, and the write that made it so was
        committed yet reported RESOURCE_EXHAUSTED."""
        view = store.find_view(session, name)
        if view is None:
            return
        for row in store.versions_of(session, view):
            size = store.view_message(view, row).ByteSize()
            if size > MAX_VIEW_MESSAGE_BYTES:
                raise InvalidArgument(
                    f"feature view {name!r} version {row.version} would take {size:,} bytes as a message;"
                    " its descriptions, tags and validation rules together may take"
                    f" {MAX_VIEW_MESSAGE_BYTES:,} (nothing was changed)"
                )

    def _refuse_if_referenced(self, session: Session, view: str, version: int | None, action: str) -> None:
        holders = [holder for guard in self._guards for holder in guard.references(session, view, version)]
        if holders:
            raise FailedPrecondition(f"cannot {action}: still referenced by {', '.join(holders)}")

    # -- declarative apply ---------------------------------------------------------------------------

    def apply(self, request: pb.ApplyRequest, *, actor: str = ANONYMOUS) -> pb.ApplyResponse:
        """Plans and (unless ``dry_run``) carries out a whole definition set in one transaction; each
        object it changes gets its own audit entry (action ``apply_<plan action>``). A dry run is refused
        as the Apply itself would be: the plan is carried out, checked, then rolled back."""
        try:
            with self._write() as session:
                before = _states(session, request)
                steps = apply_definitions(session, request, now_us())
                # Before the dry run stops: a view too large to list must fail its dry run too, not show
                # a clean plan that the Apply then refuses.
                for step in steps:
                    if step.action != pb.NO_CHANGE and step.kind == FEATURE_VIEW:
                        self._require_fits(session, step.name)
                if request.dry_run:
                    raise _DryRun(steps)
                if any(step.action != pb.NO_CHANGE for step in steps):
                    bump_revision(session)
                for step in steps:
                    if step.action != pb.NO_CHANGE:
                        key = (step.kind, step.name)
                        after = _state(session, *key)
                        action = f"apply_{pb.PlanAction.Name(step.action).lower()}"
                        _audit(session, actor, action, step.kind, step.name, before.get(key), after)
        except _DryRun as dry_run:
            return pb.ApplyResponse(steps=dry_run.steps, applied=False)
        return pb.ApplyResponse(steps=steps, applied=True)

    # -- watch ---------------------------------------------------------------------------------------

    @property
    def sessions(self) -> sessionmaker[Session]:
        """The metadata database's sessions (the watch service reads the database's id through them)."""
        return self._sessions

    def revision(self) -> int:
        with read_session(self._sessions) as session:
            return current_revision(session)

    def snapshot(self) -> pb.RegistrySnapshot:
        """Every entity and every servable (ACTIVE or DEPRECATED) version of every view, read in one
        transaction so that the revision matches the content."""
        with read_session(self._sessions) as session:
            revision = current_revision(session)
            entities = session.scalars(select(EntityRow).order_by(byte_order(EntityRow.name))).all()
            rows = session.execute(
                select(FeatureViewRow, FeatureViewVersionRow)
                .join(FeatureViewVersionRow, FeatureViewVersionRow.view_id == FeatureViewRow.id)
                .where(FeatureViewVersionRow.status.in_([status.value for status in SERVABLE]))
                .order_by(byte_order(FeatureViewRow.name), FeatureViewVersionRow.version)
            ).all()
            return pb.RegistrySnapshot(
                revision=revision,
                entities=[store.entity_message(row) for row in entities],
                views=[store.view_message(view, version) for view, version in rows],
            )


def _audit(
    session: Session,
    actor: str,
    action: str,
    object_type: str,
    object_id: str,
    before: Message | None,
    after: Message | None,
) -> None:
    def state(message: Message | None) -> dict[str, object] | None:
        return None if message is None else MessageToDict(message, preserving_proto_field_name=True)

    record(
        session,
        actor=actor,
        action=action,
        object_type=object_type,
        object_id=object_id,
        before=state(before),
        after=state(after),
    )


def _state(session: Session, kind: str, name: str) -> Message | None:
    """The current state of an object an apply plan step names (``kind`` entity or feature_view)."""
    if kind == ENTITY:
        entity = store.find_entity(session, name)
        return None if entity is None else store.entity_message(entity)
    view = store.find_view(session, name)
    if view is None:
        return None
    versions = store.versions_of(session, view)  # the version Apply compares the file with (apply.py)
    return store.view_message(view, store.latest_servable(versions) or versions[-1])


def _states(session: Session, request: pb.ApplyRequest) -> dict[tuple[str, str], Message | None]:
    """The state before an apply of every object the request names."""
    keys = [(ENTITY, entity.name) for entity in request.entities]
    keys += [(FEATURE_VIEW, view.spec.name) for view in request.views]
    return {key: _state(session, *key) for key in keys}


def _deleted_note(session: Session, name: str) -> str:
    """Where the online cleanup of a deleted view stands, for the answer to a get of its name."""
    states = cleanup_states(session, name)
    if not states:
        return ""
    done = all(finished for _, finished in states)
    versions = ", ".join(str(version) for version, _ in states)
    plural = "s" if len(states) > 1 else ""
    state = "removed" if done else "being removed"
    return f" (deleted; the online values of version{plural} {versions} {state})"


def _entity_for(session: Session, name: str, path: str) -> EntityRow:
    entity = store.find_entity(session, name)
    if entity is None:
        raise InvalidArgument(f"{path}: entity {name!r} not found")
    return entity


def _feature_of(
    features: Mapping[str, pb.Feature], view: FeatureViewRow, version: FeatureViewVersionRow, name: str
) -> pb.Feature:
    feature = features.get(name)
    if feature is None:
        raise NotFound(f"feature view {view.name!r} version {version.version} has no feature {name!r}")
    return feature
