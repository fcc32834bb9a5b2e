"""The local executor with real processes: exit records, signals to the whole group, re-adoption by
pid and start time, and the launcher's own errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from clients.aether.v1 import jobs_pb2 as pb
from control_plane.jobs.executor import (
    PACKAGE_ROOT,
    ExitStatus,
    JobHandle,
    JobLaunch,
    LocalExecutor,
    read_exit_file,
)
from control_plane.jobs.files import JobFiles
from control_plane.jobs.identity import process_start_ticks
from control_plane.jobs.launcher import write_exit
from control_plane.jobs.spec import spec_from_mapping


def launch(tmp_path: Path, code: str, *, module: str = "") -> tuple[LocalExecutor, JobLaunch, JobHandle]:
    files = JobFiles(tmp_path / "job")
    files.folder.mkdir()
    entry = {"module": module} if module else {"command": [sys.executable, "-c", code]}
    job = JobLaunch("j1", spec_from_mapping({"name": "t", "entrypoint": entry}), files)
    executor = LocalExecutor()
    return (
        executor,
        job,
        executor.launch(job, 1, ["0"], {"AETHER_JOB_ATTEMPT": "1", "CUDA_VISIBLE_DEVICES": "0"}),
    )


def wait(handle: JobHandle, timeout: float = 10.0) -> ExitStatus:
    deadline = time.monotonic() + timeout
    while (status := handle.poll()) is None:
        assert time.monotonic() < deadline, "the process did not end"
        time.sleep(0.02)
    return status


def test_exit_code_and_output_are_recorded(tmp_path: Path) -> None:
    code = "import os,sys; print('visible', os.environ['CUDA_VISIBLE_DEVICES']); sys.exit(4)"
    _, job, handle = launch(tmp_path, code)
    assert wait(handle) == ExitStatus(4, "exit code 4")
    assert "visible 0" in job.files.log.read_text()
    assert job.files.exit_file(1).is_file()


def test_terminate_reaches_the_job_and_the_signal_is_recorded(tmp_path: Path) -> None:
    _, _, handle = launch(tmp_path, "import time; print('up', flush=True); time.sleep(60)")
    time.sleep(0.3)
    handle.terminate()
    assert wait(handle) == ExitStatus(-15, "killed by signal SIGTERM")


def test_a_running_attempt_is_adopted_by_pid_and_start_time(tmp_path: Path) -> None:
    executor, job, handle = launch(tmp_path, "import time; time.sleep(60)")
    # Started up (its environment read, its signal handlers set): a stranger's poll below must not take
    # the environment file from a launcher yet to read it, and the launcher records the kill.
    _claimed(job.files.pid_file(1))
    pid = handle.pid
    assert pid is not None
    _job_started(pid)  # so the kill goes through the launcher, which records it
    assert pid is not None and process_start_ticks(pid) is not None
    adopted = executor.adopt(job, 1, handle.ref)
    assert adopted is not None and adopted.poll() is None  # alive: adopted
    # A recorded start time that does not match is another process that reused the pid: not ours.
    stranger = executor.adopt(job, 1, f"{pid}:1")
    assert stranger is not None and stranger.poll() is not None
    adopted.kill()
    assert wait(adopted) == ExitStatus(-9, "killed by signal SIGKILL")
    assert wait(handle).code == -9
    assert executor.adopt(job, 1, "garbage") is None


def test_an_attempt_whose_process_was_not_recorded_is_found_through_its_pid_file(tmp_path: Path) -> None:
    # The control plane died between launch() and storing handle.ref: adopt gets no ref.
    executor, job, handle = launch(tmp_path, "import time; time.sleep(60)")
    _claimed(job.files.pid_file(1))  # the launcher claims it before starting the job
    assert handle.pid is not None
    _job_started(handle.pid)  # killed before, the launcher would be SIGKILLed, without an exit record
    adopted = executor.adopt(job, 1, "")
    assert adopted is not None and adopted.ref == handle.ref and adopted.poll() is None
    adopted.kill()
    assert wait(adopted).code == -9 and wait(handle).code == -9


def _claimed(pid_file: Path, timeout: float = 30.0) -> None:
    """Waits for the launcher's claim of ``pid_file``, which it makes once its signal handlers are set."""
    deadline = time.monotonic() + timeout
    while not pid_file.exists():
        assert time.monotonic() < deadline, "the launcher wrote no pid file"
        time.sleep(0.02)


