"""Executors: what starts, watches and stops one attempt of a job. The supervisor talks to them only
through :class:`Executor` and :class:`JobHandle`; :class:`LocalExecutor` (subprocesses on this host) is
the default.

The protocol, and how an executor for a cluster engine implements it (none is built here):

* ``launch(job, attempt, devices, env)`` starts the attempt and returns a handle. ``devices`` are the
  pool's device names; ``env`` holds the launch variables of ``launch_env.py``.
* ``handle.ref`` is a string that identifies the attempt durably; the supervisor stores it and, after a
  control-plane restart, calls ``adopt(job, attempt, ref)`` to get the handle back (None when nothing is
  known of it: the attempt is then counted as failed and retried). ``ref`` is "" when the control plane
  died between ``launch`` and storing it: the executor must then find the attempt by job and attempt
  alone, or make sure it never starts before returning None, since the supervisor frees its devices and
  launches the next attempt (the local executor does this with the launcher's pid file, ``identity.py``;
  a cluster executor looks its deterministic name up, or deletes it). An attempt so given up ran nothing
  of the job's, so it does not count against the job's retries.
* ``handle.poll()`` returns None while it runs, else an :class:`ExitStatus` (``launch_failed`` when the
  entrypoint could not be started at all, which the supervisor does not retry); ``terminate()`` asks it to
  stop (SIGTERM), ``kill()`` forces it (SIGKILL). All three must be safe to call repeatedly and after the
  end. "Runs" means any process of the attempt runs, not only its main one: the supervisor frees the
  attempt's devices once ``poll`` returns a status, so an executor stops what the attempt left behind
  (a background child, a worker that ignored SIGTERM) and reports the end only when nothing is left.

A Kubernetes Jobs executor would render one ``batch/v1`` Job per attempt (name ``aether-<job>-<attempt>``,
the spec's ``image``, ``nvidia.com/gpu: N`` resource limits instead of ``CUDA_VISIBLE_DEVICES``, the
launch variables as container env, the checkpoint folder on a shared volume, ``backoffLimit: 0`` because
retries are the supervisor's) and return ``ref = "namespace/name"``; ``poll`` reads the Job's
conditions (Complete -> code 0; Failed -> the container's terminated exit code), ``terminate`` deletes
it with a grace period, ``kill`` with grace 0, and ``adopt`` looks the Job up by name. Its devices would
come from a pool describing the cluster quota rather than host GPUs. A Ray executor would submit through
the Ray Jobs API (``JobSubmissionClient.submit_job`` with ``entrypoint_num_gpus`` and ``runtime_env``
carrying the env), use the submission id as ``ref``, map ``get_job_status`` to ``poll`` and
``stop_job`` to ``terminate``/``kill``. Logs: either executor copies the engine's logs into the job's log
file (or ``Logs`` reads them from the engine); neither needs changes to the scheduler or the supervisor.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from clients.aether.v1 import jobs_pb2 as pb
from clients.files import open_private
from control_plane.jobs.files import JobFiles
from control_plane.jobs.identity import GIVEN_UP, claim, process_start_ticks, running_in_group
from control_plane.jobs.job_user import JobUser
from control_plane.jobs.launch_env import inherited
from control_plane.jobs.launcher import NOT_EXECUTABLE_EXIT, NOT_FOUND_EXIT
from control_plane.jobs.reaper import KILL_SIGNAL


@dataclass(frozen=True)
class ExitStatus:
    #: The job's exit code; negative = killed by that signal; None = unknown (the process vanished).
    code: int | None
    detail: str
    #: The entrypoint never started (not found, not executable): no retry can fix that. Set by whoever
    #: started it (the launcher's exit file), never inferred from the code: a job may exit 126 or 127.
    launch_failed: bool = False
    #: The attempt's process never started and never will (``adopt`` returned None for an attempt whose
    #: process was never recorded: the executor made sure of it). Not a run of the job's code, so the
    #: supervisor does not count it against the job's retries.
    never_started: bool = False

    @property
    def succeeded(self) -> bool:
        return self.code == 0


@dataclass(frozen=True)
class JobLaunch:
    """What an executor needs to know about the job it starts."""

    job_id: str
    spec: pb.JobSpec
    files: JobFiles
    #: The OS user the job runs as (``AETHER_JOB_USER``, ``job_user.py``); None = the control plane's.
    user: JobUser | None = None
    #: Whether no other process runs as ``user`` (a uid of ``AETHER_JOB_UID_RANGE``): the launcher then
    #: ends the attempt's processes by that uid, at once (``reaper.signal_uid``).
    uid_of_its_own: bool = False


class JobHandle(Protocol):
    @property
    def ref(self) -> str: ...

    @property
    def pid(self) -> int | None: ...

    def poll(self) -> ExitStatus | None: ...

    @property
    def main_exited(self) -> bool:
        """Whether the attempt's main process has ended (its status is known) while ``poll`` still waits
        for what it left behind: the attempt's outcome is decided, so no cancel or timeout applies."""

    def terminate(self) -> None: ...

    def kill(self) -> None: ...


