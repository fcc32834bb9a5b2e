"""``LogBatch``: metric points, parameters, tags and run ends of many runs written in one transaction.

The request is validated completely before the transaction starts (so a bad value costs no write lock);
then all chunk rows go in one multi-row insert, all (run, key) summaries in one upsert, and only runs
whose parameters, tags or status change get further statements and an audit entry."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from clients.aether.v1 import tracking_pb2 as pb
from clients.errors import AlreadyExists, InvalidArgument, NotFound
from control_plane.audit.log import record
from control_plane.tracking.metrics import Series, Summary, insert_chunks, upsert_summaries
from control_plane.tracking.records import (
    check_name,
    check_values,
    insert_for,
    now_us,
    set_status,
    status_name,
)
from control_plane.tracking.tables import ExperimentRow, ParamRow, RunRow, TagRow

_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class RunStartData:
    experiment_id: str
    name: str
    params: dict[str, str]
    tags: dict[str, str]
    start_time_us: int


@dataclass(frozen=True)
class PreparedBatch:
    run_id: str
    start: RunStartData | None
    series: list[Series]
    params: dict[str, str]
    tags: dict[str, str]
    end_status: str | None
    end_time_us: int


def prepare(batches: Sequence[pb.RunBatch]) -> list[PreparedBatch]:
    """Validates and converts every batch (INVALID_ARGUMENT naming the metric, parameter or tag)."""
    received_us = now_us()
    prepared = []
    for batch in batches:
        if not batch.run_id:
            raise InvalidArgument("a run batch needs a run_id")
        series = [Series.of(m.key, m.values, m.steps, m.timestamps_us, received_us) for m in batch.metrics]
        end = status_name(batch.end.status) if batch.HasField("end") else None
        prepared.append(
            PreparedBatch(
                run_id=batch.run_id,
                start=_start_of(batch, received_us) if batch.HasField("start") else None,
                series=series,
                params=check_values(batch.params, "parameter"),
                tags=check_values(batch.tags, "tag"),
                end_status=end,
                end_time_us=batch.end.end_time_us,
            )
        )
    return prepared


def _start_of(batch: pb.RunBatch, received_us: int) -> RunStartData:
    if not _RUN_ID.match(batch.run_id):
        raise InvalidArgument(f"run id {batch.run_id!r} of a started run must be 32 lowercase hex digits")
    start = batch.start
    return RunStartData(
        experiment_id=start.experiment_id,
        name=check_name(start.name, "run") if start.name else batch.run_id[:8],
        params=check_values(start.params, "parameter"),
        tags=check_values(start.tags, "tag"),
        start_time_us=start.start_time_us or received_us,
    )


def _create_started(session: Session, batches: Sequence[PreparedBatch], actor: str) -> None:
    """Creates the runs that batches start (all in a few multi-row statements), skipping those that exist."""
    starts = {batch.run_id: batch.start for batch in batches if batch.start is not None}
    if not starts:
        return
    existing = dict(
        session.execute(
            select(RunRow.run_id, ExperimentRow.experiment_id)
            .join(ExperimentRow, ExperimentRow.id == RunRow.experiment_pk)
            .where(RunRow.run_id.in_(sorted(starts)))
        ).all()
    )
    for run_id, experiment_id in existing.items():
        if experiment_id != starts[run_id].experiment_id:
            raise AlreadyExists(f"run {run_id!r} already exists in another experiment")
    new = {run_id: start for run_id, start in starts.items() if run_id not in existing}
    if not new:
        return
    experiments = {
        row.experiment_id: row
        for row in session.execute(
            select(ExperimentRow.id, ExperimentRow.experiment_id, ExperimentRow.name).where(
                ExperimentRow.experiment_id.in_(sorted({start.experiment_id for start in new.values()}))
            )
        )
    }
    for start in new.values():
        if start.experiment_id not in experiments:
            raise NotFound(f"experiment id {start.experiment_id!r} not found")
    session.execute(
        insert(RunRow),
        [
            {
                "run_id": run_id, "experiment_pk": experiments[start.experiment_id].id, "name": start.name,
                "status": "RUNNING", "start_time_us": start.start_time_us, "end_time_us": 0,
            }
            for run_id, start in new.items()
        ],
    )  # fmt: skip
    pks = dict(session.execute(select(RunRow.run_id, RunRow.id).where(RunRow.run_id.in_(sorted(new)))).all())
    for table, attribute in ((ParamRow, "params"), (TagRow, "tags")):
        rows = [
            {"run_pk": pks[run_id], "key": key, "value": value}
            for run_id, start in new.items()
            for key, value in getattr(start, attribute).items()
        ]
        if rows:
            session.execute(insert(table), rows)
    for run_id, start in new.items():
        after = {
            "experiment": experiments[start.experiment_id].name,
            "name": start.name,
            "params": start.params,
            "tags": start.tags,
        }
        record(
            session,
            actor=actor,
            action="create",
            object_type="run",
            object_id=run_id,
            before=None,
            after=after,
        )


def write(session: Session, batches: Sequence[PreparedBatch], actor: str) -> int:
    """Writes prepared batches inside the caller's write transaction; returns the points written."""
    _create_started(session, batches, actor)
    wanted = sorted({batch.run_id for batch in batches})
    runs = {row.run_id: row for row in session.scalars(select(RunRow).where(RunRow.run_id.in_(wanted)))}
    if missing := [run_id for run_id in wanted if run_id not in runs]:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise NotFound(f"run {missing[0]!r} not found{more}")
    chunks: list[dict[str, object]] = []
    summaries: dict[tuple[int, str], Summary] = {}
    points = 0
    for batch in batches:
        run_pk = runs[batch.run_id].id
        for series in batch.series:
            if not len(series):
                continue
            chunks.append({"run_pk": run_pk, **series.chunk_columns()})
            summary = Summary.of(series)
            previous = summaries.get((run_pk, series.key))
            summaries[(run_pk, series.key)] = previous.merge(summary) if previous else summary
            points += len(series)
    insert_chunks(session, chunks)
    upsert_summaries(session, summaries)
    for batch in batches:
        run = runs[batch.run_id]
        if batch.params or batch.tags:
            _write_params_and_tags(session, run, batch.params, batch.tags, actor)
        if batch.end_status is not None:
            set_status(session, run, batch.end_status, batch.end_time_us, actor)
    return points


def _write_params_and_tags(
    session: Session, run: RunRow, params: dict[str, str], tags: dict[str, str], actor: str
) -> None:
    existing = dict(
        session.execute(
            select(ParamRow.key, ParamRow.value).where(
                ParamRow.run_pk == run.id, ParamRow.key.in_(sorted(params))
            )
        ).all()
    )
    for key, value in params.items():
        if key in existing and existing[key] != value:
            raise InvalidArgument(
                f"parameter {key!r} of run {run.run_id} is already {existing[key]!r} and parameters are "
                f"immutable (got {value!r})"
            )
    new_params = {key: value for key, value in params.items() if key not in existing}
    if new_params:
        session.execute(
            insert(ParamRow),
            [{"run_pk": run.id, "key": key, "value": value} for key, value in new_params.items()],
        )
    if tags:
        statement = insert_for(session)(TagRow.__table__)
        statement = statement.on_conflict_do_update(
            index_elements=["run_pk", "key"], set_={"value": statement.excluded.value}
        )
        session.execute(
            statement, [{"run_pk": run.id, "key": key, "value": value} for key, value in tags.items()]
        )
    if new_params or tags:
        record(
            session, actor=actor, action="update", object_type="run", object_id=run.run_id,
            before=None, after={"params": new_params, "tags": tags},
        )  # fmt: skip