def _job_started(launcher: int, timeout: float = 30.0) -> None:
    """Waits for the launcher to have started the job (a child)."""
    deadline = time.monotonic() + timeout
    while not _has_children(launcher):
        assert time.monotonic() < deadline, "the launcher started no job"
        time.sleep(0.02)


def test_an_attempt_given_up_before_its_launcher_claimed_it_never_starts(tmp_path: Path) -> None:
    files = JobFiles(tmp_path / "job")
    files.folder.mkdir()
    started = tmp_path / "started"
    entry = {"command": [sys.executable, "-c", f"open({str(started)!r}, 'w')"]}
    job = JobLaunch("j3", spec_from_mapping({"name": "t", "entrypoint": entry}), files)
    executor = LocalExecutor()
    # A restarted control plane finds the attempt RUNNING with no process recorded and none claimed yet:
    # it gives the attempt up (and will free its devices), so a launcher still on its way must not start.
    files.env_file(1).write_text("{}")  # as a control plane killed between writing it and the launch
    assert executor.adopt(job, 1, "") is None
    assert not files.env_file(1).exists()  # no launcher will take it
    status = wait(executor.launch(job, 1, [], {}))
    assert status.code is None and not started.exists()
    assert "given up before it started" in files.log.read_text()


def test_a_missing_module_fails_in_the_launcher_with_the_error_logged(tmp_path: Path) -> None:
    _, job, handle = launch(tmp_path, "", module="zz_no_such_module_anywhere")
    status = wait(handle)
    assert status == ExitStatus(
        127, "entrypoint module 'zz_no_such_module_anywhere' not found", launch_failed=True
    )
    assert "[aether] error: entrypoint module" in job.files.log.read_text()


def test_an_unexecutable_command_fails_in_the_launcher(tmp_path: Path) -> None:
    script = tmp_path / "not-executable.sh"
    script.write_text("#!/bin/sh\n")
    files = JobFiles(tmp_path / "job")
    files.folder.mkdir()
    job = JobLaunch("j2", pb.JobSpec(name="t", entrypoint=pb.Entrypoint(command=[str(script)])), files)
    status = wait(LocalExecutor().launch(job, 1, [], {}))
    assert status.code == 126 and "cannot start" in status.detail and status.launch_failed


def test_the_jobs_own_exit_127_is_not_a_launch_failure(tmp_path: Path) -> None:
    # A job may exit 127 or 126 itself (a shell whose inner command is missing): the same code as the
    # launcher's own errors, but the entrypoint did start, so it is an ordinary, retryable failure.
    _, _, handle = launch(tmp_path, "import sys; sys.exit(127)")
    assert wait(handle) == ExitStatus(127, "exit code 127", launch_failed=False)


def _gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while process_start_ticks(pid) is not None:  # None: no such process, or a zombie
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _pids_written(path: Path, count: int, timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        lines = path.read_text().split() if path.exists() else []
        if len(lines) >= count:
            return [int(line) for line in lines]
        assert time.monotonic() < deadline, f"the job did not write {count} pids"
        time.sleep(0.02)


def test_a_killed_launcher_leaves_no_job_running(tmp_path: Path) -> None:
    """SIGKILL of the launcher alone (the OOM killer, say): the job dies with it (parent-death signal),
    and what the job started in the group is killed once the executor finds the launcher gone."""
    pids = tmp_path / "pids.txt"
    code = (
        "import os, subprocess, time; "
        "grandchild = subprocess.Popen(['sleep', '60']); "
        f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{grandchild.pid}}'); "
        "time.sleep(60)"
    )
    _, _, handle = launch(tmp_path, code)
    job_pid, grandchild_pid = _pids_written(pids, 2)
    launcher_pid = handle.pid
    assert launcher_pid is not None
    os.kill(launcher_pid, signal.SIGKILL)
    assert _gone(job_pid), "the job outlived its launcher"
    assert process_start_ticks(grandchild_pid) is not None  # the grandchild has no parent-death signal
    status = wait(handle)
    assert status.code is None and "without recording an exit status" in status.detail
    assert _gone(grandchild_pid), "the job's own child outlived the attempt"


