"""A batch run's online write and the reads that guard it (split from ``batch``).

Before a run stores anything the online store must answer (``check_online``): a run whose online write
could not be made would leave its rows stored and counted offline, and the client's retry stored them a
second time. Before each chunk's offline write and before the online write the run reads its view
version's status (``require_open``, ``version_gate``), and once more after the online write, undoing it
when the version was retired meanwhile (``require_open_after_write``). An online write that fails hands
the run's online part (``online_hold``) to the next replay at once (``settle_online_part``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import redis
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.errors import FailedPrecondition, Unavailable
from control_plane.ingestion.online import remove_unchanged, write_blobs
from control_plane.ingestion.online_hold import RunHold
from control_plane.ingestion.quarantine import RunSource
from control_plane.ingestion.run_outcome import MaterializeOutcome, waiting_online
from control_plane.ingestion.version_gate import VersionGone, gone

_log = logging.getLogger("aether.ingestion.batch")


def require_open(sessions: sessionmaker[Session], view: pb.FeatureView, outcome: MaterializeOutcome) -> None:
    """``VersionGone`` once the run's view version is retired or deleted (``version_gate``), saying
    what the run stored and counted before it stopped."""
    state = gone(sessions, view)
    if state is None:
        return
    raise VersionGone(
        f"feature view {view.spec.name!r} version {view.version} was {state} while this run wrote it;"
        f" the run stopped. Run {outcome.run_id} stored and counted {outcome.records_in} records before"
        f" ({outcome.accepted} accepted, {outcome.quarantined} quarantined), which stay stored; none of"
        " its online values were written"
    )


def require_open_after_write(
    sessions: sessionmaker[Session],
    client: redis.Redis,
    view: pb.FeatureView,
    outcome: MaterializeOutcome,
    run: RunSource,
    hold: RunHold,
    pairs: Sequence[tuple[bytes, bytes]],
) -> None:
    """Reads the version's status once more after the run's online write, and undoes the write when
    a retire (or delete) committed since the read before it: that read and the write are not one step,
    and a retire committing in between let the run's values into the retired version (the run
    answering OK). Found open here, the retire came after the run's last write, so the run is one that
    finished before it; found retired, the run removes each value it wrote that its key still holds
    (never one another writer put over it since), and stops as at any other read."""
    try:
        require_open(sessions, view, outcome)
    except VersionGone:
        try:
            remove_unchanged(client, pairs)
        except redis.RedisError:  # they stay until their TTL, as a retire's earlier values do
            _log.exception("could not remove run %s's online values from a retired version", run.run_id)
        settle_online_part(run, hold)
        raise


def check_online(client: redis.Redis) -> None:
    """Refuses a run, before it stores anything, while the online store cannot be reached: its rows
    would be stored and counted offline, the run fail at its online write, and the client's retry
    store them offline a second time."""
    try:
        client.ping()
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise Unavailable(
            f"the online store (Redis) is unavailable ({type(exc).__name__}: {exc}); nothing of this"
            " run was written: ingest again once it is back"
        ) from exc


def write_run_online(
    client: redis.Redis,
    run: RunSource,
    view: pb.FeatureView,
    pairs: Sequence[tuple[bytes, bytes]],
    hold: RunHold,
) -> int:
    """The run's online write. Its online part is filed already, held by the run (``hold``); when the
    online store does not take it (down since the check) the record is handed to the next replay at
    once (``settle_online_part``), and a replay of it writes the online values."""
    try:
        return write_blobs(client, view, pairs)
    except redis.RedisError as exc:
        error = f"{type(exc).__name__}: {exc}"
        settle_online_part(run, hold, error)
        # FAILED_PRECONDITION, not UNAVAILABLE: a client retries an UNAVAILABLE call as it was, and
        # that retry stored every row of the run a second time (part_way).
        raise FailedPrecondition(
            f"the online store (Redis) did not take run {run.run_id}'s online values ({error}); its"
            " rows are stored offline and counted, so do not ingest them again (they would be stored"
            f" twice). {waiting_online(view)}"
        ) from exc
    except FailedPrecondition:  # the version was deleted meanwhile: no online value of it is wanted
        settle_online_part(run, hold)
        raise
    except BaseException as exc:
        settle_online_part(run, hold, f"{type(exc).__name__}: {exc}")
        raise


def settle_online_part(run: RunSource, hold: RunHold, error: str | None = None) -> None:
    try:
        hold.settle(error)  # nothing when nothing was filed, or a replay holds it now
    except Exception:  # it stays held by this run, and a replay takes it over after the lease
        _log.exception("could not hand over run %s's online_pending record", run.run_id)
