"""Running ``aetherctl`` as a person at a terminal runs it: stdin a real pseudo-terminal (so
``sys.stdin.isatty()`` is true and a confirmation is asked), stdout and stderr pipes (as in
``aetherctl ... --json | jq``), in a process of its own."""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Finished:
    code: int
    out: str
    err: str


def aetherctl_at_a_terminal(address: str, *args: str, typed: str, home: Path) -> Finished:
    """Runs ``aetherctl --control-plane ADDRESS ARGS...`` with ``typed`` (e.g. ``"y\\n"``) waiting at
    its terminal. The terminal holds the line until the command reads it, as a shell's would."""
    controller, terminal = pty.openpty()
    try:
        os.write(controller, typed.encode())
        env = dict(os.environ, AETHER_HOME=str(home), PYTHONDONTWRITEBYTECODE="1")
        done = subprocess.run(
            [sys.executable, "-m", "control_plane.cli.main", "--control-plane", address, *args],
            stdin=terminal, capture_output=True, text=True, env=env, cwd=REPO, timeout=120, check=False,
        )  # fmt: skip
    finally:
        os.close(terminal)
        os.close(controller)
    return Finished(done.returncode, done.stdout, done.stderr)


def aetherctl_interrupted_at_its_question(address: str, *args: str, home: Path) -> Finished:
    """Runs ``aetherctl --control-plane ADDRESS ARGS...`` at a terminal as above, and once it has asked its
    question (``[y/N] `` on stderr) sends it SIGINT, as Ctrl-C at that terminal does."""
    controller, terminal = pty.openpty()
    env = dict(os.environ, AETHER_HOME=str(home), PYTHONDONTWRITEBYTECODE="1")
    try:
        # The SIGINT must reach the command as Ctrl-C at a terminal does, also when the suite was started
        # with SIGINT ignored (a background job of a non-interactive shell, as CI may run it): an ignored
        # disposition is inherited across exec, and the command then waited at its question until the
        # test's timeout. A handled one is reset to the default at exec (as in tests/e2e/test_demo.py).
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "control_plane.cli.main", "--control-plane", address, *args],
                stdin=terminal, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=REPO,
            )  # fmt: skip
        finally:
            signal.signal(signal.SIGINT, previous)
        assert process.stdout is not None and process.stderr is not None
        asked, deadline = b"", time.monotonic() + 120
        while not asked.endswith(b"[y/N] "):
            assert time.monotonic() < deadline, f"no question asked: {asked!r}"
            chunk = os.read(process.stderr.fileno(), 4096)
            assert chunk, f"stderr closed before the question: {asked!r}"
            asked += chunk
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        os.close(terminal)
        os.close(controller)
    return Finished(process.returncode, out.decode(), (asked + err).decode())
