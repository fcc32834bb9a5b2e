"""A run must stay readable: GetRun answers it whole in one message, and ListRuns at least one run per page,
within gRPC's default 4 MiB receive limit (which the SDK and other clients keep).

Its parameters and tags are bounded on their own (``records.MAX_RUN_VALUES_BYTES``, 3.5 MiB), but a run also
carries one summary per metric key it ever logged and one entry per artifact, and nothing bounded those: a
run at the parameter bound that then logged some 3,000 metrics of 100-character names was stored, and no
Get or List could return it again (RESOURCE_EXHAUSTED on the client, for good). :func:`check_run_lists`
refuses, with INVALID_ARGUMENT and nothing written, the batch or artifact that would take a run's message
past :data:`MAX_RUN_MESSAGE_BYTES`.

It runs in every LogBatch that logs points, so its common case is one indexed aggregate per run: the
summaries' and artifacts' bytes, counted with an upper bound per entry, cannot take a run past the limit
while they fit what the parameter bound leaves (:data:`LISTS_ALLOWANCE_BYTES`: ~2,600 metrics of 100
characters). Only a run past that allowance is measured whole (its message built and sized).
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from clients.errors import InvalidArgument
from control_plane.db.strings import byte_length
from control_plane.tracking.records import MAX_RUN_VALUES_BYTES, run_message
from control_plane.tracking.tables import ExperimentRow, MetricLatestRow, RunArtifactRow, RunRow

#: The most bytes a run's ``Run`` message may take: 64 KiB under gRPC's 4 MiB, for GetRun's and a ListRuns
#: page's envelope (a page token, a repeated field's tag and length).
MAX_RUN_MESSAGE_BYTES = 4 * 1024 * 1024 - 64 * 1024
#: The most a run's fields other than its parameters, tags, summaries and artifacts take (ids up to 64
#: characters, a name up to 256, a status, three times): an upper bound.
FIXED_FIELDS_BYTES = 1024
#: What the summaries and artifacts may take before the whole message needs measuring.
LISTS_ALLOWANCE_BYTES = MAX_RUN_MESSAGE_BYTES - MAX_RUN_VALUES_BYTES - FIXED_FIELDS_BYTES
#: Bytes of a ``MetricSummary`` besides its key's text, at most: the item's tag and length (4), the key's
#: tag and length (3), three doubles (27) and three int64 varints (33).
SUMMARY_OVERHEAD = 67
#: Bytes of a ``RunArtifact`` besides its name's, checksum's and URI's text, at most: the item's tag and
#: length (5), three strings' tags and lengths (11), two int64 varints (22).
ARTIFACT_OVERHEAD = 38


def check_run_lists(session: Session, runs: Mapping[int, str]) -> None:
    """INVALID_ARGUMENT when a run of ``runs`` ({pk: run id}), as this transaction has written it, would
    take more than :data:`MAX_RUN_MESSAGE_BYTES` as a message (module doc)."""
    for pk, run_id in sorted(runs.items()):
        if _lists_bound(session, pk) <= LISTS_ALLOWANCE_BYTES:
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


def _lists_bound(session: Session, pk: int) -> int:
    """An upper bound of the bytes the run's metric summaries and artifacts take in its message."""
    summaries = select(func.coalesce(func.sum(byte_length(MetricLatestRow.key) + SUMMARY_OVERHEAD), 0)).where(
        MetricLatestRow.run_pk == pk
    )
    artifact = RunArtifactRow
    artifact_text = byte_length(artifact.name) + byte_length(artifact.sha256) + byte_length(artifact.uri)
    artifacts = select(func.coalesce(func.sum(artifact_text + ARTIFACT_OVERHEAD), 0)).where(
        RunArtifactRow.run_pk == pk
    )
    both = select(summaries.scalar_subquery() + artifacts.scalar_subquery())  # one round trip
    return int(session.scalar(both) or 0)
