"""What a batch run did (split from ``batch``): its outcome, the counters its audit entries record, what a
run that failed part-way reports it stored and counted (``part_way``), and where its online values wait.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from clients.aether.v1 import feature_registry_pb2 as pb
from control_plane.ingestion.chunk_commit import ChunkFiles
from control_plane.ingestion.part_way import Stored
from control_plane.ingestion.quarantine import RunSource


@dataclass
class MaterializeOutcome:
    run_id: str
    records_in: int = 0
    accepted: int = 0
    quarantined: int = 0
    skipped_outside_window: int = 0
    online_rows: int = 0
    offline_paths: list[str] = field(default_factory=list)


def waiting_online(view: pb.FeatureView) -> str:
    """Where a failed run's online values wait (its online part, handed to the next replay)."""
    return (
        "Its latest row per entity waits as an online_pending record of the run (`aetherctl quarantine"
        f" list --status online_pending --view {view.spec.name}`), and replaying it writes only the"
        " online values"
    )


def stored_part_way(
    run: RunSource, outcome: MaterializeOutcome, files: ChunkFiles | None, counting: tuple[int, int, int]
) -> Stored:
    """What a failed run stored and counted: its counters, plus the failed chunk's (``counting``) when
    its transaction failed at COMMIT yet committed; that chunk's accepted rows are ``unknown`` when the
    outcome could not be read back (``chunk_commit``: its files and intent stay for the recovery)."""
    records_in, accepted, quarantined = outcome.records_in, outcome.accepted, outcome.quarantined
    unknown = 0
    if files is not None and files.committed:
        records_in, accepted = records_in + counting[0], accepted + counting[1]
        quarantined += counting[2]
    elif files is not None and files.paths and files.committed is None and files.at_commit:
        unknown = files.adding
    return Stored(run.run_id, run.view, run.version, records_in, accepted, quarantined, unknown)


def run_counters(
    outcome: MaterializeOutcome, source: str, records_in: int = 0, accepted: int = 0, quarantined: int = 0
) -> dict[str, str | int]:
    """The run's counters in an audit entry: ``outcome``'s, plus a chunk's not yet added to it."""
    return {
        "run_id": outcome.run_id,
        "source": source,
        "records_in": outcome.records_in + records_in,
        "accepted": outcome.accepted + accepted,
        "quarantined": outcome.quarantined + quarantined,
    }
