"""Where one job's files live: one folder per job, shared by its attempts."""

from __future__ import annotations

import contextlib
import json
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from clients.files import make_private, open_private, replace_when_done
from control_plane.jobs.job_user import OPEN_JOB_FOLDER_MODE, WORK_FOLDER, JobUser
from control_plane.jobs.launch_env import OUTPUTS_FILE


@dataclass(frozen=True)
class JobFiles:
    folder: Path

    @property
    def spec(self) -> Path:
        """The spec as JSON (``AETHER_JOB_SPEC``)."""
        return self.folder / "spec.json"

    @property
    def log(self) -> Path:
        """stdout and stderr of every attempt, with the supervisor's ``[aether]`` markers between them."""
        return self.folder / "job.log"

    @property
    def checkpoints(self) -> Path:
        """``AETHER_CHECKPOINT_DIR``: the same for every attempt. ``outputs.json`` goes next to it. In
        :attr:`work` for a job run as a job user (``job_user.py``)."""
        return (self.work if self.runs_as_job_user else self.folder) / "checkpoints"

    @property
    def work(self) -> Path:
        """What a job run as a job user writes (its checkpoints, outputs, model), owned by that user."""
        return self.folder / WORK_FOLDER

    @property
    def tmp(self) -> Path:
        """``TMPDIR`` of a job run as a job user, in :attr:`work`: what honours it stays out of the shared
        ``/tmp`` (where a uid of ``AETHER_JOB_UID_RANGE`` handed to the next job would leave it)."""
        return self.work / "tmp"

    @property
    def runs_as_job_user(self) -> bool:
        """Whether the job's files are laid out for a job user: :attr:`work` is a folder (not a link)
        of another user than this process's. Read from the disk, so it survives a restart; a job run as
        the control plane's user cannot make it so (whatever it creates is the control plane's)."""
        try:
            status = os.lstat(self.work)
        except FileNotFoundError:
            return False
        return stat.S_ISDIR(status.st_mode) and status.st_uid != os.getuid()

    def make_work(self, user: JobUser) -> None:
        """Creates :attr:`work` (0700) with the checkpoint folder and :attr:`tmp` in it, all ``user``'s. An
        ``OSError`` when ``work`` is there already as something else (a job run as the control plane's
        user made it).
        A ``work`` folder of another job user (an earlier attempt's uid of ``AETHER_JOB_UID_RANGE``) is
        handed to ``user`` whole: what is in it is the job's checkpoints and outputs."""
        try:
            self.work.mkdir(mode=0o700)
        except FileExistsError:
            status = os.lstat(self.work)
            if not stat.S_ISDIR(status.st_mode):
                raise OSError(f"cannot run the job as {user.name}: {self.work} is not a folder") from None
            if status.st_uid not in (user.uid, os.getuid()):
                self._hand_over(status.st_uid, user)
        checkpoints = self.work / "checkpoints"
        for path in (checkpoints, self.tmp):
            path.mkdir(mode=0o700, exist_ok=True)
        for path in (checkpoints, self.tmp, self.work):
            os.lchown(path, user.uid, user.gid)

    def _hand_over(self, previous: int, user: JobUser) -> None:
        """Gives ``user`` what ``previous`` owns in :attr:`work`. Links are neither followed nor entered
        (``lchown``; ``os.walk`` does not descend into a linked folder), and only entries that
        ``previous`` owns change owner: a hard link to somebody else's file stays theirs. Nothing of
        ``previous``'s runs meanwhile: its attempt has ended, its processes gone, and the job's folder
        is closed to every job user between attempts."""
        for folder, names, files in os.walk(self.work, followlinks=False):
            for name in (*names, *files):
                path = os.path.join(folder, name)
                if os.lstat(path).st_uid == previous:
                    os.lchown(path, user.uid, user.gid)

    def open_to(self, user: JobUser) -> None:
        """Lets ``user`` reach what an attempt needs: :attr:`work`, the token and the spec become its, and
        the folder ``0710`` with its group (entered, not listed; the folder stays this process's, so the
        job cannot put a link in place of the log or the exit records)."""
        self.make_work(user)
        for path in (self.token, self.spec):
            if path.exists():
                os.lchown(path, user.uid, user.gid)
                os.chmod(path, 0o600)
        os.chown(self.folder, -1, user.gid)
        os.chmod(self.folder, OPEN_JOB_FOLDER_MODE)

    def close_to_job_user(self) -> None:
        """Takes back what :meth:`open_to` opened: the folder ``0700`` again (between attempts, and after
        the job), so that other jobs run as the same user cannot enter it."""
        if self.runs_as_job_user:
            os.chmod(self.folder, 0o700)

    def pid_file(self, attempt: int) -> Path:
        """Claimed by the launcher before it starts the attempt (``{"pid": N, "start_ticks": N}``), or by
        a control plane that gave the attempt up first: see ``identity.py``."""
        return self.folder / f"attempt-{attempt}.pid.json"

    def env_file(self, attempt: int) -> Path:
        """The attempt's environment (JSON, 0600), written by the executor for the launcher, which
        deletes it once read: the launcher itself runs in a fixed environment (``launcher.py``)."""
        return self.folder / f"attempt-{attempt}.env.json"

    def exit_file(self, attempt: int) -> Path:
        """Written by the launcher when the attempt's process ends: ``{"code": N, "detail": ...,
        "launch_failed": bool}`` (without ``launch_failed`` from launchers older than the flag: see
        ``executor.read_exit_file``)."""
        return self.folder / f"attempt-{attempt}.exit.json"

    @property
    def run_file(self) -> Path:
        """The id of the job's tracking run, reserved before the run is created (``{"run_id": ...}``), so
        that a start that dies after creating the run and before recording it leaves the same run to the
        next start: see ``runs.py``."""
        return self.folder / "run.json"

    @property
    def token(self) -> Path:
        """The job's own token (``AETHER_TOKEN_FILE``, see ``control_plane.api.job_tokens``), 0600."""
        return self.folder / "token"

    def write_token(self, token: str) -> Path:
        """Writes the job's token into :attr:`token` (created 0600) and returns its path."""
        # A new file, not the last attempt's truncated: that one may be a job user's (open_to).
        self.token.unlink(missing_ok=True)
        descriptor = open_private(self.token, os.O_WRONLY | os.O_TRUNC)
        with os.fdopen(descriptor, "w", encoding="ascii") as file:
            file.write(token)
        return self.token

    def make_private(self) -> bool:
        """Takes group and other permissions off the folder, spec and log of a job submitted before they
        were created private (``clients.files.make_private``); whether anything changed. Aether made them,
        so their mode is not a choice of the user's."""
        # The folder of a job run as a job user has the mode open_to and close_to_job_user give it.
        folder = () if self.runs_as_job_user else (self.folder,)
        changed = [make_private(path) for path in (*folder, self.spec, self.log, self.token)]
        return any(changed)

    def write_spec(self, spec_json: str) -> None:
        """Replaces ``spec.json`` whole (temporary file, fsync, rename): a reader finds the previous file or
        the new one, never a part. An ``OSError`` saying which file could not be written."""
        try:
            with replace_when_done(self.spec) as file:
                file.write(spec_json.encode("utf-8"))
        except OSError as exc:
            raise OSError(f"cannot write the job's spec file {self.spec}: {exc.strerror or exc}") from exc

    def open_log(self) -> BinaryIO:
        """The log, opened to append, created 0600 when missing: it holds whatever the job printed."""
        return os.fdopen(open_private(self.log), "ab")

    def append_log(self, line: str) -> None:
        with self.open_log() as log:
            log.write(f"[aether] {line}\n".encode())

    def append_log_if_possible(self, line: str) -> None:
        """:meth:`append_log`, unless the disk refuses it (full, an I/O error): for the lines that say
        what the job's row also holds, whose transition must not wait for the disk."""
        with contextlib.suppress(OSError):
            self.append_log(line)