class Executor(Protocol):
    def launch(
        self, job: JobLaunch, attempt: int, devices: Sequence[str], env: Mapping[str, str]
    ) -> JobHandle: ...

    def adopt(self, job: JobLaunch, attempt: int, ref: str) -> JobHandle | None: ...


#: The folder holding ``control_plane`` (and ``clients``): the launcher imports it from there, jobs get it
#: on their ``PYTHONPATH``.
PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
#: The launcher's whole environment: nothing of the control plane's or the job's (see ``launcher.py``).
LAUNCHER_ENV = {"PATH": os.defpath}


def launcher_argv(python: str) -> list[str]:
    """How the launcher is started: isolated (``-I``: neither ``PYTHONPATH``, nor the user's site, nor the
    working folder on ``sys.path``), importing ``control_plane`` from :data:`PACKAGE_ROOT` only."""
    boot = (
        f"import sys; sys.path.insert(0, {PACKAGE_ROOT!r}); "
        "from control_plane.jobs.launcher import main; sys.exit(main())"
    )
    return [python, "-I", "-c", boot]


def job_argv(spec: pb.JobSpec, python: str = sys.executable) -> list[str]:
    """The command of the job: ``python -m MODULE ARGS`` or ``COMMAND ARGS``; with more than one GPU,
    through torchrun (``python -m torch.distributed.run``, the same interpreter, one process per GPU)."""
    entry = spec.entrypoint
    target = ["-m", entry.module, *entry.args] if entry.module else [*entry.command, *entry.args]
    if spec.gpus > 1:
        runner = [python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={spec.gpus}"]
        return [*runner, *target] if entry.module else [*runner, "--no-python", *target]
    return [python, *target] if entry.module else target


class LocalHandle:
    """One attempt running as a launcher process group on this host.

    The launcher is a child subreaper (``reaper.py``): everything the job starts stays below it, in the
    group or not (a daemon's ``setsid``), and once the job's main process has ended it records the exit,
    ends what is left (SIGTERM, SIGKILL ``kill_grace_s`` later) and only then exits. ``terminate`` is
    SIGTERM to the group (the launcher passes it on to the processes that left it); ``kill`` asks the
    launcher to SIGKILL everything below it, not SIGKILL to the launcher, whose death would hand what
    left the group to init, unless nothing is below it yet (it has not started the job: stuck before,
    it would never end) or it is still alive ``kill_grace_s`` after it was asked (its clean-up stuck).
    ``poll`` returns the launcher's status once it has gone and its group is
    empty: a launcher that was killed itself (the OOM killer) leaves the job to its parent-death signal
    and what is left in the group to this handle (SIGTERM, then SIGKILL ``kill_grace_s`` later), so
    the attempt's devices are never handed to the next job while one of its processes runs. (With the
    launcher killed, a process that had left the group is out of reach.)"""

    def __init__(
        self,
        pid: int,
        start_ticks: int,
        files: JobFiles,
        attempt: int,
        process: subprocess.Popen[bytes] | None,
        kill_grace_s: float,
    ):
        self._pid = pid
        self._start_ticks = start_ticks
        self._files = files
        self._attempt = attempt
        self._process = process
        self._kill_grace_s = kill_grace_s
        self._status: ExitStatus | None = None  # the launcher's record, once the launcher has gone
        self._group_gone = False
        self._leftovers_termed_at: float | None = None  # time.monotonic() of the SIGTERM to leftovers
        self._leftovers_killed = False
        self._kill_asked_at: float | None = None  # time.monotonic() of the first KILL_SIGNAL to the launcher

    @property
    def ref(self) -> str:
        return f"{self._pid}:{self._start_ticks}"

    @property
    def pid(self) -> int | None:
        return self._pid

    def _alive(self) -> bool:
        if self._process is not None:
            return self._process.poll() is None
        with contextlib.suppress(ChildProcessError):  # reap it if it happens to be our child
            os.waitpid(self._pid, os.WNOHANG)
        return process_start_ticks(self._pid) == self._start_ticks

    @property
    def main_exited(self) -> bool:
        # The launcher records the job's end before it ends what the job left (reaper.py).
        return self._status is not None or self._files.exit_file(self._attempt).exists()

    def _group_alive(self) -> bool:
        """Whether a process other than a zombie is left in the launcher's group, the launcher being
        gone. Linux never hands out a pid still in use as a group id, so while the group has members its
        id names only them; a live process holding the launcher's pid therefore means the group emptied
        and the pid was reused (it must not be signalled). Once seen empty, the group stays so."""
        if not self._group_gone:
            self._group_gone = process_start_ticks(self._pid) is not None or not running_in_group(self._pid)
        return not self._group_gone

    def poll(self) -> ExitStatus | None:
        if self._status is None:
            if self._alive():
                self._kill_unanswered()
                return None
            # Without an exit file the launcher was killed before it could record the end.
            self._status = read_exit_file(self._files.exit_file(self._attempt))
            # The job's environment (its token, the spec's secrets) for a launcher that died before it
            # took it: no launcher of this attempt will read it now.
            self._files.env_file(self._attempt).unlink(missing_ok=True)
        if not self._group_alive():
            return self._status
        now = time.monotonic()
        if self._leftovers_termed_at is None:
            self._leftovers_termed_at = now
            self._files.append_log(
                f"attempt {self._attempt} ended ({self._status.detail}) but left processes running in its"
                " process group; sending SIGTERM"
            )
            self._signal_group(signal.SIGTERM)
        elif not self._leftovers_killed and now - self._leftovers_termed_at >= self._kill_grace_s:
            self._leftovers_killed = True
            self._files.append_log(
                f"processes of attempt {self._attempt} still running {self._kill_grace_s:g}s after"
                " SIGTERM; sending SIGKILL"
            )
            self._signal_group(signal.SIGKILL)
        return None

    def _signal_group(self, signum: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._pid, signum)

    def _signal(self, signum: signal.Signals) -> None:
        # The launcher's group while the launcher lives, and while what it left behind does.
        if self._alive() or self._group_alive():
            self._signal_group(signum)

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        if not self._alive():
            self._signal(signal.SIGKILL)
            return
        if not _has_child(self._pid):
            # Nothing below it yet (its job not started: stuck before, in a read that never returns, say,
            # where it only notes the kill signal) or any more: nothing of the job's can go on under init.
            # The parent-death check of a job started meanwhile (launcher.py) makes that hold.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self._pid, signal.SIGKILL)
            return
        # Not SIGKILL to the group while the launcher lives: it would die first, and what had left the
        # group would go on under init. The launcher kills every process below it (KILL_SIGNAL); the
        # group's other members get SIGKILL here too, for a launcher older than that signal, which it
        # dies of (the job's parent-death signal and poll's leftovers then end the rest, as before).
        for pid in running_in_group(self._pid):
            if pid != self._pid:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(self._pid, signal.SIGCONT)  # a stopped launcher would keep the signal pending
            os.kill(self._pid, KILL_SIGNAL)
        if self._kill_asked_at is None:
            self._kill_asked_at = time.monotonic()

    def _kill_unanswered(self) -> None:
        """SIGKILL to a launcher still alive ``kill_grace_s`` after it was asked to kill: its clean-up
        is stuck (in a system call that does not return, say), and the attempt would hold its devices for
        good. What it could not end is then out of reach, as with a launcher the OOM killer took."""
        asked = self._kill_asked_at
        if asked is None or time.monotonic() - asked < self._kill_grace_s:
            return
        self._kill_asked_at = math.inf  # once
        self._files.append_log(
            f"the launcher of attempt {self._attempt} is still running {self._kill_grace_s:g}s after it was"
            " asked to kill it; sending it SIGKILL"
        )
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(self._pid, signal.SIGKILL)


def _has_child(pid: int) -> bool:
    """Whether process ``pid`` has a child, ended or not (``/proc``; every process is scanned where
    the kernel does not list a task's children)."""
    try:
        return bool(Path(f"/proc/{pid}/task/{pid}/children").read_text().split())
    except FileNotFoundError:
        pass
    except OSError:
        return True  # unknown: the launcher is asked, as it was before
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError):
                stat = Path(entry.path, "stat").read_text()
                if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                    return True
    return False


