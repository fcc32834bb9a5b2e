"""``aetherctl jobs logs -f`` exits with how the job ended: 1 when it ends FAILED or CANCELLED, so that
``jobs submit ... && jobs logs -f JOB`` (as the README chains them) stops there. It exited 0 whatever
the job's end."""

from __future__ import annotations

import argparse
import threading

import pytest

from clients.aether.v1 import jobs_pb2 as pb
from clients.sdk.jobs import JobsClient
from control_plane.cli import jobs as jobs_cli
from tests.integration.jobs.conftest import JOB_MODULE, ThreadedControlPlane, wait_state

Capture = pytest.CaptureFixture[str]


def aetherctl(capsys: Capture, address: str, *argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="aetherctl")
    parser.add_argument("--control-plane", default=address)
    parser.add_argument("--timeout", type=float, default=30.0)
    jobs_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    code = args.handler(args)
    out, err = capsys.readouterr()
    return code, out, err


def submit(client: JobsClient, name: str, *args: str) -> str:
    spec = {"name": name, "entrypoint": {"module": JOB_MODULE, "args": list(args)}}
    return client.submit(spec).job_id


def test_follow_exits_0_when_the_job_succeeds_and_1_when_it_fails(
    control_plane: ThreadedControlPlane, client: JobsClient, capsys: Capture
) -> None:
    succeeded = submit(client, "ok", "--sleep", "0.2")
    assert aetherctl(capsys, control_plane.address, "jobs", "logs", succeeded, "-f")[::2] == (0, "")

    failed = submit(client, "bad", "--exit", "3")
    code, out, err = aetherctl(capsys, control_plane.address, "jobs", "logs", failed, "-f")
    assert code == 1 and "job FAILED" in out
    assert err.startswith(f"error: job {failed} FAILED: "), err
    # Without -f the command only prints what is there: its status is not the job's.
    assert aetherctl(capsys, control_plane.address, "jobs", "logs", failed)[0] == 0


def test_follow_exits_1_when_the_job_is_cancelled(
    control_plane: ThreadedControlPlane, client: JobsClient, capsys: Capture
) -> None:
    job_id = submit(client, "long", "--sleep", "60")
    wait_state(client, job_id, pb.JOB_STATE_RUNNING)
    # Cancelled while the follow is under way, as a user's second terminal would.
    canceller = threading.Timer(1.0, client.cancel, args=(job_id, "enough"))
    canceller.start()
    try:
        code, _, err = aetherctl(capsys, control_plane.address, "jobs", "logs", job_id, "-f")
    finally:
        canceller.join()
    assert code == 1
    assert err.startswith(f"error: job {job_id} CANCELLED: cancelled by "), err