#: The most of a job's ``outputs.json`` the supervisor reads: its outputs go into the job's row, and the
#: file is the job's (a job user's, possibly hostile: a sparse file of any size costs it nothing).
MAX_OUTPUTS_BYTES = 1 << 20


#: The deepest a job's outputs may nest (objects and lists; the outer object is 1). They reach clients in
#: ``google.protobuf.Struct``, whose parsers stop at 100 message levels (about 40 of JSON's, once inside a
#: ``ListJobsResponse``): nested deeper, no client could read the job or a listing holding it. Thousands
#: of levels made the parse itself raise RecursionError on every tick, the job RUNNING for good.
MAX_OUTPUTS_DEPTH = 20


def read_outputs(files: JobFiles) -> dict[str, Any]:
    """The job's ``outputs.json`` (a dict; other JSON as ``{"value": ...}``), or {} when it has none, it
    does not parse, it is over :data:`MAX_OUTPUTS_BYTES` or nests deeper than :data:`MAX_OUTPUTS_DEPTH`
    (said in the job's log)."""
    path = files.checkpoints.parent / OUTPUTS_FILE
    try:
        # Not through a link, nor from a FIFO: a job run as a job user owns the folder it is in.
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(descriptor, "rb") as file:
            if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                return {}
            raw = file.read(MAX_OUTPUTS_BYTES + 1)
    except OSError:
        return {}
    if len(raw) > MAX_OUTPUTS_BYTES:
        files.append_log(
            f"{OUTPUTS_FILE} is over {MAX_OUTPUTS_BYTES} bytes: not read, the job has no outputs"
        )
        return {}
    not_json: list[str] = []
    too_deep = False
    try:
        data = json.loads(
            raw.decode("utf-8"),
            parse_constant=lambda name: _as_text(name, not_json),
            parse_float=lambda text: _finite_or_text(text, not_json),
            parse_int=lambda text: _finite_or_text(text, not_json, int),
        )
    except ValueError:
        return {}
    except RecursionError:  # nested deeper than Python parses (thousands of levels)
        too_deep = True
    if too_deep or _nesting(data) > MAX_OUTPUTS_DEPTH:
        files.append_log(
            f"{OUTPUTS_FILE} nests deeper than {MAX_OUTPUTS_DEPTH} levels: not read, the job has no outputs"
        )
        return {}
    if not_json:
        files.append_log(
            f"{OUTPUTS_FILE} holds numbers no double holds (NaN, an infinity, past 1.8e308): kept as text"
            f" ({', '.join(not_json[:5])})"
        )
    data, mended = unicode_outputs(data)
    if mended:
        files.append_log(
            f"{OUTPUTS_FILE} holds text that is no Unicode (half a surrogate pair): kept as U+FFFD"
        )
    return data if isinstance(data, dict) else {"value": data}


