"""What the job-security tests share: a real ``python -m control_plane`` started with the environment a
test gives it, a job that prints its environment, and reading that print back from the job's log."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from clients.sdk.auth import ChannelSecurity
from clients.sdk.jobs import JobsClient

REPO = Path(__file__).resolve().parents[3]
#: A job's command line body: prints its whole environment as one ``ENV=<json>`` line.
PRINT_ENV = "import json, os; print('ENV=' + json.dumps(dict(os.environ)), flush=True)"


@contextmanager
def control_plane(env: Mapping[str, str]) -> Iterator[str]:
    """Runs ``python -m control_plane`` on a free loopback port with ``env``; yields its address."""
    process = subprocess.Popen(
        [sys.executable, "-m", "control_plane", "--listen", "127.0.0.1:0"],
        cwd=REPO, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("aether control plane listening on "), line
        yield line.rsplit(" ", 1)[1]
    finally:
        process.terminate()
        process.wait(timeout=30)


def jobs_client(address: str, token: str) -> JobsClient:
    return JobsClient(address, security=ChannelSecurity(token=token), timeout=20)


def printed_env(log: str) -> dict[str, str]:
    """The environment a :data:`PRINT_ENV` job printed into ``log``."""
    line = next(line for line in log.splitlines() if line.startswith("ENV="))
    printed: dict[str, str] = json.loads(line.removeprefix("ENV="))
    return printed
