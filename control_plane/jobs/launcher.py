"""The process the local executor starts for one attempt: it starts the job's command, waits for it and
records how it ended. Run as ``python -I -c BOOT --log LOG --pid-file FILE --exit-file FILE --env-file
FILE [--kill-grace S] [--module MODULE] -- ARGV...`` (``executor.launcher_argv``; ``python -m
control_plane.jobs.launcher`` works too). Standard library only (``identity.py`` and ``reaper.py`` are
too), so it starts fast.

Nothing of the job's runs in the launcher, which is the control plane's user (root, or one with the
capabilities to switch users, with ``AETHER_JOB_USER``): the executor starts it isolated (``-I``: no
``PYTHONPATH``, no user site, not the working folder on ``sys.path``) with a fixed environment, so that
neither the spec's variables (``PYTHONPATH``, ``LD_PRELOAD``...) nor the job's code reach it. The job's
environment comes in a 0600 file (``--env-file``) that the launcher reads and deletes first; it is
given only to the job's process. The entrypoint's module is looked up in the folders the job's
interpreter will search, by the files there, never by importing its packages (whose ``__init__`` is
the job's code): :func:`locate_module`, which reads only regular files, links not followed, of a bounded
size (a link to ``/proc/kmsg`` there blocked the launcher for good).

Why a launcher between the control plane and the job: the control plane may restart while the job runs,
and a process that is not its child cannot learn the job's exit code. The launcher is the job's parent;
it writes ``{"code": N, "detail": ..., "launch_failed": bool}`` atomically to the exit file before it
exits, so whoever re-adopts the job reads how it ended. It is the leader of a new session (the executor
starts it with ``start_new_session``): the control plane's terminal or service manager signals do not
reach the job, and the executor signals the whole group (launcher, job, and torchrun's workers) at once.

Before it starts anything, the launcher claims its attempt's pid file with its own pid and start time
(``identity.claim``). The control plane records the same identity in the database once ``launch``
returns, but it may die before that: the next one then finds the launcher through the pid file, or, if
it claimed the file first (as given up), the launcher exits without starting the job. So an attempt the
control plane gave up never runs (nor counts against the job's retries), and one that runs is never
given up.

A job's processes may leave its process group (``setsid``, a daemon's double fork), out of reach of
every group signal: the launcher is a child subreaper (Linux, ``reaper.py``), so they stay below it. It
passes the group's SIGTERM on to them, kills every process below it on the executor's
:data:`~control_plane.jobs.reaper.KILL_SIGNAL` (the executor SIGKILLs the launcher itself only when
nothing is below it, or when it is still alive the kill grace after that signal),
and once the job's main process has ended it records the exit, then ends whatever is left below
it (SIGTERM, SIGKILL ``--kill-grace`` seconds later, reaping each) before it exits: nothing of an
attempt runs once its launcher has gone. With ``--uid-of-its-own`` (the ``--user`` is a uid of
``AETHER_JOB_UID_RANGE``, which no other process runs as) those signals go to every process of that uid
at once (``reaper.signal_uid``), which no chain of forks outruns.

If the launcher itself is killed (SIGKILL, OOM killer), the job must not run on unobserved: on Linux the
job is started with a parent-death signal (SIGKILL), and the executor stops what is left of the group
(SIGTERM, then SIGKILL) when it finds the launcher gone, with or without an exit file (what had left the
group is then out of reach).

With ``--user UID --group GID --user-name NAME`` (``AETHER_JOB_USER``, ``job_user.py``) the launcher stays
the control plane's user, so that the job can neither forge its exit record nor signal it, and starts
only the job as that user and group, with no supplementary group (the credentials change before the
parent-death signal is set: a change of credentials clears it), and without any capability: its
permitted, effective, inheritable and ambient sets are emptied and ``no_new_privs`` set before the exec
(a control plane that is not root holds its capabilities in the ambient set, which a change between
two non-zero uids keeps; when a step fails, the job does not start). Before that it checks, by their mode
bits, that the job user may reach the interpreter, the entrypoint's module or command and the working
folder: when it may not, the job fails at once with exit code 126 and the reason in its log (the job
user needs read access to the interpreter or virtual environment and to the job's code).

Exit codes of its own: 127 when the entrypoint does not exist (checked before anything starts, in the
job's environment) and 126 when it cannot be executed; the error is written to the job's log, and the
exit file says ``"launch_failed": true``. That flag, not the code, tells the supervisor that no retry can
help: a job may exit 126 or 127 itself (a shell script whose inner command is briefly missing), and that
is an ordinary failure, retried like any other.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import functools
import importlib.util
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Mapping
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import FrameType
from typing import Any

from clients.files import open_private
from control_plane.jobs.capabilities import empty_capability_sets
from control_plane.jobs.identity import claim, process_start_ticks
from control_plane.jobs.job_user import blocked_for
from control_plane.jobs.reaper import KILL_SIGNAL, Family, become_subreaper

NOT_FOUND_EXIT = 127
NOT_EXECUTABLE_EXIT = 126
#: The most of a package's ``__init__`` the entrypoint's lookup reads (:func:`_may_change_path`).
_INIT_READ_LIMIT = 1 << 20

# linux/capability.h and linux/prctl.h
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4


def write_exit(path: Path, code: int, detail: str, *, launch_failed: bool = False) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    with open(temp, "w", encoding="utf-8") as sink:
        json.dump({"code": code, "detail": detail, "launch_failed": launch_failed}, sink)
        sink.flush()
        os.fsync(sink.fileno())
    os.replace(temp, path)


def describe_exit(code: int) -> str:
    """``exit code N`` or ``killed by signal SIGNAME`` (subprocess reports a signal as ``-signum``)."""
    if code >= 0:
        return f"exit code {code}"
    try:
        return f"killed by signal {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"


def job_search_path(env: Mapping[str, str]) -> list[str]:
    """The folders ``python -m`` searches in the job's environment, in order: the working folder (unless
    ``PYTHONSAFEPATH``), ``PYTHONPATH``, then the interpreter's own (the launcher runs the job's
    interpreter, isolated: its ``sys.path`` is the job's without the first two)."""
    cwd = os.getcwd()
    first = [] if env.get("PYTHONSAFEPATH") else [cwd]
    extra = [os.path.join(cwd, entry) for entry in env.get("PYTHONPATH", "").split(os.pathsep) if entry]
    return [*first, *extra, *sys.path]