def _daemon_code(pid_file: Path, prelude: str = "") -> str:
    """A job that starts a daemon (``programs/job.py``'s: a double fork and setsid, out of the job's
    group and session, ignoring SIGTERM) that writes its pid to ``pid_file``; ``prelude`` runs first."""
    return (
        f"{prelude}from pathlib import Path; from tests.integration.jobs.programs.job import start_daemon; "
        f"start_daemon(Path({str(pid_file)!r}))"
    )


def _kill_if_alive(*pid_files: Path) -> None:
    """Stops what a failed test left running (the daemon has no parent-death signal)."""
    for pid_file in pid_files:
        for pid in pid_file.read_text().split() if pid_file.exists() else ():
            if process_start_ticks(int(pid)) is not None:
                os.kill(int(pid), signal.SIGKILL)


def test_a_daemon_the_job_started_ends_with_its_attempt(tmp_path: Path) -> None:
    """A process that left the job's group and session (a daemon) and ignores SIGTERM outlived the
    attempt, which ended once the group was empty: it kept the GPU given to the next job, and the
    token. The launcher, a subreaper, ends it (SIGTERM, SIGKILL after the grace) before it goes."""
    daemon_file = tmp_path / "daemon"
    files = JobFiles(tmp_path / "job")
    files.folder.mkdir()
    entry = {"command": [sys.executable, "-c", _daemon_code(daemon_file)]}
    job = JobLaunch("j9", spec_from_mapping({"name": "t", "entrypoint": entry}), files)
    handle = LocalExecutor(kill_grace_s=0.5).launch(job, 1, ["0"], {})
    try:
        status = wait(handle, timeout=60)
        assert status == ExitStatus(0, "exit code 0"), files.log.read_text()
        (daemon,) = _pids_written(daemon_file, 1)
        assert process_start_ticks(daemon) is None, "the daemon outlived its attempt"
        log = files.log.read_text()
        assert "the job ended (exit code 0) but left processes running; sending them SIGTERM" in log, log
        assert "still running 0.5s after SIGTERM; sending SIGKILL" in log, log
    finally:
        _kill_if_alive(daemon_file)


def test_a_killed_attempt_leaves_no_process_that_left_its_group(tmp_path: Path) -> None:
    """The job's own process leaves the group (setsid) and ignores SIGTERM, and starts a daemon: neither
    the group's SIGTERM nor its SIGKILL reached them, and SIGKILL to the group killed the launcher,
    whose daemon then went on under init. The kill ends both, and the launcher records it."""
    main_file, daemon_file = tmp_path / "main", tmp_path / "daemon"
    prelude = (
        "import os, signal, time; os.setsid(); signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        f"open({str(main_file)!r}, 'w').write(str(os.getpid())); "
    )
    code = _daemon_code(daemon_file, prelude) + "; time.sleep(60)"
    _, _, handle = launch(tmp_path, code)
    try:
        (main,) = _pids_written(main_file, 1, timeout=30)
        (daemon,) = _pids_written(daemon_file, 1, timeout=30)
        handle.terminate()
        assert handle.poll() is None
        handle.kill()
        status = wait(handle, timeout=60)
        assert process_start_ticks(main) is None, "the job's process outlived its attempt"
        assert process_start_ticks(daemon) is None, "the daemon outlived its attempt"
        assert status == ExitStatus(-9, "killed by signal SIGKILL")
    finally:
        _kill_if_alive(main_file, daemon_file)


