"""Jobs end to end through a real control plane: launch environment, success with outputs, retries,
exhausted retries, timeout, cancel of a queued and of a running job, FIFO on the device pool."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from pathlib import Path

from sqlalchemy import create_engine, select

from clients.aether.v1 import jobs_pb2 as pb
from clients.aether.v1 import tracking_pb2
from clients.sdk.jobs import JobsClient, state_name
from control_plane.audit.tables import AuditEntryRow
from control_plane.tracking.store import TrackingStore
from tests.integration.jobs.conftest import (
    ThreadedControlPlane,
    job_spec,
    process_alive,
    states_of,
    wait_for,
    wait_state,
)


def test_a_job_runs_with_the_launch_environment_and_succeeds_with_its_outputs(
    client: JobsClient, control_plane: ThreadedControlPlane, tmp_path: Path, sqlite_url: str
) -> None:
    spec = job_spec(
        "train-ok", "--env-dump", str(tmp_path / "env"), "--outputs", '{"model": "churn", "version": 3}',
        gpus=1, hyperparameters={"lr": 0.01, "layers": [64, 32]}, experiment="churn-exp",
    )  # fmt: skip
    job = client.submit(spec)
    assert job.state == pb.JOB_STATE_QUEUED and job.submitted_by == "tester"
    done = wait_state(client, job.job_id, pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED)
    assert done.state == pb.JOB_STATE_SUCCEEDED, done.reason
    assert states_of(done) == ["QUEUED", "RUNNING", "SUCCEEDED"]
    assert done.attempt == 1 and list(done.devices) == [] and done.exit_code == 0
    assert dict(done.outputs) == {"model": "churn", "version": 3.0}

    env = json.loads((tmp_path / "env.1").read_text())
    assert env["AETHER_JOB_ID"] == job.job_id
    assert env["AETHER_JOB_ATTEMPT"] == "1"
    assert env["CUDA_VISIBLE_DEVICES"] == "0"
    assert env["AETHER_TRACKING_EXPERIMENT"] == "churn-exp"
    assert env["AETHER_RUN_ID"] == done.run_id and done.run_id
    assert env["AETHER_CHECKPOINT_DIR"] == done.checkpoint_dir and Path(done.checkpoint_dir).is_dir()
    written = json.loads(Path(env["AETHER_JOB_SPEC"]).read_text())
    assert written["name"] == "train-ok" and written["hyperparameters"] == {"lr": 0.01, "layers": [64, 32]}
    assert written["gpus"] == 1 and written["max_retries"] == 0  # defaults are present for the job's SDK

    log = b"".join(client.logs(job.job_id)).decode()
    assert "attempt 1 of 1 started on devices 0" in log and "done" in log

    engine = create_engine(sqlite_url)
    try:
        from sqlalchemy.orm import sessionmaker

        run = TrackingStore(sessionmaker(engine)).get_run(done.run_id)
        assert run.status == tracking_pb2.RUN_STATUS_FINISHED and run.params["lr"] == "0.01"
        with engine.connect() as connection:
            audited = connection.execute(
                select(AuditEntryRow.action)
                .where(AuditEntryRow.object_id == job.job_id)
                .order_by(AuditEntryRow.seq)
            ).scalars()
            assert list(audited) == ["submit", "transition", "transition"]
    finally:
        engine.dispose()


def test_failed_attempts_are_retried_with_the_next_attempt_number(client: JobsClient, tmp_path: Path) -> None:
    starts = tmp_path / "starts"
    spec = job_spec(
        "flaky",
        "--fail-attempts",
        "2",
        "--starts",
        str(starts),
        "--env-dump",
        str(tmp_path / "env"),
        max_retries=2,
    )
    job = client.submit(spec)
    done = wait_state(client, job.job_id, pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED)
    assert done.state == pb.JOB_STATE_SUCCEEDED, done.reason
    assert done.attempt == 3
    assert states_of(done) == ["QUEUED", "RUNNING", "RETRYING", "RUNNING", "RETRYING", "RUNNING", "SUCCEEDED"]
    assert "attempt 1 failed: exit code 3; retry 1 of 2" in [t.reason for t in done.history]
    attempts = [line.split() for line in starts.read_text().splitlines()]
    assert [a[0] for a in attempts] == ["1", "2", "3"]
    # Never two at once: each attempt started after the previous one ended.
    assert all(int(attempts[i + 1][2]) > int(attempts[i][3]) for i in range(2))
    envs = [json.loads((tmp_path / f"env.{n}").read_text()) for n in (1, 2, 3)]
    assert (
        len({e["AETHER_CHECKPOINT_DIR"] for e in envs}) == 1 and len({e["AETHER_RUN_ID"] for e in envs}) == 1
    )


def test_a_job_out_of_retries_fails_with_its_exit_code(client: JobsClient) -> None:
    job = client.submit(job_spec("broken", "--exit", "7", max_retries=1))
    updates = list(client.watch(job.job_id, timeout=20))  # snapshots on change, until the job ends
    assert state_name(updates[0].state) in ("QUEUED", "RUNNING") and state_name(updates[-1].state) == "FAILED"
    assert "RETRYING" in states_of(updates[-1])
    done = client.wait(job.job_id, timeout=5)
    assert done.state == pb.JOB_STATE_FAILED
    assert done.reason == "attempt 2 failed: exit code 7; no retries left (2 attempts)"
    assert done.exit_code == 7 and done.attempt == 2


def test_a_job_exiting_127_itself_is_retried_like_any_failure(client: JobsClient) -> None:
    # 127 is also the launcher's "entrypoint not found", which no retry fixes; but here the entrypoint
    # ran and chose the code (a wrapper script whose inner command was briefly missing, say).
    job = client.submit(job_spec("own-127", "--exit", "127", max_retries=1))
    done = wait_state(client, job.job_id, pb.JOB_STATE_FAILED, pb.JOB_STATE_SUCCEEDED)
    assert done.reason == "attempt 2 failed: exit code 127; no retries left (2 attempts)"
    assert done.exit_code == 127 and done.attempt == 2


def test_a_job_past_its_timeout_is_stopped_and_marked_so(client: JobsClient) -> None:
    job = client.submit(job_spec("slow", "--sleep", "60", "--ignore-term", timeout_s=1, max_retries=3))
    running = wait_state(client, job.job_id, pb.JOB_STATE_RUNNING)
    done = wait_state(client, job.job_id, pb.JOB_STATE_FAILED, pb.JOB_STATE_SUCCEEDED, timeout=15)
    assert done.reason == "timeout after 1s" and done.attempt == 1  # a timeout is not retried
    assert done.finished_at_us - running.history[-1].at_us < 8_000_000
    log = b"".join(client.logs(job.job_id)).decode()
    assert (
        "timeout after 1s; sending SIGTERM" in log and "ignoring SIGTERM" in log and "sending SIGKILL" in log
    )


def test_cancel_of_a_queued_and_of_a_running_job(client: JobsClient, tmp_path: Path) -> None:
    starts = tmp_path / "starts"
    # One GPU each (no torchrun, so no torch needed): two of them fill the pool of two.
    big = client.submit(job_spec("big", "--sleep", "60", "--starts", str(starts), gpus=1))
    filler = client.submit(job_spec("filler", "--sleep", "60", gpus=1))
    running = wait_state(client, big.job_id, pb.JOB_STATE_RUNNING)
    wait_state(client, filler.job_id, pb.JOB_STATE_RUNNING)
    wait_for(lambda: "starting" in b"".join(client.logs(big.job_id)).decode())
    assert list(running.devices) == ["0"] and list(client.get(filler.job_id).devices) == ["1"]
    queued = client.submit(job_spec("waits", "--starts", str(starts), gpus=1))
    assert client.get(queued.job_id).state == pb.JOB_STATE_QUEUED  # strict FIFO: the pool is full

    cancelled = client.cancel(queued.job_id, "not needed")
    assert cancelled.state == pb.JOB_STATE_CANCELLED and cancelled.attempt == 0
    assert cancelled.reason == "cancelled by tester: not needed"

    pid = int(b"".join(client.logs(big.job_id)).decode().split(" pid ")[1].split()[0])
    assert process_alive(pid)
    stopping = client.cancel(big.job_id)
    assert stopping.state == pb.JOB_STATE_RUNNING and stopping.cancel_requested
    done = wait_state(client, big.job_id, pb.JOB_STATE_CANCELLED, pb.JOB_STATE_FAILED, timeout=10)
    assert done.state == pb.JOB_STATE_CANCELLED and done.reason == "cancelled by tester"
    assert not process_alive(pid) and list(done.devices) == []
    assert not starts.exists()  # neither job got to its end
    assert client.get(queued.job_id).state == pb.JOB_STATE_CANCELLED  # never started afterwards

    # The freed device goes to the next job.
    after = client.submit(job_spec("after", "--env-dump", str(tmp_path / "env"), gpus=1))
    assert wait_state(client, after.job_id, pb.JOB_STATE_SUCCEEDED).state == pb.JOB_STATE_SUCCEEDED
    assert json.loads((tmp_path / "env.1").read_text())["CUDA_VISIBLE_DEVICES"] == "0"
    client.cancel(filler.job_id)


def test_fifo_a_later_job_waits_for_the_devices_of_an_earlier_one(client: JobsClient, tmp_path: Path) -> None:
    starts = tmp_path / "starts"
    first = client.submit(job_spec("first", "--sleep", "1", "--starts", str(starts), gpus=1))
    second = client.submit(job_spec("second", "--sleep", "1", "--starts", str(starts), gpus=1))
    third = client.submit(job_spec("third", "--starts", str(starts), gpus=1))
    cpu = client.submit(job_spec("cpu", "--starts", str(starts), gpus=0))
    wait_state(client, cpu.job_id, pb.JOB_STATE_SUCCEEDED, timeout=20)
    times = {
        line.split()[4]: (int(line.split()[2]), int(line.split()[3]))
        for line in starts.read_text().splitlines()
    }
    first_free = min(times[first.job_id][1], times[second.job_id][1])
    # The pool (2) was full: the third job, and the CPU job behind it (strict FIFO), waited for a device.
    assert times[third.job_id][0] > first_free and times[cpu.job_id][0] > first_free


def test_a_cancel_while_an_ended_job_s_leftovers_are_stopped_does_not_overrule_its_exit_0(
    client: JobsClient, tmp_path: Path
) -> None:
    # The job exits 0 and leaves a child that ignores SIGTERM: the attempt stays RUNNING while the child
    # is stopped (1 s grace), and a cancel in that window made the job CANCELLED, its outputs dropped.
    child_file = tmp_path / "child"
    job = client.submit(job_spec("leaves", "--leave-child", str(child_file)))
    wait_for(lambda: "left processes running" in b"".join(client.logs(job.job_id)).decode())
    client.cancel(job.job_id, "changed my mind")
    done = wait_state(client, job.job_id, pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_CANCELLED, pb.JOB_STATE_FAILED)
    assert done.state == pb.JOB_STATE_SUCCEEDED, done.reason
    assert done.reason.startswith("exit code 0")


def test_devices_stay_held_until_the_processes_an_attempt_left_are_gone(
    client: JobsClient, tmp_path: Path
) -> None:
    # The job exits 0 at once but leaves a child that ignores SIGTERM: until that child is killed
    # (SIGKILL after the 1 s grace), device 0 is still in use and must not go to the next job.
    child_file = tmp_path / "child"
    leaves = client.submit(job_spec("leaves", "--leave-child", str(child_file), gpus=1))
    filler = client.submit(job_spec("filler", "--sleep", "60", gpus=1))
    wait_for(child_file.exists)
    child = int(child_file.read_text())
    after = client.submit(job_spec("after", "--env-dump", str(tmp_path / "env"), gpus=1))
    seen_held = False
    while True:
        first, second = client.get(leaves.job_id), client.get(after.job_id)
        if not process_alive(child):
            break
        # The child ran when both were read: its job still holds device 0, the next job waits.
        assert first.state == pb.JOB_STATE_RUNNING and list(first.devices) == ["0"]
        assert second.state == pb.JOB_STATE_QUEUED
        seen_held = seen_held or "exit code 0" in b"".join(client.logs(leaves.job_id)).decode()
    assert seen_held  # checked after the job itself had ended, not only while it ran
    done = wait_state(client, leaves.job_id, pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED)
    assert done.state == pb.JOB_STATE_SUCCEEDED and done.reason == "exit code 0"
    log = b"".join(client.logs(leaves.job_id)).decode()
    assert "left processes running; sending them SIGTERM" in log
    assert "sending SIGKILL" in log
    assert wait_state(client, after.job_id, pb.JOB_STATE_SUCCEEDED).state == pb.JOB_STATE_SUCCEEDED
    assert json.loads((tmp_path / "env.1").read_text())["CUDA_VISIBLE_DEVICES"] == "0"
    client.cancel(filler.job_id)


def test_a_daemon_a_job_started_is_gone_once_the_job_ends_and_once_it_is_cancelled(
    client: JobsClient, tmp_path: Path
) -> None:
    # A daemon (double fork, setsid: out of the job's process group and session; ignoring SIGTERM)
    # outlived its job, holding the device the next job was given and the job's token.
    ended_file, cancelled_file = tmp_path / "ended-daemon", tmp_path / "cancelled-daemon"
    ended = client.submit(job_spec("daemon-ends", "--daemon", str(ended_file), gpus=1))
    cancelled = client.submit(
        job_spec("daemon-cancelled", "--daemon", str(cancelled_file), "--sleep", "60", gpus=1)
    )
    try:
        done = wait_state(client, ended.job_id, pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, timeout=60)
        assert done.state == pb.JOB_STATE_SUCCEEDED, done.reason
        assert not process_alive(int(ended_file.read_text())), "the daemon outlived its job"
        wait_for(cancelled_file.exists, timeout=60)
        client.cancel(cancelled.job_id, "no longer needed")
        done = wait_state(client, cancelled.job_id, pb.JOB_STATE_CANCELLED, pb.JOB_STATE_FAILED, timeout=60)
        assert done.state == pb.JOB_STATE_CANCELLED, done.reason
        assert not process_alive(int(cancelled_file.read_text())), "the daemon outlived its cancelled job"
    finally:  # a daemon left by a failure has no parent-death signal
        for pid_file in (ended_file, cancelled_file):
            if pid_file.exists() and process_alive(pid := int(pid_file.read_text())):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def test_a_spec_file_damaged_before_the_start_is_written_again_from_the_job(
    client: JobsClient, tmp_path: Path
) -> None:
    # A machine crash soon after a submission can leave the job's row on disk and its spec.json torn (the
    # file's data had not reached the disk): the start writes the file again from the row, so the
    # attempt reads the whole spec rather than dying on a parse error, attempt after attempt.
    filler = client.submit(job_spec("filler", "--sleep", "60", gpus=2))
    wait_state(client, filler.job_id, pb.JOB_STATE_RUNNING)
    job = client.submit(
        job_spec("torn", "--env-dump", str(tmp_path / "env"), gpus=1, hyperparameters={"lr": 0.5})
    )
    assert client.get(job.job_id).state == pb.JOB_STATE_QUEUED  # behind the filler: the pool is full
    spec_file = Path(job.checkpoint_dir).parent / "spec.json"
    whole = spec_file.read_text()
    spec_file.write_text(whole[: len(whole) // 2])
    client.cancel(filler.job_id)
    done = wait_state(client, job.job_id, pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED)
    assert done.state == pb.JOB_STATE_SUCCEEDED, done.reason
    env = json.loads((tmp_path / "env.1").read_text())
    assert Path(env["AETHER_JOB_SPEC"]) == spec_file and spec_file.read_text() == whole


def _nested(depth: int) -> str:
    """A JSON object nesting ``depth`` levels (the outer object counts), lists and objects in turn."""
    inner = "1"
    for level in range(depth - 1):
        inner = f"[{inner}]" if level % 2 == 0 else f'{{"k": {inner}}}'
    return f'{{"model": "deep", "v": {inner}}}'


def test_outputs_nested_too_deep_leave_the_job_without_outputs_not_stuck_or_unlistable(
    client: JobsClient,
) -> None:
    """``outputs.json`` is the job's to write. Nested thousands of levels deep, parsing it raised
    RecursionError on every tick: the job stayed RUNNING on its devices for good. Nested 40 levels deep,
    it was stored, and no client could parse a ``Get`` of the job or a ``List`` page holding it
    (protobuf's nesting limit): ``aetherctl jobs list`` failed for everyone. Outputs nested deeper than
    20 levels are not read, as outputs over 1 MiB are not, and the job's log says so."""
    deep = client.submit(job_spec("very-deep", "--outputs", _nested(5000), gpus=1))
    deeper_than_clients_parse = client.submit(job_spec("deep", "--outputs", _nested(40)))
    within = client.submit(job_spec("within", "--outputs", _nested(20)))
    for job in (deep, deeper_than_clients_parse, within):
        wait_state(client, job.job_id, pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED)
    listed = {job.job_id: job for job in client.list()}
    for job in (deep, deeper_than_clients_parse):
        done = client.get(job.job_id)
        assert done.state == pb.JOB_STATE_SUCCEEDED and dict(done.outputs) == {}, done.reason
        assert listed[job.job_id].state == pb.JOB_STATE_SUCCEEDED
        log = b"".join(client.logs(job.job_id)).decode()
        assert "outputs.json nests deeper than 20 levels: not read, the job has no outputs" in log
    assert client.get(within.job_id).outputs["model"] == "deep"