def read_exit_file(path: Path) -> ExitStatus:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        code, detail = int(data["code"]), str(data["detail"])
        if "launch_failed" in data:
            return ExitStatus(code, detail, data["launch_failed"] is True)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return ExitStatus(None, "the job's process ended without recording an exit status (killed)")
    return ExitStatus(code, detail, _failed_in_an_old_launcher(code, detail))


def _failed_in_an_old_launcher(code: int, detail: str) -> bool:
    """Whether an exit file without ``launch_failed`` records its launcher's failure to start the job.

    Launchers from before the flag (a job they started may end after an upgrade) wrote
    ``{"code": N, "detail": ...}``: for their own failures code 127 or 126 with their error as the detail
    ("entrypoint module 'x' not found", "cannot start 'x': ..."), for the job's own end its code with
    ``exit code N`` (or ``killed by signal S``) as the detail. So 127 or 126 is the launcher's only when
    the detail is not ``exit code N``: a job that exits 127 itself is retried like any other failure,
    and one whose entrypoint never started is not retried in vain."""
    return code in (NOT_FOUND_EXIT, NOT_EXECUTABLE_EXIT) and detail != f"exit code {code}"


class LocalExecutor:
    """Runs each attempt as the launcher (:func:`launcher_argv` ``... -- <job argv>``) in a new session,
    in ``cwd`` (default: the control plane's working folder), with stdout and stderr appended to the job's
    log. A job with a :attr:`JobLaunch.user` is started by the launcher as that user (``HOME``, ``USER``
    and ``LOGNAME`` its own); the launcher itself stays this process's user. ``base_env`` is the
    environment jobs inherit from (default: the control plane's), of which they get only what
    :data:`~control_plane.jobs.launch_env.INHERITED_ENV` names, then the spec's ``env`` and the launch
    variables; ``kill_grace_s`` is the time between SIGTERM and SIGKILL to the processes an
    ended attempt left behind."""

    def __init__(
        self,
        python: str = sys.executable,
        cwd: Path | None = None,
        base_env: Mapping[str, str] | None = None,
        kill_grace_s: float = 10.0,
    ):
        self._python = python
        self._cwd = cwd
        self._base_env = dict(os.environ if base_env is None else base_env)
        self._kill_grace_s = kill_grace_s

    def launch(
        self, job: JobLaunch, attempt: int, devices: Sequence[str], env: Mapping[str, str]
    ) -> JobHandle:
        exit_file = job.files.exit_file(attempt)
        exit_file.unlink(missing_ok=True)
        env_file = job.files.env_file(attempt)
        argv = [
            *launcher_argv(self._python), "--log", str(job.files.log),
            "--pid-file", str(job.files.pid_file(attempt)), "--exit-file", str(exit_file),
            "--env-file", str(env_file), "--kill-grace", str(self._kill_grace_s),
        ]  # fmt: skip
        if job.spec.entrypoint.module:
            argv += ["--module", job.spec.entrypoint.module]
        if job.user is not None:  # the launcher stays this user: only the job itself runs as the job user
            argv += ["--user", str(job.user.uid), "--group", str(job.user.gid), "--user-name", job.user.name]
            if job.uid_of_its_own:
                argv.append("--uid-of-its-own")
        argv += ["--", *job_argv(job.spec, self._python)]
        # Never the control plane's whole environment: it holds the admin token and the database's and
        # Redis's passwords, and a job's log (what it prints) is readable with the read-only token.
        # A job token in ``env`` (the supervisor's) drops the inherited token variables, as the spec's does.
        own = {**job.spec.env, **env}
        base = inherited(self._base_env, own)
        if job.user is not None:  # its own home and name, not the control plane's
            base.update(HOME=job.user.home, USER=job.user.name, LOGNAME=job.user.name)
            base["TMPDIR"] = str(job.files.tmp)  # its own (made by open_to), not the /tmp all uids share
        job_env = {**base, **dict(job.spec.env), **env}
        # The job may import control_plane (the training SDK) even when it runs elsewhere than the repository.
        job_env["PYTHONPATH"] = os.pathsep.join(p for p in (job_env.get("PYTHONPATH", ""), PACKAGE_ROOT) if p)
        # Only for the job's own process: the launcher (this process's user) gets a fixed environment, so
        # that nothing of the spec's (PYTHONPATH, LD_PRELOAD...) runs in it. The file is this user's,
        # 0600, in the job's folder; the launcher deletes it once read.
        env_file.unlink(missing_ok=True)
        descriptor = open_private(env_file, os.O_WRONLY | os.O_EXCL)
        try:
            # Its write failing part-way (a full disk) must not leave the secrets written so far behind.
            with os.fdopen(descriptor, "w", encoding="utf-8") as sink:
                json.dump(job_env, sink)
            with job.files.open_log() as log:
                process = subprocess.Popen(
                    argv, cwd=self._cwd, env=LAUNCHER_ENV, stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip
        except BaseException:
            env_file.unlink(missing_ok=True)  # no launcher will read it
            raise
        ticks = process_start_ticks(process.pid) or 0
        return LocalHandle(process.pid, ticks, job.files, attempt, process, self._kill_grace_s)

    def adopt(self, job: JobLaunch, attempt: int, ref: str) -> JobHandle | None:
        if not ref:
            return self._adopt_unrecorded(job, attempt)
        pid_text, _, ticks_text = ref.partition(":")
        if not pid_text.isdigit() or not ticks_text.isdigit():
            return None
        return LocalHandle(int(pid_text), int(ticks_text), job.files, attempt, None, self._kill_grace_s)

    def _adopt_unrecorded(self, job: JobLaunch, attempt: int) -> JobHandle | None:
        """The attempt whose process was never recorded: the launcher's claim of its pid file, or, when
        the launcher has not claimed it (not started yet, or never will be), None after claiming it as
        given up, so that a launcher still on its way does not start the job."""
        found = claim(job.files.pid_file(attempt), {GIVEN_UP: True, "by": os.getpid()})
        if found is None or found.get(GIVEN_UP):
            job.files.env_file(attempt).unlink(missing_ok=True)  # given up: no launcher will take it
            return None
        try:
            pid, ticks = int(found["pid"]), int(found["start_ticks"] or 0)
        except (KeyError, TypeError, ValueError):
            return None
        return LocalHandle(pid, ticks, job.files, attempt, None, self._kill_grace_s)