def locate_module(module: str, env: Mapping[str, str]) -> tuple[bool, str | None]:
    """Whether the job's ``python -m MODULE`` will find ``module``, and the file it will run when known,
    found by the files in :func:`job_search_path` without running anything of the job's: a package's
    ``__init__`` is the job's code, and importing it here (``importlib.util.find_spec`` on a submodule
    does) would run it as the control plane's user. Looked up as the import system does, package by
    package through their folders (namespace packages included); below a package whose ``__init__``
    may change its ``__path__`` (it names it, or is compiled), the module counts as found, since only
    running it would tell (the job then fails like any other whose import fails)."""
    parts = module.split(".")
    if not all(part.isidentifier() for part in parts):
        return False, None
    spec = _find_spec(parts[0], job_search_path(env))
    if spec is None:  # builtin, frozen, or the finders of the interpreter's site-packages: a top-level
        spec = importlib.util.find_spec(parts[0])  # lookup imports nothing
    for depth in range(1, len(parts)):
        if spec is None or spec.submodule_search_locations is None:
            return False, None
        if spec.has_location and spec.origin and _may_change_path(spec.origin):
            return True, None
        spec = _find_spec(".".join(parts[: depth + 1]), list(spec.submodule_search_locations))
    if spec is None:
        return False, None
    origin = spec.origin if spec.has_location and spec.origin and os.path.isabs(spec.origin) else None
    return True, origin


