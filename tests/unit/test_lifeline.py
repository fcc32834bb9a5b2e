"""clients.lifeline: a tied command ends with the process that started it, even one killed with SIGKILL,
and its watcher ends with the command."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from clients.lifeline import tied

REPO = Path(__file__).resolve().parents[2]

PARENT = """
import subprocess, sys, time
from clients.lifeline import tied
command, fds = tied(sys.argv[1:])
print(subprocess.Popen(command, pass_fds=fds).pid, flush=True)
time.sleep(60)
"""
#: A command that closes every descriptor it did not open, as daemons do at start: that ended the
#: watcher's pipe from the command, the watcher took it for the command's end and left it untied.
CLOSES_ITS_DESCRIPTORS = [sys.executable, "-c", "import os, time; os.closerange(3, 65536); time.sleep(60)"]

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _watchers_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--watch" in command and command[-2:] == [str(pid).encode(), b""] and _running(int(entry.name)):
            found.append(int(entry.name))
    return found


def _until(condition: Callable[[], object], what: str, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


@pytest.mark.parametrize("command", [["sleep", "60"], CLOSES_ITS_DESCRIPTORS], ids=["sleep", "closerange"])
def test_a_tied_command_ends_when_its_parent_is_killed_with_sigkill(command: list[str]) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, *command], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert _running(child)
        _until(lambda: _watchers_of(child), "no watcher started")
        time.sleep(0.3)  # time for the command to close its descriptors
        (watcher,) = _watchers_of(child)
        # The watcher is no user of the stack's home: no environment, and not working in it.
        assert Path(f"/proc/{watcher}/environ").read_bytes() == b""
        assert Path(f"/proc/{watcher}/cwd").resolve() == Path("/")
        parent.kill()
        parent.wait()
        _until(lambda: not _running(child) and not _running(watcher), "the tied command outlived its parent")
    finally:
        parent.kill()


def test_the_watcher_ends_with_its_command_and_the_exit_status_is_the_commands() -> None:
    command, fds = tied([sys.executable, "-c", "import time; time.sleep(0.5); raise SystemExit(3)"])
    process = subprocess.Popen(command, pass_fds=fds)
    _until(lambda: _watchers_of(process.pid), "no watcher started")
    (watcher,) = _watchers_of(process.pid)
    assert process.wait(timeout=10) == 3
    _until(lambda: not _running(watcher), "the watcher outlived its command")


def test_a_missing_command_is_one_line_and_exit_127() -> None:
    command, fds = tied(["/nonexistent/redis-server"])
    done = subprocess.run(command, pass_fds=fds, capture_output=True, text=True, timeout=10)
    assert done.returncode == 127
    assert done.stderr.startswith("cannot run '/nonexistent/redis-server': ")
