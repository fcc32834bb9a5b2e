"""``aetherctl jobs submit|list|get|logs|cancel`` against a real control plane (the commands are
registered on a parser the way ``aetherctl`` registers them)."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from clients.aether.v1 import jobs_pb2 as pb
from clients.sdk.jobs import JobsClient, exit_code, exit_code_text
from control_plane.cli import jobs as jobs_cli
from tests.integration.jobs.conftest import (
    JOB_MODULE,
    ThreadedControlPlane,
    job_spec,
    wait_for,
    wait_state,
)

REPO = Path(__file__).resolve().parents[3]


def aetherctl(capsys: pytest.CaptureFixture[str], address: str, *argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="aetherctl")
    parser.add_argument("--control-plane", default=address)
    parser.add_argument("--timeout", type=float, default=10.0)
    commands = parser.add_subparsers(dest="command", required=True)
    jobs_cli.register(commands)
    args = parser.parse_args(list(argv))
    code = args.handler(args)
    return code, capsys.readouterr().out


def test_submit_a_yaml_spec_then_list_get_follow_logs_and_cancel(
    control_plane: ThreadedControlPlane,
    client: JobsClient,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text(
        f"name: cli-job\nentrypoint:\n  module: {JOB_MODULE}\n  args: ['--sleep', '0.5']\n"
        "gpus: 1\nhyperparameters: {{lr: 0.1}}\n".replace("{{", "{").replace("}}", "}")
    )
    code, out = aetherctl(capsys, control_plane.address, "jobs", "submit", str(spec), "--json")
    assert code == 0
    job_id = json.loads(out)["job_id"]
    code, out = aetherctl(capsys, control_plane.address, "jobs", "logs", job_id, "-f")
    assert code == 0 and "attempt 1 pid" in out and out.rstrip().endswith("job SUCCEEDED: exit code 0")
    assert wait_state(client, job_id, pb.JOB_STATE_SUCCEEDED).spec.hyperparameters["lr"] == 0.1

    code, out = aetherctl(capsys, control_plane.address, "jobs", "list", "--state", "succeeded")
    assert code == 0 and job_id in out and "SUCCEEDED" in out
    code, out = aetherctl(capsys, control_plane.address, "jobs", "get", job_id)
    assert code == 0 and f"job {job_id} (cli-job) SUCCEEDED: exit code 0" in out and "RUNNING" in out
    assert "  exit code: 0\n" in out

    waiting = tmp_path / "waiting.json"
    waiting.write_text(
        json.dumps({"name": "w", "entrypoint": {"module": JOB_MODULE, "args": ["--sleep", "30"]}})
    )
    code, out = aetherctl(capsys, control_plane.address, "jobs", "submit", str(waiting))
    second = out.split()[2]
    assert code == 0 and out.startswith(f"submitted job {second} (w): ")
    wait_state(client, second, pb.JOB_STATE_RUNNING)
    code, out = aetherctl(capsys, control_plane.address, "jobs", "cancel", second, "--reason", "test")
    assert code == 0 and "stopping job" in out
    assert (
        wait_state(client, second, pb.JOB_STATE_CANCELLED).reason == f"cancelled by {getpass.getuser()}: test"
    )


def test_an_attempt_ended_without_a_status_has_an_unknown_exit_code_not_0(
    control_plane: ThreadedControlPlane,
    client: JobsClient,
    sqlite_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A launcher SIGKILLed (the OOM killer, say) records no exit status; Job.exit_code said 0 for it, which
    # reads as a clean exit.
    job = client.submit(job_spec("killed", "--sleep", "30"))
    assert exit_code(job) is None and exit_code_text(job) == "-"  # no attempt has ended yet
    wait_state(client, job.job_id, pb.JOB_STATE_RUNNING)
    wait_for(lambda: "starting" in Path(client.get(job.job_id).log_path).read_text())
    engine = create_engine(sqlite_url)
    with engine.connect() as connection:
        query = text("select pid from jobs where job_id = :job_id")
        launcher = connection.execute(query, {"job_id": job.job_id}).scalar_one()
    engine.dispose()
    os.kill(launcher, signal.SIGKILL)

    done = wait_state(client, job.job_id, pb.JOB_STATE_FAILED)
    assert not done.HasField("exit_code") and exit_code(done) is None
    code, out = aetherctl(capsys, control_plane.address, "jobs", "get", job.job_id)
    assert code == 0 and "  exit code: unknown\n" in out
    code, out = aetherctl(capsys, control_plane.address, "jobs", "get", job.job_id, "--json")
    assert code == 0 and json.loads(out)["exit_code"] is None


@pytest.mark.parametrize("limit", ["0", "-3", "ten"])
def test_a_list_limit_below_one_is_a_usage_error_not_an_empty_table(
    control_plane: ThreadedControlPlane, capsys: pytest.CaptureFixture[str], limit: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        aetherctl(capsys, control_plane.address, "jobs", "list", f"--limit={limit}")
    assert exit_info.value.code == 2
    assert f"argument --limit: expected a whole number from 1 to 2147483647, got {limit!r}" in (
        capsys.readouterr().err
    )


def test_logs_take_no_json_flag(
    control_plane: ThreadedControlPlane, capsys: pytest.CaptureFixture[str]
) -> None:
    # The log is printed as the job wrote it; --json was accepted and ignored, so a script parsing the
    # output as JSON failed on the first log line. Now it is refused before anything is asked.
    with pytest.raises(SystemExit) as exit_info:
        aetherctl(capsys, control_plane.address, "jobs", "logs", "j1", "--json")
    assert exit_info.value.code == 2 and "unrecognized arguments: --json" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "name: bad\nentrypoint: {module: m}\ngpuz: 1\n",
            "malformed job spec: unknown field 'gpuz'; the fields of aether.v1.JobSpec are name, entrypoint,",
        ),
        (
            "name: bad\nentrypoint: {module: m}\ndataset: {point_in_time: {rows: r.parquet}}\n",
            "unknown field 'dataset.point_in_time.rows'; the fields of aether.v1.PointInTimeQuery are"
            " entity_rows_path, features, timestamp_column",
        ),
        ("name: bad\nentrypoint: [1,\n", "job.yaml:3:1: invalid YAML or JSON: expected the node content"),
    ],
)
def test_a_bad_spec_is_one_line_naming_the_problem(
    control_plane: ThreadedControlPlane, tmp_path: Path, text: str, message: str
) -> None:
    # protobuf's unknown-field message put the allowed fields on a second line, and PyYAML's an excerpt
    # of the file on four more.
    spec = tmp_path / "job.yaml"
    spec.write_text(text)
    submit = subprocess.run(
        [sys.executable, "-m", "control_plane.cli.main", "--control-plane", control_plane.address,
         "jobs", "submit", str(spec)],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert submit.returncode == 1 and len(submit.stderr.splitlines()) == 1, submit.stderr
    assert message in submit.stderr


def test_list_says_on_stderr_when_the_limit_left_older_jobs_out(
    control_plane: ThreadedControlPlane, client: JobsClient, capsys: pytest.CaptureFixture[str]
) -> None:
    """jobs list printed the newest --limit jobs (50 by default) and nothing else, as if that were all."""
    from control_plane.cli.main import main

    # An entrypoint that does not exist: each job is FAILED at once, and no process is started.
    for index in range(3):
        client.submit({"name": f"quick-{index}", "entrypoint": {"module": "no_such_module_here"}})
    capsys.readouterr()
    assert main(["--control-plane", control_plane.address, "jobs", "list", "--limit", "2", "--json"]) == 0
    out, err = capsys.readouterr()
    assert [job["spec"]["name"] for job in json.loads(out)] == ["quick-2", "quick-1"]
    assert err == (
        "aetherctl: more jobs exist: these are the newest 2 (--limit); raise --limit for older ones, or"
        " choose with --state\n"
    )
    assert main(["--control-plane", control_plane.address, "jobs", "list", "--limit", "3"]) == 0
    out, err = capsys.readouterr()
    assert (len(out.splitlines()), err) == (4, "")  # the header and all three
