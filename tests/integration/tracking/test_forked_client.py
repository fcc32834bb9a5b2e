"""A TrackingClient used in a process forked from the one that created it (a ``multiprocessing`` pool
started with ``fork`` after the client was made): its shipper's threads do not survive the fork, so what
the child logged was buffered and never sent, without a word (flush timed out, nothing counted as dropped,
no error). The child is now told at the call, and the parent's client goes on as before."""

from __future__ import annotations

import json
import os
import time

import pytest

from clients.sdk.tracking import TrackingClient


def _in_child(client: TrackingClient, run_id: str) -> dict[str, str]:
    """What each use of the parent's client does in the forked child: the error's text, or "ok"."""
    from clients.aether.v1 import tracking_pb2 as pb

    outcomes: dict[str, str] = {}
    parent_run = client._runs[run_id]
    for name, call in (
        ("start_run", lambda: client.start_run("forks", "child")),
        ("start_run_elsewhere", lambda: client.start_run("another", "child")),  # no call is made first
        ("log_metrics", lambda: parent_run.log_metrics({"loss": 9.0}, step=9)),
        ("log_params", lambda: parent_run.log_params({"child": "1"})),
        ("flush", lambda: client.flush(timeout=5)),
        ("add", lambda: client._shipper.add(run_id, end=pb.RunEnd(status=pb.RUN_STATUS_KILLED))),
    ):
        try:
            call()
            outcomes[name] = "ok"
        except RuntimeError as error:
            outcomes[name] = str(error)
    started = time.monotonic()
    client.close()  # as at the child's exit: returns at once, and ends none of the parent's runs
    outcomes["close_s"] = f"{time.monotonic() - started:.1f}"
    return outcomes


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_forked_child_is_told_its_parents_client_cannot_send(client: TrackingClient) -> None:
    run = client.start_run("forks", "parent")
    run.log_metrics({"loss": 1.0}, step=1)
    client.flush()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave at once
        try:
            os.write(write_end, json.dumps(_in_child(client, run.run_id)).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    with os.fdopen(read_end) as pipe:
        outcomes = json.loads(pipe.read())
    assert os.waitstatus_to_exitcode(status) == 0
    for name in ("start_run", "start_run_elsewhere", "log_metrics", "log_params", "flush", "add"):
        assert f"was created in process {os.getpid()}" in outcomes[name], (name, outcomes)
        assert "create a TrackingClient in this process" in outcomes[name]
    assert float(outcomes["close_s"]) < 2.0

    # The parent's client is untouched: the run goes on and ends as it would have.
    run.log_metrics({"loss": 2.0}, step=2)
    run.close()
    experiment_id = client.get_experiment("forks").experiment_id
    assert [r.name for r in client.list_runs(experiment_id).runs] == ["parent"]
    assert list(client.metric_history(run.run_id, "loss").values) == [1.0, 2.0]
    assert client.get_run(run.run_id).status == 2 and client.dropped_points == 0