def unicode_outputs(value: Any) -> tuple[Any, bool]:
    """``value`` (parsed JSON) with each half of a surrogate pair standing alone in its strings (a JSON
    escape such as ``"\\ud800"`` parses to one; it is no character) replaced by U+FFFD, and whether there
    was one. A job's outputs go into ``google.protobuf.Struct`` on every read of the job, which refused
    such a string: every ``Get`` of the job failed, and every ``List`` page holding it."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            # Through UTF-16, which pairs what is paired and marks only the lone halves.
            return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace"), True
        return value, False
    if isinstance(value, list):
        items = [unicode_outputs(item) for item in value]
        return [item for item, _ in items], any(mended for _, mended in items)
    if isinstance(value, dict):
        pairs = [(unicode_outputs(key), unicode_outputs(item)) for key, item in value.items()]
        mended = any(key[1] or item[1] for key, item in pairs)
        return {key[0]: item[0] for key, item in pairs}, mended
    return value, False


def _nesting(value: Any) -> int:
    """How deep ``value`` (parsed JSON) nests objects and lists; a scalar is 0. Iterative: the value may
    nest as deep as the parser goes, which a recursive walk would not."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _as_text(name: str, found: list[str]) -> str:
    """``NaN``, ``Infinity`` or ``-Infinity``, which Python's ``json.dumps`` writes (a diverged loss), as
    the text it is: the job's row keeps its outputs as JSON, and PostgreSQL's refused the job's end on
    every tick, leaving the job RUNNING on its devices for good."""
    found.append(name)
    return name


def _finite_or_text(text: str, found: list[str], kind: type[float] | type[int] = float) -> float | str:
    """A JSON number as ``kind``, or as written when no double holds it: ``1e999`` parses as infinity,
    and ``google.protobuf.Struct`` (which holds a job's outputs on every read of it) refused an integer
    past 1.8e308 with an OverflowError, failing every ``Get`` of the job and every ``List`` page holding
    it."""
    value = kind(text)
    try:
        if math.isfinite(float(value)):
            return value
    except OverflowError:
        pass
    found.append(text if len(text) <= 24 else f"{text[:20]}...")
    return text