def _find_spec(fullname: str, locations: list[str]) -> ModuleSpec | None:
    """``fullname``'s spec in the folders ``locations`` as the path-based import finds it: the first
    entry with a module or a regular package wins, else the namespace portions of them all. Asked of
    each entry's path-hook finder (``sys.path_hooks``), not of ``PathFinder``, which builds a namespace
    package's path from its parent in ``sys.modules``, where the job's packages never are here (it
    failed with KeyError for a namespace package below a regular one)."""
    portions: list[str] = []
    for entry in locations:
        finder = _entry_finder(entry)
        spec: ModuleSpec | None = None if finder is None else finder.find_spec(fullname)
        if spec is None:
            continue
        if spec.loader is not None:
            return spec
        portions.extend(spec.submodule_search_locations or ())
    if not portions:
        return None
    namespace = ModuleSpec(fullname, None, is_package=True)
    namespace.submodule_search_locations = portions
    return namespace


def _entry_finder(entry: str) -> Any:
    for hook in sys.path_hooks:
        try:
            return hook(entry)
        except ImportError:
            continue
    return None


def _may_change_path(init: str) -> bool:
    """Whether the package ``__init__`` file ``init`` may change its ``__path__``: True unless it is
    source that does not name it. Read only when it is a regular file of at most
    :data:`_INIT_READ_LIMIT` bytes, not a link (the launcher runs as root, and the job's folders are
    the job's: a fifo, a device or a link to ``/proc/kmsg`` named ``__init__.py`` would block it for
    good, or read a device); anything else counts as True (the job's own import will tell)."""
    if not init.endswith(".py"):
        return True
    try:
        if not stat.S_ISREG(os.lstat(init).st_mode):  # before opening: opening a device may act on it
            return True
        fd = os.open(init, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return True
    try:
        found = os.fstat(fd)  # what was opened, if it was swapped after the lstat
        if not stat.S_ISREG(found.st_mode) or found.st_size > _INIT_READ_LIMIT:
            return True
        data = b""
        while len(data) <= _INIT_READ_LIMIT and (chunk := os.read(fd, _INIT_READ_LIMIT + 1 - len(data))):
            data += chunk
        return len(data) > _INIT_READ_LIMIT or b"__path__" in data
    except OSError:
        return True
    finally:
        os.close(fd)


def _missing(module: str | None, argv: list[str], env: Mapping[str, str]) -> str | None:
    if module:
        try:
            found, _ = locate_module(module, env)
        except Exception as exc:  # whatever it is, the job fails with it, recorded
            return f"cannot look up entrypoint module {module!r}: {type(exc).__name__}: {exc}"
        return None if found else f"entrypoint module {module!r} not found"
    program = argv[0]
    if os.sep in program:
        return None if Path(program).exists() else f"entrypoint command {program!r} not found"
    found_program = shutil.which(program, path=env.get("PATH", os.defpath))
    return None if found_program else f"entrypoint command {program!r} not found on PATH"


def _unreachable(
    module: str | None, command: list[str], uid: int, gid: int, name: str, env: Mapping[str, str]
) -> str | None:
    """Why the job user cannot start the job (see the module docstring), or None."""
    program = command[0]
    if os.sep not in program:
        program = shutil.which(program, path=env.get("PATH", os.defpath)) or program
    needed = [Path(program), Path(os.path.realpath(program))]
    if module:
        try:
            _, origin = locate_module(module, env)  # _missing found it, without an error
        except Exception:  # not expected: _missing's lookup did not raise
            origin = None
        if origin is not None:
            needed.append(Path(origin))
    for path in needed:
        if problem := blocked_for(path, uid, gid):
            return (
                f"the job user {name} (uid {uid}) cannot read {path}: {problem}; the job user needs read"
                " access to the interpreter (or virtual environment) and to the job's code"
            )
    if problem := blocked_for(Path.cwd() / "-", uid, gid, read=False):
        return f"the job user {name} (uid {uid}) cannot enter the working folder {Path.cwd()}: {problem}"
    return None


def take_env(path: Path) -> dict[str, str]:
    """The job's environment from ``path`` (a JSON object of strings, written by the executor), which
    is deleted: it holds the job's token. A ``ValueError`` or ``OSError`` when it cannot be read."""
    try:
        with open(path, encoding="utf-8") as source:
            data = json.load(source)
    finally:
        path.unlink(missing_ok=True)
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise ValueError(f"{path} does not hold an environment (a JSON object of strings)")
    return data


def _drop_capabilities() -> None:
    """Runs in the job's process after its switch to the job user, before exec: takes every capability
    away from it for good. A control plane that is not root keeps its capabilities in the ambient set
    (``job_user.py``), and a change between two non-zero uids clears none of them: the job would exec
    with them all. Its permitted, effective and inheritable sets are emptied (which empties the ambient
    set too), and ``no_new_privs`` keeps set-user-ID programs and file capabilities from giving any
    back. Raises ``OSError`` when one step fails: the job then does not start."""
    if refused := empty_capability_sets():
        raise OSError(refused, "capset")
    libc = ctypes.CDLL(None, use_errno=True)
    # Emptied with the permitted set already; said again for kernels' sake (EINVAL: none before 4.3).
    if (
        libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0
        and ctypes.get_errno() != errno.EINVAL
    ):
        raise OSError(ctypes.get_errno(), "prctl(PR_CAP_AMBIENT_CLEAR_ALL)")
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")


def _die_with_parent(launcher: int) -> None:
    """Runs in the job's process between fork and exec: asks Linux to SIGKILL it when the launcher
    (``launcher``, its parent) dies (``PR_SET_PDEATHSIG``), and exits at once if it died before that
    was asked, so that the job never runs without its launcher: the executor SIGKILLs a launcher that
    has no child yet (``executor.LocalHandle.kill``), and this child may be on its way. A no-op
    elsewhere than Linux."""
    if not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != launcher:
        os._exit(NOT_EXECUTABLE_EXIT)


def _start_as_job_user(launcher: int) -> None:
    """``preexec_fn`` of a job run as a job user (after Python's switch of credentials)."""
    _drop_capabilities()
    _die_with_parent(launcher)


class _Signals:
    """The launcher's signal handlers (Python handlers, not SIG_IGN: an ignored disposition would be
    inherited by the job through exec). The group's SIGTERM (a cancel, a timeout) reaches the job
    directly and the launcher outlives it to record the end, passing it on to the processes that left
    the group; :data:`~control_plane.jobs.reaper.KILL_SIGNAL` kills every process below the launcher."""

    def __init__(self) -> None:
        #: Set once the job's process has started (only then is there anything below the launcher).
        self.family: Family | None = None
        self.kill_requested = False

    def install(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_stop)
        signal.signal(KILL_SIGNAL, self._on_kill)

    def _on_stop(self, signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGTERM and self.family is not None:
            self.family.forward_term()

    def _on_kill(self, _signum: int, _frame: FrameType | None) -> None:
        self.kill_requested = True
        if self.family is not None:
            self.family.kill_all()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="control_plane.jobs.launcher")
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--pid-file", type=Path, required=True)
    parser.add_argument("--exit-file", type=Path, required=True)
    parser.add_argument("--module", default=None, help="the job's module, checked before starting")
    parser.add_argument("--env-file", type=Path, default=None, help="the job's environment (deleted)")
    parser.add_argument("--user", type=int, default=None, help="the uid the job runs as")
    parser.add_argument("--group", type=int, default=None, help="the gid the job runs as")
    parser.add_argument("--user-name", default="", help="the job user's name, for messages")
    parser.add_argument(
        "--uid-of-its-own", action="store_true", help="no other process runs as --user (a uid range's)"
    )
    parser.add_argument(
        "--kill-grace", type=float, default=10.0, help="SIGTERM to SIGKILL, for what the job left"
    )
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command: list[str] = args.command[1:] if args.command[:1] == ["--"] else args.command
    signals = _Signals()
    signals.install()
    env: dict[str, str] = dict(os.environ)  # without --env-file: the launcher's (run by hand)
    env_problem = None
    if args.env_file is not None:
        try:
            env = take_env(args.env_file)
        except (OSError, ValueError) as exc:
            env_problem = f"cannot read the job's environment: {exc}"
    # Created 0600 when missing (the control plane creates it first): what the job prints is its owner's.
    with os.fdopen(open_private(args.log), "ab", buffering=0) as log:
        me = os.getpid()
        found = claim(args.pid_file, {"pid": me, "start_ticks": process_start_ticks(me)})
        if found is not None:  # a control plane counted this attempt as lost before it could start
            log.write(b"[aether] this attempt was given up before it started (control plane restart)\n")
            return 1
        problem = env_problem or (_missing(args.module, command, env) if command else "no command given")
        if problem is not None:
            log.write(f"[aether] error: {problem}\n".encode())
            write_exit(args.exit_file, NOT_FOUND_EXIT, problem, launch_failed=True)
            return NOT_FOUND_EXIT
        if args.user is not None:
            gid = os.getgid() if args.group is None else args.group
            name = args.user_name or str(args.user)
            problem = _unreachable(args.module, command, args.user, gid, name, env)
            if problem is not None:
                log.write(f"[aether] error: {problem}\n".encode())
                write_exit(args.exit_file, NOT_EXECUTABLE_EXIT, problem, launch_failed=True)
                return NOT_EXECUTABLE_EXIT
        try:
            become_subreaper()  # before the job starts: whatever it starts stays below the launcher
        except OSError as exc:  # a job that could outlive its attempt is not started
            problem = f"cannot keep hold of the job's processes: {exc}"
            log.write(f"[aether] error: {problem}\n".encode())
            write_exit(args.exit_file, NOT_EXECUTABLE_EXIT, problem, launch_failed=True)
            return NOT_EXECUTABLE_EXIT
        # The job user's credentials, when there is one: no group of the launcher's goes with them.
        as_user = {} if args.user is None else {"user": args.user, "group": gid, "extra_groups": []}
        try:
            # preexec_fn is safe here: the launcher runs no other thread. Python changes the credentials
            # before it calls preexec_fn, so the parent-death signal survives them, and the capabilities
            # dropped are the job user's.
            child = subprocess.Popen(
                command,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=functools.partial(
                    _die_with_parent if args.user is None else _start_as_job_user, os.getpid()
                ),
                **as_user,
            )
        except (OSError, subprocess.SubprocessError) as exc:  # SubprocessError: preexec_fn raised
            detail = f"cannot start {command[0]!r}: {exc}"
            log.write(f"[aether] error: {detail}\n".encode())
            code = NOT_FOUND_EXIT if isinstance(exc, FileNotFoundError) else NOT_EXECUTABLE_EXIT
            write_exit(args.exit_file, code, detail, launch_failed=True)
            return code

        def note(line: str) -> None:
            log.write(f"[aether] {line}\n".encode())

        # Only a uid of the attempt's own may be signalled whole: a job user's is shared by other jobs.
        family = Family(child.pid, note, args.user if args.uid_of_its_own else None)
        signals.family = family
        if signals.kill_requested:  # killed while the job was being started
            family.kill_all()
        code = family.wait_main()
        child.returncode = code  # reaped by the family: Popen must not wait for it again
        # Recorded as soon as the job has ended, so that its outcome is decided (a cancel arriving while
        # its leftovers are ended does not overrule it); the attempt ends only once the launcher has
        # gone, after every process below it (reaper.py).
        write_exit(args.exit_file, code, describe_exit(code))
        family.end_the_rest(args.kill_grace, describe_exit(code))
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
