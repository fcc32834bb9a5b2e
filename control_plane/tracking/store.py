"""The experiment-tracking core: experiments, runs, batched metric logging, history, artifacts and the
compare query. Transport-free (proto messages as plain data in and out, :mod:`clients.errors` raised);
the gRPC servicer in :mod:`control_plane.api.tracking` is a thin shell around it.

Every mutation of an experiment or a run (create, status change, parameters, tags, artifacts) is written
to the audit log in the same transaction; metric points are not audit events."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import cast

from sqlalchemy import insert, literal_column, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import tracking_pb2 as pb
from clients.errors import AlreadyExists, InvalidArgument, NotFound
from clients.uris import redact_uri
from control_plane.audit.log import record
from control_plane.db import keyset, pages
from control_plane.db.engine import read_session, write_session
from control_plane.db.strings import byte_order
from control_plane.tracking import batches as batches_module
from control_plane.tracking import senders
from control_plane.tracking.compare import ComparePage, CompareQuery, compare_runs, page_size_of
from control_plane.tracking.filters import Field
from control_plane.tracking.history import MAX_HISTORY_PAGE, HistoryKey, read_page
from control_plane.tracking.metrics import Series, check_key, join_chunks
from control_plane.tracking.records import (
    TERMINAL,
    artifacts_of,
    check_name,
    check_run_values,
    check_time_us,
    check_values,
    experiment_message,
    insert_for,
    now_us,
    refuse_ended,
    refuse_reopening,
    run_message,
    set_status,
    status_name,
)
from control_plane.tracking.run_size import check_run_message
from control_plane.tracking.senders import BatchKey
from control_plane.tracking.tables import (
    ExperimentRow,
    MetricChunkRow,
    ParamRow,
    RunArtifactRow,
    RunRow,
    TagRow,
)

# Newest first; run ids break ties (and make the key unique), so pages are keyset pages.
_RUN_ORDER = (
    keyset.KeyColumn(RunRow.start_time_us, int, descending=True),  # type: ignore[arg-type]
    keyset.KeyColumn(RunRow.run_id, str),  # type: ignore[arg-type]
)
# Experiments are listed by name, which is unique.
_EXPERIMENT_ORDER = (keyset.KeyColumn(byte_order(ExperimentRow.name), str),)
_MAX_EXPERIMENTS_PAGE = 1000
# A GetMetricHistory token's key (history.HistoryKey): points are packed in chunks, not rows, so the page
# is cut in numpy, and these columns serve only to check a returned token's values.
_HISTORY_KEY = tuple(
    keyset.KeyColumn(literal_column(name), int) for name in ("step", "timestamp_us", "chunk", "index")
)


class TrackingStore:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    # Experiments ---------------------------------------------------------------------------------------

    def create_experiment(
        self, name: str, description: str = "", tags: Mapping[str, str] | None = None, *, actor: str
    ) -> pb.Experiment:
        check_name(name, "experiment")
        tags = check_values(tags or {}, "tag")
        pages.check_item(pb.Experiment(name=name, description=description, tags=tags), f"experiment {name!r}")
        try:
            with write_session(self._sessions) as session:
                if session.scalar(select(ExperimentRow.id).where(ExperimentRow.name == name)) is not None:
                    raise AlreadyExists(f"experiment {name!r} already exists")
                row = ExperimentRow(
                    experiment_id=uuid.uuid4().hex,
                    name=name,
                    description=description,
                    tags=tags,
                    created_at_us=now_us(),
                )
                session.add(row)
                session.flush()
                experiment = experiment_message(row)
                after = {"name": name, "description": description, "tags": tags}
                record(
                    session, actor=actor, action="create", object_type="experiment",
                    object_id=row.experiment_id, before=None, after=after,
                )  # fmt: skip
                return experiment
        except IntegrityError:
            # PostgreSQL: another transaction inserted the name between the check and the insert (its
            # row was not committed when the check read). Any other integrity failure stays what it is.
            with read_session(self._sessions) as session:
                taken = session.scalar(select(ExperimentRow.id).where(ExperimentRow.name == name))
            if taken is None:
                raise
            raise AlreadyExists(f"experiment {name!r} already exists") from None

    def get_experiment(self, *, experiment_id: str = "", name: str = "") -> pb.Experiment:
        with read_session(self._sessions) as session:
            return experiment_message(self._experiment_row(session, experiment_id=experiment_id, name=name))

    def list_experiments(self, page_size: int = 0, page_token: str = "") -> tuple[list[pb.Experiment], str]:
        """Experiments by name, a page at a time: up to ``page_size`` (0: no count bound, as the listing
        had none before it was paged) and at most :data:`pages.MAX_PAGE_BYTES` (descriptions and tags
        have no total bound, and the unpaged listing outgrew gRPC's 4 MiB), always at least one."""
        if not 0 <= page_size <= _MAX_EXPERIMENTS_PAGE:
            raise InvalidArgument(
                f"page_size must be 0 (no bound) to {_MAX_EXPERIMENTS_PAGE}, got {page_size}"
            )
        last = keyset.decode(page_token, "ListExperiments", "", _EXPERIMENT_ORDER, scope_name="listing")
        query = select(ExperimentRow).order_by(*keyset.order_by(_EXPERIMENT_ORDER))
        if last is not None:
            query = query.where(keyset.after(_EXPERIMENT_ORDER, last))
        if page_size:
            query = query.limit(page_size + 1)
        with read_session(self._sessions) as session:
            rows = session.scalars(query).all()
            candidates = rows[:page_size] if page_size else rows
            experiments = list(pages.fitting(experiment_message(row) for row in candidates))
        if len(experiments) == len(rows):
            return experiments, ""
        return experiments, keyset.encode("ListExperiments", "", [experiments[-1].name])

    @staticmethod
    def _experiment_row(session: Session, *, experiment_id: str = "", name: str = "") -> ExperimentRow:
        if experiment_id:
            row = session.scalar(select(ExperimentRow).where(ExperimentRow.experiment_id == experiment_id))
            if row is None:
                raise NotFound(f"experiment id {experiment_id!r} not found")
            return row
        if name:
            row = session.scalar(select(ExperimentRow).where(ExperimentRow.name == name))
            if row is None:
                raise NotFound(f"experiment {name!r} not found")
            return row
        raise InvalidArgument("an experiment id or name is required")

    # Runs ----------------------------------------------------------------------------------------------

    def create_run(
        self,
        experiment_id: str,
        name: str = "",
        params: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
        start_time_us: int = 0,
        *,
        actor: str,
    ) -> pb.Run:
        if not experiment_id:
            raise InvalidArgument("an experiment_id is required")
        params = check_values(params or {}, "parameter")
        tags = check_values(tags or {}, "tag")
        run_id = uuid.uuid4().hex
        check_run_values(run_id, params, tags)
        name = check_name(name, "run") if name else run_id[:8]
        start_time_us = check_time_us(start_time_us, "start_time_us") or now_us()
        with write_session(self._sessions) as session:
            experiment = session.execute(
                select(ExperimentRow.id, ExperimentRow.name).where(
                    ExperimentRow.experiment_id == experiment_id
                )
            ).one_or_none()
            if experiment is None:
                raise NotFound(f"experiment id {experiment_id!r} not found")
            # Core statements, not the unit of work: run creation is on the hot path of sweeps.
            run_pk = session.execute(
                insert(RunRow)
                .values(
                    run_id=run_id, experiment_pk=experiment.id, name=name, status="RUNNING",
                    start_time_us=start_time_us, end_time_us=0,
                )
                .returning(RunRow.id)
            ).scalar_one()  # fmt: skip
            for table, values in ((ParamRow, params), (TagRow, tags)):
                if values:
                    rows = [{"run_pk": run_pk, "key": key, "value": value} for key, value in values.items()]
                    session.execute(insert(table), rows)
            after = {"experiment": experiment.name, "name": name, "params": params, "tags": tags}
            record(
                session, actor=actor, action="create", object_type="run", object_id=run_id,
                before=None, after=after,
            )  # fmt: skip
        return pb.Run(
            run_id=run_id, experiment_id=experiment_id, name=name, status=pb.RUN_STATUS_RUNNING,
            start_time_us=start_time_us, params=params, tags=tags,
        )  # fmt: skip

    def get_run(self, run_id: str) -> pb.Run:
        with read_session(self._sessions) as session:
            row, experiment_id = self._run_row(session, run_id)
            return run_message(session, row, experiment_id)

    def update_run(self, run_id: str, status: int, end_time_us: int = 0, *, actor: str) -> pb.Run:
        new_status = status_name(status)
        check_time_us(end_time_us, "end_time_us")
        with write_session(self._sessions) as session:
            # Locked: the audit entry's "before" is the status read here, which must be the one the
            # last concurrent writer committed (on PostgreSQL two changes both recorded the same before).
            row, experiment_id = self._run_row(session, run_id, lock=True)
            refuse_reopening(row.run_id, row.status, new_status)
            set_status(session, row, new_status, end_time_us, actor)
            return run_message(session, row, experiment_id)

    def end_run_once(self, run_id: str, status: int, end_time_us: int, *, actor: str) -> bool:
        """Ends run ``run_id`` with ``status`` at ``end_time_us`` unless it already has that status; True
        when this call ended it. For a caller that may end the same run twice, or from two places at once
        (a job's run, ended by the job's end and by the sweep that mends a crash in between): the run
        changes, and is audited, once. An end before the run's start is taken as its start: the job's
        end is stamped on the control plane before the run it creates is (a job cancelled while its run
        was being created), and refusing it left that run RUNNING for ever."""
        new_status = status_name(status)
        check_time_us(end_time_us, "end_time_us")
        with write_session(self._sessions) as session:
            row, _ = self._run_row(session, run_id, lock=True)  # locked for the audit's "before", as above
            end = max(end_time_us, row.start_time_us) if end_time_us else 0
            return set_status(session, row, new_status, end, actor, once=True)

    def refuse_ended(self, run_id: str, *, actor: str, write: str) -> None:
        """FAILED_PRECONDITION (:class:`~control_plane.tracking.records.RunEnded`) when run ``run_id`` has
        ended: for a job token's write that names no run and so has no run row to check in its own
        transaction (``Artifacts/Upload``), checked before it starts. One indexed read; a missing run
        passes (the token's write is refused, or not, by what it then names)."""
        status = self._status_of(run_id)
        if status is not None:
            refuse_ended(run_id, status, actor, write)

    def has_ended(self, run_id: str) -> bool:
        """Whether run ``run_id`` has ended (FINISHED, FAILED or KILLED); a missing run has not."""
        return self._status_of(run_id) in TERMINAL

    def _status_of(self, run_id: str) -> str | None:
        with read_session(self._sessions) as session:
            return session.scalar(select(RunRow.status).where(RunRow.run_id == run_id))

    def list_runs(
        self, experiment_id: str, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[pb.Run], str]:
        """Runs newest first, a page at a time; the token carries the last run's (start time, run id),
        so runs started or removed while a client pages neither repeat nor shift a page. A page also
        ends where its runs fill :data:`pages.MAX_PAGE_BYTES` (100 runs of large parameters took more
        than gRPC's 4 MiB, and the listing failed for good), always after at least one run."""
        size = page_size_of(page_size)
        last = keyset.decode(page_token, "ListRuns", experiment_id, _RUN_ORDER, scope_name="experiment")
        with read_session(self._sessions) as session:
            experiment = self._experiment_row(session, experiment_id=experiment_id)
            query = (
                select(RunRow)
                .where(RunRow.experiment_pk == experiment.id)
                .order_by(*keyset.order_by(_RUN_ORDER))
                .limit(size + 1)
            )
            if last is not None:
                query = query.where(keyset.after(_RUN_ORDER, last))
            rows = session.scalars(query).all()
            built = (run_message(session, row, experiment.experiment_id) for row in rows[:size])
            runs = list(pages.fitting(built))
            if len(rows) <= len(runs):
                return runs, ""
            end = rows[len(runs) - 1]
            return runs, keyset.encode("ListRuns", experiment_id, [end.start_time_us, end.run_id])

    @staticmethod
    def _run_row(session: Session, run_id: str, *, lock: bool = False) -> tuple[RunRow, str]:
        """The run and its experiment's id. With ``lock``, the run's row is locked to the end of the
        write transaction, as by every write that changes the run's values or artifacts (LogBatch's too,
        :mod:`~control_plane.tracking.batches`); the experiment's row is not, so its other runs stay
        free."""
        query = (
            select(RunRow, ExperimentRow.experiment_id)
            .join(ExperimentRow, ExperimentRow.id == RunRow.experiment_pk)
            .where(RunRow.run_id == run_id)
        )
        if not run_id:  # malformed, as an empty experiment id is (not a run that happens to be missing)
            raise InvalidArgument("a run_id is required")
        if lock:
            query = query.with_for_update(of=RunRow).execution_options(populate_existing=True)
        found = session.execute(query).one_or_none()
        if found is None:
            raise NotFound(f"run {run_id!r} not found")
        return found[0], found[1]

    # Metrics, parameters and tags in batches ------------------------------------------------------------

    def log_batch(
        self,
        batches: Sequence[pb.RunBatch],
        *,
        actor: str,
        key: BatchKey | None = None,
        keep_ended: bool = False,
    ) -> int | None:
        """Writes every batch in one transaction (all or nothing); returns the metric points written.
        Everything is validated before the transaction starts. With ``key``, the request is written at
        most once: None (nothing written) when its key was applied before (see :mod:`senders`). With
        ``keep_ended`` (a job token's call), a request naming a run that has ended is refused with
        FAILED_PRECONDITION (:class:`~control_plane.tracking.records.RunEnded`) and nothing of it is
        written. A retry of a request written before the run ended is still answered as applied."""
        prepared = batches_module.prepare(batches)
        with write_session(self._sessions) as session:
            if key is not None and not senders.claim(session, key, now_us()):
                return None
            return batches_module.write(session, prepared, actor, keep_ended=keep_ended)

    def metric_history(
        self, run_id: str, key: str, page_size: int = 0, page_token: str = ""
    ) -> tuple[Series, str]:
        """The points of one metric and the next page's token. With neither ``page_size`` nor
        ``page_token``: every point, and "" (the reply of clients that predate paging)."""
        check_key(key, "metric")
        paged = page_size != 0 or page_token != ""
        if page_size < 0:
            raise InvalidArgument(f"page_size must not be negative, got {page_size}")
        scope = f"{run_id}/{key}"
        after = keyset.decode(page_token, "GetMetricHistory", scope, _HISTORY_KEY, scope_name="run or metric")
        with read_session(self._sessions) as session:
            run, _ = self._run_row(session, run_id)
            where = (MetricChunkRow.run_pk == run.id, MetricChunkRow.key == key)
            columns = (MetricChunkRow.steps, MetricChunkRow.values, MetricChunkRow.timestamps_us)
            if not paged:
                chunks = session.execute(select(*columns).where(*where).order_by(MetricChunkRow.id)).all()
                return join_chunks(chunks, key), ""
            start = None if after is None else cast(HistoryKey, tuple(after))
            size = min(page_size or MAX_HISTORY_PAGE, MAX_HISTORY_PAGE)
            page = read_page(session, run.id, key, start, size)
        end = page.end
        return page.series, "" if end is None else keyset.encode("GetMetricHistory", scope, list(end))

    # Artifacts -----------------------------------------------------------------------------------------

    def log_artifact(
        self,
        run_id: str,
        name: str,
        sha256: str,
        size: int,
        uri: str,
        *,
        actor: str,
        keep_ended: bool = False,
    ) -> pb.RunArtifact:
        """Records artifact ``name`` of run ``run_id`` (replacing one of that name). With ``keep_ended`` (a
        job token's call), FAILED_PRECONDITION (:class:`~control_plane.tracking.records.RunEnded`) when
        the run has ended, checked on the run's locked row, so not after an end that committed first."""
        check_key(name, "artifact")
        uri = redact_uri(uri)  # a kept record never holds credentials
        with write_session(self._sessions) as session:
            # Locked before the read below: on PostgreSQL two logs under one name both read the same
            # artifact as replaced (READ COMMITTED), and one replacement was missing from the audit log.
            run, _ = self._run_row(session, run_id, lock=True)
            if keep_ended:
                refuse_ended(run_id, run.status, actor, "LogArtifact")
            # The artifact this one replaces, for the audit entry: a replaced checksum is a model change
            # too, and the entry said only what came after.
            replaced = session.execute(
                select(RunArtifactRow.sha256, RunArtifactRow.size).where(
                    (RunArtifactRow.run_pk == run.id) & (RunArtifactRow.name == name)
                )
            ).first()
            logged_at_us = now_us()
            values = {
                "run_pk": run.id,
                "name": name,
                "sha256": sha256,
                "size": size,
                "uri": uri,
                "logged_at_us": logged_at_us,
            }
            statement = insert_for(session)(RunArtifactRow.__table__).values(**values)
            columns = ("sha256", "size", "uri", "logged_at_us")
            statement = statement.on_conflict_do_update(
                index_elements=["run_pk", "name"], set_={c: getattr(statement.excluded, c) for c in columns}
            )
            session.execute(statement)
            check_run_message(session, {run.id: run_id})  # a new artifact grows the run's message
            after = {"artifact": name, "sha256": sha256, "size": size}
            record(
                session,
                actor=actor,
                action="update",
                object_type="run",
                object_id=run_id,
                before=None
                if replaced is None
                else {"artifact": name, "sha256": replaced.sha256, "size": replaced.size},
                after=after,
            )
            return pb.RunArtifact(name=name, sha256=sha256, size=size, uri=uri, logged_at_us=logged_at_us)

    def list_artifacts(self, run_id: str) -> list[pb.RunArtifact]:
        with read_session(self._sessions) as session:
            run, _ = self._run_row(session, run_id)
            return artifacts_of(session, run.id)

    # Compare -------------------------------------------------------------------------------------------

    def compare(
        self,
        experiment_id: str,
        metrics: Sequence[Field] = (),
        params: Sequence[str] = (),
        filter: str = "",
        order_by: Sequence[str] = (),
        page_size: int = 0,
        page_token: str = "",
    ) -> ComparePage:
        with read_session(self._sessions) as session:
            experiment = self._experiment_row(session, experiment_id=experiment_id)
            query = CompareQuery(experiment.id, metrics, params, filter, order_by, page_size, page_token)
            return compare_runs(session, query)