def write_old_exit(path: Path, code: int, detail: str) -> None:
    """``write_exit`` of the launcher before the ``launch_failed`` flag (before commit 0135ecb), as it was."""
    temp = path.with_name(f".{path.name}.tmp")
    with open(temp, "w", encoding="utf-8") as sink:
        json.dump({"code": code, "detail": detail}, sink)
        sink.flush()
        os.fsync(sink.fileno())
    os.replace(temp, path)


# What that launcher recorded for its own failures (127 or 126 with its error) and for a job's own end
# (``describe_exit``). A job such a launcher started may end after an upgrade, read by the new control plane.
OLD_LAUNCHER_EXITS = [
    (127, "entrypoint module 'train' not found", True),
    (127, "entrypoint command 'train.sh' not found on PATH", True),
    (127, "entrypoint command '/opt/train' not found", True),
    (127, "no command given", True),
    (127, "cannot start '/opt/train': [Errno 2] No such file or directory: '/opt/train'", True),
    (126, "cannot start '/opt/train': [Errno 13] Permission denied: '/opt/train'", True),
    (127, "exit code 127", False),
    (126, "exit code 126", False),
    (3, "exit code 3", False),
    (0, "exit code 0", False),
    (-9, "killed by signal SIGKILL", False),
]


@pytest.mark.parametrize(("code", "detail", "launch_failed"), OLD_LAUNCHER_EXITS)
def test_an_old_launchers_exit_file_says_whether_the_launcher_failed(
    tmp_path: Path, code: int, detail: str, launch_failed: bool
) -> None:
    path = tmp_path / "attempt-1.exit.json"
    write_old_exit(path, code, detail)
    assert "launch_failed" not in json.loads(path.read_text())
    assert read_exit_file(path) == ExitStatus(code, detail, launch_failed)


def test_the_flag_of_a_current_exit_file_wins_over_its_code(tmp_path: Path) -> None:
    path = tmp_path / "attempt-1.exit.json"
    write_exit(path, 127, "entrypoint module 'train' not found", launch_failed=True)
    assert read_exit_file(path).launch_failed
    write_exit(path, 127, "entrypoint module 'train' not found")  # flag false: believed, not second-guessed
    assert not read_exit_file(path).launch_failed


def test_an_attempt_ends_only_once_what_it_left_in_its_group_is_gone(tmp_path: Path) -> None:
    """The job exits 0 and leaves a child that ignores SIGTERM: the attempt is still running (its devices
    held) until that child is gone, which takes SIGTERM, then SIGKILL after the grace period."""
    pids = tmp_path / "pids.txt"
    code = (
        "import subprocess; "
        "child = subprocess.Popen(['bash', '-c', 'trap \"\" TERM; exec sleep 60']); "
        f"open({str(pids)!r}, 'w').write(str(child.pid))"
    )
    files = JobFiles(tmp_path / "job")
    files.folder.mkdir()
    job = JobLaunch(
        "j4", spec_from_mapping({"name": "t", "entrypoint": {"command": [sys.executable, "-c", code]}}), files
    )
    handle = LocalExecutor(kill_grace_s=0.5).launch(job, 1, ["0"], {})
    (child,) = _pids_written(pids, 1)
    while not files.exit_file(1).exists():  # the job has ended; the launcher ends what it left
        time.sleep(0.02)
    polls = []
    while (status := handle.poll()) is None:
        polls.append(process_start_ticks(child) is not None)
        time.sleep(0.02)
    assert status == ExitStatus(0, "exit code 0")
    assert polls and polls[0], "the attempt was reported ended while its child ran"
    assert process_start_ticks(child) is None
    log = files.log.read_text()
    # The launcher ends them (it stays until they are gone: reaper.py).
    assert "left processes running; sending them SIGTERM" in log and "sending SIGKILL" in log
    assert handle.poll() == status  # and stays ended


