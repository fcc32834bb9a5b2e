"""The model registry core: registered models, their numbered versions, approval and aliases.
Transport-free and synchronous (the gRPC servicer calls it from worker threads): plain values and wire
messages in, wire messages out, ``clients.errors`` exceptions for every refusal. Every mutation is
appended to the audit log in its own transaction, with the caller as actor. :class:`ModelRegistry` is the
entry point and owns the transactions; what each operation writes lives with its concern: model and version
rows in :mod:`registration`, aliases in :mod:`aliases`, approval in :mod:`review`, cached reads in
:mod:`reads`, lineage in :mod:`lineage`.

Version numbers: a registration locks its model's row (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite
write transactions hold the database write lock from their first statement) and increments the row's
``latest_version``, so concurrent registrations get consecutive numbers; the unique (model, version)
constraint backs this up, and the rare race of two registrations creating the same new model is
retried."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import model_registry_pb2 as pb
from clients.errors import AlreadyExists, FailedPrecondition, NotFound
from control_plane.artifacts.store import ArtifactStore
from control_plane.audit.log import record
from control_plane.db import pages
from control_plane.db.engine import read_session, write_session
from control_plane.db.revision import lock_registry
from control_plane.db.strings import byte_order
from control_plane.features.validation import check_name
from control_plane.model_registry import aliases, lineage, messages
from control_plane.model_registry.aliases import remove_alias
from control_plane.model_registry.approval import Approval, from_proto
from control_plane.model_registry.guards import ModelReferenceGuard, ModelUser
from control_plane.model_registry.model_classes import check_same_classes, classes_in_artifact
from control_plane.model_registry.queries import find_model, require_model, require_version
from control_plane.model_registry.reads import CachedReads, touch
from control_plane.model_registry.references import check_feature_refs, check_trained_on, require_run
from control_plane.model_registry.registration import insert_model, insert_version
from control_plane.model_registry.review import record_decision, require_deployable, verify_artifact
from control_plane.model_registry.tables import (
    ModelAliasRow,
    ModelVersionFeatureRow,
    ModelVersionRow,
    RegisteredModelTombstoneRow,
)
from control_plane.model_registry.validation import (
    FeatureRef,
    check_model_name,
    check_reason,
    check_tags,
    check_version,
    check_version_request,
)
from control_plane.offline.datasets import read_dataset_record
from control_plane.offline.store import OfflineStore
from control_plane.offline.store_errors import store_errors
from control_plane.tracking.records import refuse_ended

#: Attempts of a registration that lost a race to create the same new model.
_CREATE_ATTEMPTS = 5


class ModelRegistry:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        artifacts: ArtifactStore,
        guards: Sequence[ModelReferenceGuard] = (),
        offline: OfflineStore | None = None,
    ) -> None:
        self._sessions = sessions
        self.artifacts = artifacts
        self._guards = list(guards)
        #: Where training sets are recorded (``_datasets/<hash>.json``): lineage reads what a version's
        #: dataset was built from there. None: lineage shows the hash and query only.
        self._offline = offline
        self._reads = CachedReads(sessions)

    def add_guard(self, guard: ModelReferenceGuard) -> None:
        """Plugs in something (deployments) that uses model versions and may refuse their deletion."""
        self._guards.append(guard)

    def users_of(self, session: Session, model: str, version: int | None) -> list[ModelUser]:
        return [user for guard in self._guards for user in guard.references(session, model, version)]

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with read_session(self._sessions) as session:
            yield session

    # -- registered models ---------------------------------------------------------------------------

    def create_model(
        self, name: str, description: str = "", tags: Mapping[str, str] | None = None, *, actor: str
    ) -> pb.RegisteredModel:
        check_model_name(name, "name")
        tags = check_tags(dict(tags or {}))
        item = pb.RegisteredModel(name=name, description=description, tags=tags)
        pages.check_item(item, f"registered model {name!r}")
        try:
            with write_session(self._sessions) as session:
                if find_model(session, name) is not None:
                    raise AlreadyExists(f"registered model {name!r} already exists")
                row = insert_model(session, name, description, tags)
                message = messages.model_message(row, {})
                record(
                    session,
                    actor=actor,
                    action="create",
                    object_type="registered_model",
                    object_id=name,
                    before=None,
                    after=messages.audit_state(message),
                )
                return message
        except IntegrityError:  # another transaction created it between the check and the insert
            raise AlreadyExists(f"registered model {name!r} already exists") from None

    def get_model(self, name: str) -> pb.RegisteredModel:
        return self._reads.get_model(name)

    def list_models(
        self,
        name_prefix: str = "",
        tags: Mapping[str, str] | None = None,
        page_size: int = 0,
        page_token: str = "",
    ) -> tuple[list[pb.RegisteredModel], str]:
        """Models ordered by name, ``page_size`` at a time, and the next page's token (empty on the
        last page); only those whose name starts with ``name_prefix`` and that carry every tag."""
        return self._reads.list_models(name_prefix, tags or {}, page_size, page_token)

    def delete_model(self, name: str, *, actor: str) -> None:
        """Deletes a registered model that has no versions left."""
        with write_session(self._sessions) as session:
            row = require_model(session, name, lock=True)
            count = session.scalar(select(func.count()).where(ModelVersionRow.model_id == row.id)) or 0
            if count:
                raise FailedPrecondition(
                    f"cannot delete registered model {name!r}: it still has {count} version(s);"
                    " delete them first"
                )
            before = messages.audit_state(messages.model_message(row, {}))
            # Its numbers are never given out again (``RegisteredModelTombstoneRow``).
            session.merge(RegisteredModelTombstoneRow(name=name, last_version=row.latest_version))
            session.delete(row)
            record(
                session,
                actor=actor,
                action="delete",
                object_type="registered_model",
                object_id=name,
                before=before,
                after=None,
            )

    # -- versions ------------------------------------------------------------------------------------

    def create_version(
        self, request: pb.CreateModelVersionRequest, *, actor: str, keep_ended: bool = False
    ) -> pb.ModelVersion:
        """Registers the next version of ``request.model_name``. The run, the artifact and every
        feature-view version must exist (``NotFound`` otherwise). The version exists only once this
        transaction commits: an artifact uploaded by a client that crashed before registering leaves
        an unreferenced blob, never a version without its artifact. With ``keep_ended`` (a job token's
        call), FAILED_PRECONDITION (:class:`~control_plane.tracking.records.RunEnded`) when the run has
        ended, read on the run's row locked in this transaction: nothing is registered. A version naming a
        training set whose record the offline store holds must name only view versions and features that set
        was read from (FAILED_PRECONDITION, :func:`~references.check_trained_on`). A signature listing
        classes other than its ONNX artifact's ``aether.classes`` is INVALID_ARGUMENT
        (:func:`~model_classes.check_same_classes`)."""
        refs = check_version_request(request)
        artifact = self.artifacts.stat(request.artifact_sha256)
        if request.signature.classes:  # read before the write transaction opens: a file, not a row
            declared = classes_in_artifact(self.artifacts.open_verified(request.artifact_sha256))
            check_same_classes(list(request.signature.classes), declared)
        # Read before the write transaction opens: the record is a file in the offline store, not a row.
        trained = self._dataset_record(request.dataset.hash)
        if trained is not None:
            check_trained_on(refs, trained, request.dataset.hash)
        for attempt in range(_CREATE_ATTEMPTS):
            try:
                return self._create_version(request, refs, artifact.uri, artifact.size, actor, keep_ended)
            except IntegrityError:
                # Only a new model created concurrently by two registrations gets here: the loser
                # retries and then finds the model (and its lock) in place.
                if attempt == _CREATE_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def _create_version(
        self,
        request: pb.CreateModelVersionRequest,
        refs: list[FeatureRef],
        uri: str,
        size: int,
        actor: str,
        keep_ended: bool,
    ) -> pb.ModelVersion:
        name = request.model_name
        with write_session(self._sessions) as session:
            if refs:
                # Serializes with the feature registry's writers: a view version cannot be retired or
                # deleted between the check below and this registration's commit.
                lock_registry(session)
            model = find_model(session, name, lock=True)
            created = model is None
            if model is None:
                if not request.create_model:
                    raise NotFound(f"registered model {name!r} not found (create it, or set create_model)")
                model = insert_model(session, name, "", {})
            if request.run_id:
                status = require_run(session, request.run_id, lock=keep_ended)
                if keep_ended:
                    refuse_ended(request.run_id, status, actor, "CreateModelVersion")
            check_feature_refs(session, refs)
            # Audited only now: the audit head is the last lock a writer takes (control_plane/audit/log.py).
            # Appended before the run's row was locked, it deadlocked on PostgreSQL with a LogBatch or
            # UpdateRun of that run, which lock the run's row first and the audit head last.
            if created:
                record(
                    session,
                    actor=actor,
                    action="create",
                    object_type="registered_model",
                    object_id=name,
                    before=None,
                    after=messages.audit_state(messages.model_message(model, {})),
                )
            return insert_version(session, model, request, refs, uri, size, actor)

    def get_version(self, name: str, version: int = 0, alias: str = "") -> pb.ModelVersion:
        """Version ``version``, or the one ``alias`` points at, or (neither given) the latest."""
        return self._reads.get_version(name, version, alias)

    def version_in(self, session: Session, name: str, version: int = 0, alias: str = "") -> pb.ModelVersion:
        """:meth:`get_version` in the caller's transaction (see :meth:`CachedReads.version_in`)."""
        return self._reads.version_in(session, name, version, alias)

    def list_versions(
        self,
        name: str,
        status: pb.ApprovalStatus = pb.APPROVAL_STATUS_UNSPECIFIED,
        page_size: int = 0,
        page_token: str = "",
    ) -> tuple[list[pb.ModelVersion], str]:
        """Versions ascending, ``page_size`` at a time, and the next page's token (empty on the last)."""
        return self._reads.list_versions(name, status, page_size, page_token)

    def review(
        self, name: str, version: int, decision: pb.ApprovalStatus, reason: str, *, actor: str
    ) -> pb.ModelVersion:
        """Approves or rejects a pending version (see :mod:`approval` for the rules). The reason is at most
        :data:`~validation.MAX_REASON_LENGTH` characters, and the version's message with it must still fit
        :data:`~control_plane.db.pages.MAX_GROWN_ITEM_BYTES`: INVALID_ARGUMENT otherwise, checked before
        the audit entry is written, so a refused review changes nothing (an oversized one used to commit
        and then fail as the reply, leaving a version no read could return).

        Approving a pending version first reads its whole artifact and checks it against its sha256:
        FAILED_PRECONDITION naming the artifact when it is missing or does not verify, since an approval
        is what lets a version deploy (:meth:`can_deploy`). The artifact is read before the write
        transaction opens: hashing a large file inside it would hold SQLite's write lock meanwhile. A
        version's artifact never changes, so nothing the transaction then sees can make the check stale;
        only the stored bytes can rot later, which the data plane's verification at load catches."""
        target = from_proto(decision, "decision")
        check_reason(reason)
        if target == Approval.APPROVED:
            verify_artifact(self._sessions, self.artifacts, name, version)
        with write_session(self._sessions) as session:
            return record_decision(session, name, version, target, reason, actor=actor)

    def delete_version(self, name: str, version: int, *, actor: str) -> None:
        """Deletes a version (its aliases go with it); refused while anything uses it."""
        with write_session(self._sessions) as session:
            model = require_model(session, name, lock=True)
            # Locked before it is read, as a review locks it: read unlocked on PostgreSQL, a version whose
            # approval was committing was read pending, and its delete's audit entry said so.
            row = require_version(session, model, version, lock=True)
            users = self.users_of(session, name, version)
            if users:
                raise FailedPrecondition(
                    f"cannot delete model {name!r} version {version}: still used by "
                    + ", ".join(user.describe() for user in users)
                )
            before = messages.audit_state(messages.version_messages(session, name, [row])[0])
            # Each alias goes with its own audit entry, as every alias change has: one following an alias
            # (``champion``) through the log read it as still naming the deleted version.
            version_aliases = session.scalars(
                select(ModelAliasRow)
                .where(ModelAliasRow.model_version_id == row.id)
                .order_by(byte_order(ModelAliasRow.alias))
            ).all()
            for alias in version_aliases:
                remove_alias(session, model, alias, actor)
            session.flush()
            session.execute(
                delete(ModelVersionFeatureRow).where(ModelVersionFeatureRow.model_version_id == row.id)
            )
            session.delete(row)
            touch(model)
            record(
                session,
                actor=actor,
                action="delete",
                object_type="model_version",
                object_id=f"{name}/{version}",
                before=before,
                after=None,
            )

    # -- aliases and deployment check ----------------------------------------------------------------

    def set_alias(self, name: str, alias: str, version: int, *, actor: str) -> pb.ModelVersion:
        """Points ``alias`` at ``version`` (see :func:`aliases.set_alias` for the bounds)."""
        with write_session(self._sessions) as session:
            return aliases.set_alias(session, name, alias, version, actor=actor)

    def delete_alias(self, name: str, alias: str, *, actor: str) -> None:
        with write_session(self._sessions) as session:
            aliases.delete_alias(session, name, alias, actor=actor)

    def clear_alias(self, name: str, alias: str, version: int, *, actor: str) -> bool:
        """Removes ``alias`` when it still points at ``version``; whether it did. Checked and removed in
        one transaction, so an alias another caller moved to a newer version meanwhile stays."""
        with write_session(self._sessions) as session:
            return aliases.clear_alias(session, name, alias, version, actor=actor)

    def can_deploy(self, name: str, version: int) -> pb.ModelVersion:
        """The version when it may be deployed; ``FailedPrecondition`` unless it is Approved.

        The artifact is not read here: it was read whole and verified when the version was approved
        (:meth:`review`), and this check is called often, by every deployment's write (inside its
        transaction) and by CheckDeployable. Bytes that rot or go missing after the approval are caught
        where they are used: the data plane verifies every artifact against its sha256 as it loads it and
        answers DATA_LOSS (or NOT_FOUND) instead of serving it."""
        with self._read() as session:
            return self.deployable_in(session, name, version)

    def deployable_in(self, session: Session, name: str, version: int) -> pb.ModelVersion:
        """:meth:`can_deploy` in the caller's transaction: a deployment's write holds its connection and
        its lock while it checks, so it must not wait for another connection from the pool."""
        return require_deployable(self.version_in(session, name, check_version(version)))

    # -- lineage -------------------------------------------------------------------------------------

    def get_lineage(self, name: str, version: int) -> pb.Lineage:
        with self._read() as session:
            model = require_model(session, name)
            found = lineage.lineage(session, self.users_of, model, require_version(session, model, version))
        # Outside the transaction: the record is a file in the offline store, not a row.
        if self._offline is not None and found.dataset.hash:
            lineage.add_materialized(found, self._dataset_record(found.dataset.hash))
        return found

    def _dataset_record(self, dataset_hash: str) -> dict[str, Any] | None:
        """The offline store's record of training set ``dataset_hash``; None without an offline store, a
        hash, or a record of it (built with ``record=False``, or against another offline root)."""
        if self._offline is None or not dataset_hash:
            return None
        with store_errors(self._offline.root, f"read the record of dataset {dataset_hash}"):
            try:
                return read_dataset_record(self._offline, dataset_hash)
            except NotFound:
                return None

    def find_usages(self, view: str, version: int | None = None) -> list[pb.FeatureUsage]:
        """Model versions using feature view ``view`` at ``version`` (any version when None).
        INVALID_ARGUMENT for an empty or malformed view name (as for a model name, checked before any
        query: no view can have it), NOT_FOUND for a well-formed name no view has."""
        check_name(view, "feature_view", "feature view")
        if version is not None:
            check_version(version, "version", "a feature view version")
        with self._read() as session:
            return lineage.usages(session, self.users_of, view, version)
