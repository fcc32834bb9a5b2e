"""A submitted job's folder is written under a staging name and put in place only once its row commits.

The folder holds the job's spec, ``env`` and its secrets included. Written in place before the row, a
submit whose database write failed left it with no row, and nothing ever removed it. Removing it on the
error is not safe either when the commit's outcome is unknown (the connection lost during COMMIT): a job
committed after all would lose its folder. So:

* :class:`StagedFolder` makes ``<jobs>/.submitting-<job id>`` and holds an exclusive ``flock`` on it
  until the submit is over. A failure before the transaction reached its commit (the folder's writes, the
  write lock not granted, an insert refused) is known to have committed nothing: the folder is removed
  at once. After the commit, it is renamed to ``<jobs>/<job id>``, the folder the row names. A commit
  that raised may or may not have committed: the folder is left, under its staging name, to the sweep.
* :func:`put_in_place` renames a committed job's staging folder into place: the submit after its commit,
  a supervisor about to start a job whose folder is not there yet (one that read the row between the
  commit and the rename), and the sweep. Whichever comes first renames it; the others find it in place.
* :func:`sweep` (at each control plane's start, and every ``run_sweep_s`` by the supervisor) looks at
  every staging folder: one whose ``flock`` it cannot take belongs to a submit still in progress (in any
  process of this host) and is left alone; one whose job has a row is put in place; one whose job has no
  row is removed once older than :data:`STAGING_GRACE_S`, the time allowed for a COMMIT sent by a process
  that then died to be applied by the database. Only folders under the staging prefix are ever removed:
  ``AETHER_JOBS_DIR`` may be the user's, and a folder named like a job id without a row may be another
  database's job (two stacks sharing a jobs folder), which nothing here can tell apart from a leftover.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from clients.files import private_folder
from control_plane.db import read_session
from control_plane.jobs.tables import JobRow

_log = logging.getLogger("aether.jobs")

#: The name a job's folder has until its row commits (``.submitting-<job id>``).
STAGING_PREFIX = ".submitting-"
#: How old (by its folder's mtime) a staging folder with no row and no live submit must be before the
#: sweep removes it: a COMMIT a dying process sent may still be applied for a while after it died.
STAGING_GRACE_S = 600.0


def staging_path(folder: Path) -> Path:
    """Where the job folder ``folder`` is written until its row commits."""
    return folder.with_name(STAGING_PREFIX + folder.name)


@dataclass
class StagedFolder:
    """A job's folder under its staging name, locked (``flock``) by the submit writing it."""

    final: Path
    path: Path
    _descriptor: int

    @classmethod
    def create(cls, final: Path) -> StagedFolder:
        """Makes the staging folder of ``final`` (0700, with the folders above it) and locks it."""
        path = staging_path(final)
        private_folder(path)
        descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        except BaseException:
            os.close(descriptor)
            raise
        return cls(final, path, descriptor)

    def remove(self) -> None:
        """Removes the folder: for a submit whose transaction never reached its commit (no row can exist)."""
        shutil.rmtree(self.path, ignore_errors=True)

    def put_in_place(self) -> None:
        """Renames the folder to the job's (its row has committed)."""
        put_in_place(self.final)

    def release(self) -> None:
        """Lets the sweep look at the folder (the submit is over)."""
        os.close(self._descriptor)


def put_in_place(final: Path) -> bool:
    """Renames the staging folder of ``final`` to ``final``, for a job whose row has committed; whether
    ``final`` is there now. Nothing to do when it already is (another caller renamed it)."""
    try:
        os.rename(staging_path(final), final)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            raise
    return final.is_dir()


def ensure_in_place(folder: Path) -> None:
    """Puts the job folder ``folder`` in place when it is not there yet: for a caller about to use the
    folder of a job whose row it has read (the row committed, the submit may not have renamed it yet)."""
    if not folder.is_dir():
        put_in_place(folder)


@dataclass(frozen=True)
class Swept:
    """What one :func:`sweep` did: folders put in place, and removed, by job id."""

    placed: list[str]
    removed: list[str]


def sweep(jobs_folder: Path, sessions: sessionmaker[Session], *, now: float | None = None) -> Swept:
    """Puts in place, or removes, the staging folders no submit is writing any more (module doc)."""
    placed: list[str] = []
    removed: list[str] = []
    try:
        entries = [entry for entry in os.scandir(jobs_folder) if entry.name.startswith(STAGING_PREFIX)]
    except FileNotFoundError:
        return Swept(placed, removed)
    for entry in entries:
        job_id = entry.name.removeprefix(STAGING_PREFIX)
        path = Path(entry.path)
        try:
            descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:  # renamed or removed meanwhile, or not a folder of ours
            continue
        try:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a submit still writing it
            if not path.exists():  # put in place, or removed, before the lock was taken
                continue
            if _has_row(sessions, job_id):
                if put_in_place(jobs_folder / job_id):
                    placed.append(job_id)
                continue
            age = (time.time() if now is None else now) - os.fstat(descriptor).st_mtime
            if age >= STAGING_GRACE_S:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(job_id)
        finally:
            os.close(descriptor)
    if placed:
        _log.warning("put %d committed job folder(s) in place after their submit: %s", len(placed), placed)
    if removed:
        _log.warning("removed %d folder(s) of submits that committed no job: %s", len(removed), removed)
    return Swept(placed, removed)


def _has_row(sessions: sessionmaker[Session], job_id: str) -> bool:
    with read_session(sessions) as session:
        return session.scalar(select(JobRow.job_id).where(JobRow.job_id == job_id)) is not None


def sweep_logging_errors(jobs_folder: Path, sessions: sessionmaker[Session]) -> None:
    """:func:`sweep`, its failure (the database out of reach) logged: it is tried again later."""
    try:
        sweep(jobs_folder, sessions)
    except Exception:
        _log.exception("cannot sweep the staging folders of submitted jobs in %s", jobs_folder)