def test_nothing_of_the_jobs_runs_in_the_launcher(tmp_path: Path) -> None:
    """The launcher is the control plane's user (root, with AETHER_JOB_USER): the spec's PYTHONPATH (a
    sitecustomize) and the entrypoint's package ``__init__`` run in the job's process only. A package
    that raises on import fails the job like any other failure, with an exit record."""
    site, code = tmp_path / "site", tmp_path / "code"
    (code / "badpkg").mkdir(parents=True)
    site.mkdir()
    ran = tmp_path / "ran"  # one line per process that ran job code: its parent's pid
    record = f"import os; open({str(ran)!r}, 'a').write(f'{{os.getppid()}}\\n')\n"
    (site / "sitecustomize.py").write_text(record)
    (code / "badpkg" / "__init__.py").write_text(record + "raise RuntimeError('boom at import')\n")
    (code / "badpkg" / "main.py").write_text("print('main ran')\n")
    files = JobFiles(tmp_path / "job")
    files.folder.mkdir()
    spec = {
        "name": "t",
        "entrypoint": {"module": "badpkg.main"},
        "env": {"PYTHONPATH": f"{site}{os.pathsep}{code}", "AETHER_TEST_SPEC_VAR": "spec"},
    }
    handle = LocalExecutor().launch(JobLaunch("j5", spec_from_mapping(spec), files), 1, [], {})
    assert wait(handle) == ExitStatus(1, "exit code 1", launch_failed=False)
    log = files.log.read_text()
    assert "RuntimeError: boom at import" in log and "main ran" not in log
    # Only the launcher's child (the job) ran them; not the launcher, whose parent is this process.
    assert ran.read_text().split() == [str(handle.pid)] * 2, (ran.read_text(), handle.pid)
    assert not files.env_file(1).exists()  # the job's environment (its token) is not left behind


@pytest.mark.parametrize(
    "layout",
    [
        ("app/__init__.py", "app/jobs/train.py"),  # a namespace package below a regular one
        ("nspkg/sub/train.py",),  # namespace packages two deep
        ("ns1/train.py",),
    ],
    ids=["namespace-in-regular", "namespace-in-namespace", "namespace"],
)
def test_an_entrypoint_module_in_a_namespace_package_is_found_and_runs(
    tmp_path: Path, layout: tuple[str, ...]
) -> None:
    # The launcher looks the module up by its files, importing nothing of the job's; a namespace package
    # below a regular one made that lookup fail (KeyError: the parent was not imported), and the job
    # failed at launch without a retry, where python -m runs it.
    code = tmp_path / "code"
    for name in layout:
        (code / name).parent.mkdir(parents=True, exist_ok=True)
        (code / name).write_text("print('trained')\n" if name.endswith("train.py") else "")
    module = layout[-1].removesuffix(".py").replace("/", ".")
    files = JobFiles(tmp_path / "job")
    files.folder.mkdir()
    spec = {"name": "t", "entrypoint": {"module": module}, "env": {"PYTHONPATH": str(code)}}
    handle = LocalExecutor().launch(JobLaunch("j7", spec_from_mapping(spec), files), 1, [], {})
    assert wait(handle) == ExitStatus(0, "exit code 0", launch_failed=False), files.log.read_text()
    assert "trained" in files.log.read_text()


def test_the_jobs_environment_file_goes_with_a_launcher_killed_before_it_read_it(tmp_path: Path) -> None:
    # The file holds the job's environment (its token, the spec's secrets); only the launcher removed it,
    # so a launcher killed (a cancel, a crash) before it started up left it in the job's folder.
    files = JobFiles(tmp_path / "job")
    files.folder.mkdir()
    entry = {"command": [sys.executable, "-c", "pass"]}
    spec = {"name": "t", "entrypoint": entry, "env": {"SPEC_SECRET": "s3cret"}}
    handle = LocalExecutor().launch(JobLaunch("j8", spec_from_mapping(spec), files), 1, [], {})
    assert handle.pid is not None
    os.kill(handle.pid, signal.SIGSTOP)  # long before its interpreter has started up and read the file
    assert files.env_file(1).exists()
    handle.kill()
    status = wait(handle)
    assert status.code is None, status  # killed, no exit recorded
    assert not files.env_file(1).exists()


