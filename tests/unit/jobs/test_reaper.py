"""The launcher's clean-up of what a job leaves below it (``control_plane/jobs/reaper.py``), with real
processes: its cost grows with what is left, not with its square, and a chain of processes each forking
its successor is killed at once when the attempt has a uid of its own.

Every process these tests start ends by itself (an alarm, a generation cap) and is bounded in number:
the pid table is shared."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from control_plane.jobs.executor import PACKAGE_ROOT, ExitStatus, JobLaunch, LocalExecutor
from control_plane.jobs.files import JobFiles
from control_plane.jobs.identity import process_start_ticks
from control_plane.jobs.job_user import JobUser, blocked_for
from control_plane.jobs.spec import spec_from_mapping
from control_plane.jobs.uid_range import uids_in_use

#: How many processes the job leaves: enough that one reaped per pass (each pass a scan of /proc) is
#: told apart from all that ended reaped per pass, few enough for a shared pid table.
LEFT = 400

#: Runs in a process of its own, a subreaper like the launcher: the job's main process starts LEFT
#: children that ignore SIGTERM (each ends by itself after 60 s), then exits 0; the Family ends them
#: (SIGTERM, then SIGKILL 0.2 s later). Prints how many times /proc was scanned for them.
PROBE = f"""
import json, os, signal, sys
from control_plane.jobs import reaper
scans = 0
listed = reaper.descendants
def counted(root):
    global scans
    scans += 1
    return listed(root)
reaper.descendants = counted
reaper.become_subreaper()
main = os.fork()
if main == 0:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for _ in range({LEFT}):
        if os.fork() == 0:
            signal.alarm(60)
            while True:
                signal.pause()
    os._exit(0)
family = reaper.Family(main, lambda line: None)
code = family.wait_main()
family.end_the_rest(0.2, "exit code 0")
print(json.dumps({{"code": code, "scans": scans}}))
"""


def test_the_processes_a_job_left_are_reaped_all_at_once_not_one_per_pass() -> None:
    """Each pass of the clean-up scanned /proc and signalled every descendant (zombies included) but
    reaped one child: 1,000 leftovers took 20 s after their SIGKILL, 2,000 took 91 s. Every pass now
    reaps all that ended, so the passes are not one per process."""
    probe = subprocess.Popen(
        [sys.executable, "-c", PROBE],
        env={**os.environ, "PYTHONPATH": PACKAGE_ROOT},
        stdout=subprocess.PIPE,
        start_new_session=True,  # its group holds all it starts: the clean-up below if it hangs
    )
    try:
        out, _ = probe.communicate(timeout=300)
    finally:
        if probe.poll() is None:
            os.killpg(probe.pid, signal.SIGKILL)
            probe.wait()
    result = json.loads(out)
    assert result["code"] == 0
    # One SIGTERM pass, then SIGKILL passes (10 ms apart) while the killed processes go: one reaped per
    # pass made it at least LEFT.
    assert result["scans"] < LEFT // 2, result


#: Two uids far above any a system hands out (as ``test_job_uid_range.py``'s), for the chain below.
CHAIN_UID = 3_141_592_010
#: The chain's generation cap: it ends by itself there (and with it the zombies it would pile up).
CHAIN_CAP = 3000
#: The launcher's grace between SIGTERM and SIGKILL, which the chain (ignoring SIGTERM) must outlive to
#: reach generation 10 and write ``up``: at 0.1 s a CI run that loaded both cores killed it sooner, and
#: ``up`` never came (a test that failed once in a clean-clone CI run beside other test runs).
CHAIN_GRACE_S = 0.5
#: A job whose main process exits 0 at once, leaving a chain that ignores SIGTERM: each link forks its
#: successor and exits, generation after generation (as a runaway restart loop or a hostile job does).
#: The chain writes ``up`` at generation 10, and ``done`` if it reaches its cap or runs 30 s.
CHAIN = f"""
import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
folder, end = sys.argv[1], time.monotonic() + 30
if os.fork():
    os._exit(0)
for generation in range({CHAIN_CAP}):
    if generation == 10:
        open(os.path.join(folder, "up"), "w").close()
    if os.fork():
        os._exit(0)
    if time.monotonic() > end:
        break
open(os.path.join(folder, "done"), "w").close()
"""


@pytest.fixture
def chain_folder() -> Iterator[Path]:
    """A folder the chain's uid writes its markers in, reachable through a 0711 parent."""
    base = Path(tempfile.mkdtemp(prefix="aether-chain-"))
    try:
        base.chmod(0o711)
        folder = base / "chain"
        folder.mkdir()
        os.chown(folder, CHAIN_UID, CHAIN_UID)
        yield folder
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _chain_uid() -> tuple[int, str]:
    """The chain's uid and a python it may run, or a skip saying why there are none."""
    if os.geteuid() != 0:
        pytest.skip(f"running a job as another uid needs root; the tests run as uid {os.geteuid()}")
    if CHAIN_UID in {entry.pw_uid for entry in pwd.getpwall()}:
        pytest.skip(f"uid {CHAIN_UID} is a user of this host")
    if CHAIN_UID in uids_in_use():
        pytest.skip(f"processes run as uid {CHAIN_UID}")
    python = shutil.which("python3", path="/usr/bin:/bin:/usr/local/bin")
    if python is None or blocked_for(Path(os.path.realpath(python)), CHAIN_UID, CHAIN_UID):
        pytest.skip("no python3 that any user may run")
    return CHAIN_UID, python


def _children(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:  # gone
        return []


def _wait_for(path: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.01)


def test_a_forking_chain_of_an_attempt_with_a_uid_of_its_own_is_killed_and_the_launcher_exits(
    tmp_path: Path, chain_folder: Path
) -> None:
    """A pass over /proc is always behind a chain of processes each forking its successor: the SIGKILL
    after the grace missed it, its dead links piled up as the launcher's zombies (one reaped per pass),
    and the launcher did not exit until the chain stopped by itself (the attempt kept its GPUs and uid).
    With a uid of its own (AETHER_JOB_UID_RANGE), the attempt's processes are killed by their uid, all
    at once, and the links that ended meanwhile are reaped on every pass."""
    uid, python = _chain_uid()
    files = JobFiles(tmp_path / "job")
    files.folder.mkdir()
    entry = {"command": [python, "-c", CHAIN, str(chain_folder)]}
    user = JobUser(str(uid), uid, uid, str(chain_folder))
    job = JobLaunch("j-chain", spec_from_mapping({"name": "t", "entrypoint": entry}), files, user, True)
    handle = LocalExecutor(cwd=Path("/"), kill_grace_s=CHAIN_GRACE_S).launch(job, 1, [], {})
    launcher = handle.pid
    assert launcher is not None
    try:
        _wait_for(chain_folder / "up")
        deadline, children = time.monotonic() + 30, 0
        while (status := handle.poll()) is None:
            assert time.monotonic() < deadline, "the launcher did not end the chain"
            children = max(children, len(_children(launcher)))
            time.sleep(0.02)
        assert status == ExitStatus(0, "exit code 0"), files.log.read_text()
        assert not (chain_folder / "done").exists(), "the chain ran to its end: the kill missed it"
        assert uid not in uids_in_use(), "a process of the attempt's uid outlived it"
        # Its links were reaped as they went: they did not pile up as the launcher's zombies.
        assert children < CHAIN_CAP // 10, children
    finally:
        if process_start_ticks(launcher) is not None:  # a failed run: its zombies go to init with it
            os.killpg(launcher, signal.SIGKILL)
