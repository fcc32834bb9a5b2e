"""A run must stay readable: GetRun answers it whole in one message, and ListRuns at least one run per page,
within gRPC's default 4 MiB receive limit (which the SDK and other clients keep).

Its parameters and tags are bounded on their own (``clients.tracking_rules.MAX_RUN_VALUES_BYTES``, 3.5 MiB),
but a run also carries one summary per metric key it ever logged and one entry per artifact, and nothing
bounded those: a run at the parameter bound that then logged some 3,000 metrics of 100-character names was
stored, and no Get or List could return it again (RESOURCE_EXHAUSTED on the client, for good).
:func:`check_run_message` refuses, with INVALID_ARGUMENT and nothing written, the request that would take a
run's whole message past :data:`MAX_RUN_MESSAGE_BYTES`: it is called, on what the request has written, for
every run a LogBatch grows (points, parameters, tags, a start) and for LogArtifact. Whoever calls it holds the
run's row lock (``FOR UPDATE``), so on PostgreSQL two concurrent requests cannot each pass on what the other
has not committed yet.

It runs in every LogBatch, so its common case is one statement for all the request's runs, indexed
aggregates per run: an upper bound of each message's bytes, from the byte lengths of the stored texts and a
bound per entry. Only a run whose bound
passes the limit has its message built and measured.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sqlalchemy import ColumnElement, ScalarSelect, bindparam, func, literal, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from clients.errors import InvalidArgument
from control_plane.db.strings import byte_length
from control_plane.tracking.records import run_message
from control_plane.tracking.tables import (
    ExperimentRow,
    MetricLatestRow,
    ParamRow,
    RunArtifactRow,
    RunRow,
    TagRow,
)

#: The most bytes a run's ``Run`` message may take: 64 KiB under gRPC's 4 MiB, for GetRun's and a ListRuns
#: page's envelope (a page token, a repeated field's tag and length).
MAX_RUN_MESSAGE_BYTES = 4 * 1024 * 1024 - 64 * 1024
#: The most a run's fields other than its parameters, tags, summaries and artifacts take (ids up to 64
#: characters, a name up to 256, a status, three times): an upper bound.
FIXED_FIELDS_BYTES = 1024
#: Bytes of a parameter's or tag's map entry besides its key's and value's text, at most: the entry's tag
#: and length (4), the key's and the value's tags and lengths (2 + 4).
ENTRY_OVERHEAD = 10
#: Bytes of a ``MetricSummary`` besides its key's text, at most: the item's tag and length (4), the key's
#: tag and length (3), three doubles (27) and three int64 varints (33).
SUMMARY_OVERHEAD = 67
#: Bytes of a ``RunArtifact`` besides its name's, checksum's and URI's text, at most: the item's tag and
#: length (5), three strings' tags and lengths (11), two int64 varints (22).
ARTIFACT_OVERHEAD = 38


def check_run_message(session: Session, runs: Mapping[int, str]) -> None:
    """INVALID_ARGUMENT when a run of ``runs`` ({pk: run id}), as this transaction has written it, would
    take more than :data:`MAX_RUN_MESSAGE_BYTES` as a message (module doc). The caller holds their rows'
    locks."""
    if not runs:
        return
    bounds = message_bounds(session, runs)
    for pk, run_id in sorted(runs.items()):
        if bounds.get(pk, 0) <= MAX_RUN_MESSAGE_BYTES:
            continue
        row = session.get_one(RunRow, pk)
        experiment_id = session.scalar(
            select(ExperimentRow.experiment_id).where(ExperimentRow.id == row.experiment_pk)
        )
        message = run_message(session, row, experiment_id or "")
        size = message.ByteSize()
        if size > MAX_RUN_MESSAGE_BYTES:
            raise InvalidArgument(
                f"run {run_id!r} would take {size:,} bytes as a message, over the limit of"
                f" {MAX_RUN_MESSAGE_BYTES:,} bytes that keeps it readable ({len(message.metrics)} metric"
                f" keys, {len(message.artifacts)} artifacts, {len(message.params)} parameters,"
                f" {len(message.tags)} tags); log fewer distinct metric keys or artifacts in this run;"
                " nothing was written"
            )


def _total(expression: ColumnElement[int], run_pk: InstrumentedAttribute[int]) -> ScalarSelect[int]:
    """The sum of ``expression`` over the rows of the outer query's run (0 for none)."""
    return select(func.coalesce(func.sum(expression), 0)).where(run_pk == RunRow.id).scalar_subquery()


_ARTIFACT_TEXT = (
    byte_length(RunArtifactRow.name) + byte_length(RunArtifactRow.sha256) + byte_length(RunArtifactRow.uri)
)
#: Each run's bound: one statement for all the runs of a request, built once (a statement built per run
#: and per request cost the tracking benchmark a third of its LogBatch time).
_BOUNDS = select(
    RunRow.id,
    literal(FIXED_FIELDS_BYTES)
    + _total(byte_length(MetricLatestRow.key) + SUMMARY_OVERHEAD, MetricLatestRow.run_pk)
    + _total(_ARTIFACT_TEXT + ARTIFACT_OVERHEAD, RunArtifactRow.run_pk)
    + _total(byte_length(ParamRow.key) + byte_length(ParamRow.value) + ENTRY_OVERHEAD, ParamRow.run_pk)
    + _total(byte_length(TagRow.key) + byte_length(TagRow.value) + ENTRY_OVERHEAD, TagRow.run_pk),
).where(RunRow.id.in_(bindparam("pks", expanding=True)))


def message_bounds(session: Session, pks: Iterable[int]) -> dict[int, int]:
    """An upper bound of the bytes each run's ``Run`` message takes (module doc), by run pk: one round
    trip for them all."""
    return {pk: int(bound) for pk, bound in session.execute(_BOUNDS, {"pks": sorted(pks)})}


def message_bound(session: Session, pk: int) -> int:
    """:func:`message_bounds` of one run."""
    return message_bounds(session, [pk]).get(pk, FIXED_FIELDS_BYTES)