def test_the_launcher_runs_isolated_in_a_fixed_environment(tmp_path: Path) -> None:
    files = JobFiles(tmp_path / "job")
    files.folder.mkdir()
    entry = {
        "command": [
            sys.executable,
            "-c",
            "import os, time; print(os.environ['SPEC_VAR'], flush=True); time.sleep(60)",
        ]
    }
    spec = {"name": "t", "entrypoint": entry, "env": {"SPEC_VAR": "from-spec", "LD_PRELOAD": ""}}
    handle = LocalExecutor().launch(JobLaunch("j6", spec_from_mapping(spec), files), 1, [], {"AETHER_X": "1"})
    deadline = time.monotonic() + 10
    while "from-spec" not in files.log.read_text():
        assert time.monotonic() < deadline, files.log.read_text()
        time.sleep(0.02)
    try:
        launcher = Path(f"/proc/{handle.pid}")
        environ = launcher.joinpath("environ").read_bytes().split(b"\0")
        assert [entry for entry in environ if entry] == [f"PATH={os.defpath}".encode()]
        assert launcher.joinpath("cmdline").read_bytes().split(b"\0")[1] == b"-I"
    finally:
        handle.kill()
    wait(handle)


def _ended(handle: JobHandle, timeout: float = 30.0) -> ExitStatus | None:
    """``handle``'s status once it has ended, polling it as the supervisor does; None after ``timeout``."""
    deadline = time.monotonic() + timeout
    while (status := handle.poll()) is None and time.monotonic() < deadline:
        time.sleep(0.02)
    return status


def _plant_link_to_proc(init: Path) -> None:
    # Stands in for a link to /proc/kmsg, whose read blocks (and takes the kernel's messages).
    init.symlink_to("/proc/self/status")


def _plant_fifo(init: Path) -> None:
    os.mkfifo(init)


def _plant_huge_file(init: Path) -> None:
    with init.open("wb") as sink:  # sparse: no disk taken
        sink.truncate(4 << 30)


@pytest.mark.parametrize(
    "plant", [_plant_link_to_proc, _plant_fifo, _plant_huge_file], ids=["link-to-proc", "fifo", "4-gib"]
)
def test_the_entrypoints_lookup_reads_only_regular_files_of_a_bounded_size(
    tmp_path: Path, plant: Callable[[Path], None]
) -> None:
    """The launcher (root) looks the entrypoint up in the job's folders, which the job or any local user
    may write: a package's ``__init__.py`` linked to /proc/kmsg blocked it for good, before the job had
    started (the attempt stayed RUNNING), and a huge one was read whole into its memory. It reads no
    link, no fifo or device, nothing over a bound: such a package counts as found (the job's own import
    tells the rest)."""
    code = tmp_path / "code"
    (code / "pkg").mkdir(parents=True)
    plant(code / "pkg" / "__init__.py")
    (code / "pkg" / "sub.py").write_text("")
    lookup = (
        "import resource; from control_plane.jobs.launcher import locate_module; "
        "resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30)); "
        f"print(locate_module('pkg.sub', {{'PYTHONPATH': {str(code)!r}}}))"
    )
    # In a process of its own, its memory bounded: the lookup must neither block nor read it all.
    found = subprocess.run(
        [sys.executable, "-c", lookup], capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": PACKAGE_ROOT},
    )  # fmt: skip
    if plant is _plant_fifo:  # not a regular file: no package for the import system, so not read either
        assert found.stdout.strip() == f"(True, {str(code / 'pkg' / 'sub.py')!r})", found
    else:
        assert found.stdout.strip() == "(True, None)", found


