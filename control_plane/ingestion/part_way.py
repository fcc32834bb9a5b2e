"""The error of a batch run that failed after it had stored and counted rows (``batch``).

A run stores and counts its source chunk by chunk, so a failure part-way (the metadata database down,
the offline store refusing a write, the source unreadable past some row, the online store refusing the
run's values at its end) leaves the earlier chunks' rows stored offline and counted. Re-raised as it
was, a database outage reached the client as a plain UNAVAILABLE, which invites a retry, and the retry
stored those rows a second time (a 400,000-row source counted 700,000 accepted).

So the error says what the run stored and counted, and that those rows must not be ingested again. Its
status is the failure's own (``clients.errors.status_of``), except that a status clients retry
(UNAVAILABLE, ABORTED, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED) becomes FAILED_PRECONDITION: the call
must not be repeated as it was, and that is the status of the version-gone stop (``version_gate``),
which says the same of its own earlier chunks. An unexpected error (a bug) stays INTERNAL, its traceback
logged here, since ``maps_errors`` logs only what it maps itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc

from clients.errors import AetherError, error_with_code, internal_message, status_of

_log = logging.getLogger("aether.ingestion.batch")

#: Statuses a client may retry as they are: a part-way failure must not be.
_RETRIED = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)


@dataclass(frozen=True)
class Stored:
    """What a run stored and counted before it failed (its counters, with a chunk whose transaction
    failed at COMMIT but committed), and the accepted rows of a chunk whose COMMIT's outcome could not be
    read back (``chunk_commit``: they are counted iff it landed)."""

    run_id: str
    view: str
    version: int
    records_in: int
    accepted: int
    quarantined: int
    unknown: int = 0

    @property
    def anything(self) -> bool:
        """Whether a retry would store rows twice: only accepted rows; a rerun's quarantined records
        supersede the pending copies of its earlier runs (``quarantine.supersede``)."""
        return self.accepted > 0 or self.unknown > 0

    def note(self, online: str) -> str:
        """What the caller is told of them; ``online``: what became of the run's online values."""
        unknown = (
            f"; whether its last chunk's {self.unknown} accepted rows were counted too is not known (its"
            " COMMIT's outcome could not be read back): the run's last `ingestion.batch` audit entry"
            f" (`aetherctl audit list --object feature_view/{self.view}`) shows what it counted once the"
            " metadata database answers"
            if self.unknown
            else ""
        )
        return (
            f"run {self.run_id} of feature view {self.view!r} version {self.version} had stored and"
            f" counted {self.records_in} records ({self.accepted} accepted, {self.quarantined}"
            f" quarantined){unknown}; they stay stored, so do not ingest them again (they would be"
            f" stored twice): ingest only the rest of the source. {online}"
        )


def stopped_part_way(exc: Exception, stored: Stored, online: str) -> AetherError:
    """The error of a run that failed with ``exc`` after storing ``stored`` (module doc)."""
    known = status_of(exc)
    if known is None:
        _log.exception("run %s failed part-way", stored.run_id, exc_info=exc)
        code, text = grpc.StatusCode.INTERNAL, internal_message("batch ingestion", exc)
    else:
        code, text = known
    if code in _RETRIED:
        code = grpc.StatusCode.FAILED_PRECONDITION
    error = error_with_code(code, f"{text}; the run stopped part-way: {stored.note(online)}")
    error.__cause__ = exc
    return error
