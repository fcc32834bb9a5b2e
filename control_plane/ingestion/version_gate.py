"""Whether a batch run's view version still takes rows, asked between the run's chunks and before its
online write: a run reads its source for minutes (6,000,000 rows are ~90 chunks), and the version can be
retired or deleted meanwhile.

``IngestionService._resolve`` refuses a retired version when a run starts, and nothing looked again: a
version retired after a run's first chunk got every later row stored and counted, and the run's online
values written, for a version nothing serves (the run answered OK). A delete had only the online write's
fence (``online.WRITE_IF_NOT_OLDER``), after every chunk was stored. The run now reads the version's
status before each chunk's offline write and before its online write, and stops with ``VersionGone``
(FAILED_PRECONDITION) at the first read that finds it retired or deleted: the chunks committed before
stay stored and counted, as a delete leaves them, and the error says how many. A chunk whose offline
write began before the retire committed is committed and counted too (its rows are stored), and the run
stops at the next read.

A read, not a lock: one indexed query per chunk of 65,536 rows. The read and the online write are not
one step, so a retire that committed during the online write let the run's values in with the run
answering OK; the run now reads the status once more after its write and, found retired, removes the
values it wrote that their keys still hold (``run_online_write.require_open_after_write``): a run that
answers OK wrote before the retire. Only a run killed between its write and that read leaves values in
the retired version, until their TTL, as a retire leaves those written before it; nothing serves them.
A deleted version's keys are fenced in Redis (``features.online_cleanup``), so the delete's cleanup
never leaves one behind.

The stream materializer reads the same status every ``status_every_s`` (idle or busy), and in every
batch's commit (``streaming/commit_gate.py``): there the read locks the version row (``status_query`` with
``hold``) in a SQL transaction kept open around the batch's Redis transaction, so a retire or delete
waits for the batch, and no batch is committed after one.
"""

from __future__ import annotations

from sqlalchemy import Select, select
from sqlalchemy.orm import Session, sessionmaker

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.errors import FailedPrecondition
from control_plane.db import read_session
from control_plane.db.models import FeatureViewRow, FeatureViewVersionRow
from control_plane.features.store import Status

RETIRED = "retired (not served)"
DELETED = "deleted"
StatusQuery = Select[str, str]


class VersionGone(FailedPrecondition):
    """The run's view version was retired or deleted while the run wrote it."""


def gone(sessions: sessionmaker[Session], view: pb.FeatureView) -> str | None:
    """``RETIRED`` or ``DELETED`` once ``view``'s version no longer takes rows; None while it does."""
    with read_session(sessions) as session:
        return state_in(session, view)


def state_in(session: Session, view: pb.FeatureView, query: StatusQuery | None = None) -> str | None:
    """``gone``, read in ``session``'s transaction by ``query`` (``status_query(view)``, or the caller's
    own, built once). A version row of another schema fingerprint is a view created again under the name
    (one deleted before tombstones kept its numbers could reuse them): the run's version is deleted."""
    found = session.execute(status_query(view) if query is None else query).one_or_none()
    if found is None or int(found.schema_fingerprint, 16) != view.schema_fingerprint:
        return DELETED
    return RETIRED if found.status == Status.RETIRED else None


def status_query(view: pb.FeatureView, *, hold: bool = False) -> StatusQuery:
    """The version's status and fingerprint, by the view's unique name and the version's unique (view,
    version). ``hold``: the read also locks the version row against a retire or delete until the
    transaction ends (``FOR SHARE``, which both the retire's UPDATE and the delete's DELETE wait for; on
    PostgreSQL a retire that committed after the statement's snapshot but before the lock is re-read, so
    the read sees it). SQLite renders no lock: there the caller's transaction must already hold the write
    lock (``write_session``: ``BEGIN IMMEDIATE``), which every retire and delete takes."""
    query = (
        select(FeatureViewVersionRow.status, FeatureViewVersionRow.schema_fingerprint)
        .join(FeatureViewRow, FeatureViewRow.id == FeatureViewVersionRow.view_id)
        .where(FeatureViewRow.name == view.spec.name, FeatureViewVersionRow.version == view.version)
    )
    return query.with_for_update(read=True, of=FeatureViewVersionRow) if hold else query