#: Stands in for a launcher stuck before (or while) it ends its job: it ignores the stop's SIGTERM and
#: the kill signal (``reaper.KILL_SIGNAL``) and never exits by itself before 60 s.
STUCK_LAUNCHER = "#!/bin/sh\ntrap '' TERM USR1 HUP INT\n{child}exec sleep 60\n"


@pytest.mark.parametrize("child", [False, True], ids=["nothing-below-it", "a-process-below-it"])
def test_a_launcher_that_does_not_answer_the_kill_is_sigkilled(tmp_path: Path, child: bool) -> None:
    """With nothing below it the launcher is SIGKILLed at once; with a process below it, once it is still
    alive the kill grace after it was asked to kill (its clean-up stuck). Neither was: the kill only
    asked the launcher, and the attempt stayed RUNNING for good."""
    launcher_program = tmp_path / "stuck-launcher"
    launcher_program.write_text(STUCK_LAUNCHER.format(child="sleep 60 &\n" if child else ""))
    launcher_program.chmod(0o755)
    files = JobFiles(tmp_path / "job")
    files.folder.mkdir()
    job = JobLaunch("j11", spec_from_mapping({"name": "t", "entrypoint": {"command": ["true"]}}), files)
    handle = LocalExecutor(python=str(launcher_program), kill_grace_s=0.5).launch(job, 1, [], {})
    launcher = handle.pid
    assert launcher is not None
    try:
        deadline = time.monotonic() + 30
        while child and not _has_children(launcher):
            assert time.monotonic() < deadline, "the stand-in launcher started no child"
            time.sleep(0.02)
        handle.kill()
        status = _ended(handle)
        assert status is not None, "the launcher was never killed"
        assert status.code is None, status  # no exit recorded: killed
        assert _gone(launcher)
        log = files.log.read_text()
        assert ("still running 0.5s after it was asked to kill it; sending it SIGKILL" in log) is child, log
    finally:
        if process_start_ticks(launcher) is not None:
            os.killpg(launcher, signal.SIGKILL)


def _has_children(pid: int) -> bool:
    return bool(Path(f"/proc/{pid}/task/{pid}/children").read_text().split())


#: Launches an attempt whose environment (a secret of 10,000 bytes in the spec's ``env``) is more than the
#: process may write to one file (RLIMIT_FSIZE, with SIGXFSZ ignored: the write fails with EFBIG once the
#: file reaches 4 KiB), as a full disk does part-way through the file.
_LAUNCH_PAST_THE_FILE_SIZE_LIMIT = """
import resource, signal, sys
from pathlib import Path
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
from control_plane.jobs.executor import JobLaunch, LocalExecutor
from control_plane.jobs.files import JobFiles
from control_plane.jobs.spec import spec_from_mapping
spec = spec_from_mapping({"name": "t", "entrypoint": {"command": ["true"]}, "env": {"SECRET": "s" * 10000}})
job = JobLaunch("j1", spec, JobFiles(Path(sys.argv[1])))
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
try:
    LocalExecutor().launch(job, 1, [], {})
except OSError as exc:
    print("refused", exc.errno)
"""


def test_an_environment_file_the_disk_refuses_part_way_is_not_left_behind(tmp_path: Path) -> None:
    """The attempt's environment file holds the spec's secrets: one whose write failed part-way (a full
    disk; here a real file-size limit) was left in the job's folder, 4 KiB of secrets no launcher would
    read or delete."""
    folder = tmp_path / "job"
    folder.mkdir()
    run = subprocess.run(
        [sys.executable, "-B", "-c", _LAUNCH_PAST_THE_FILE_SIZE_LIMIT, str(folder)],
        capture_output=True, text=True, timeout=60, cwd=PACKAGE_ROOT,
    )  # fmt: skip
    assert run.stdout.strip() == "refused 27", run.stderr  # EFBIG
    assert not JobFiles(folder).env_file(1).exists()
