"""Logging through the SDK against a real control plane: completeness, ordering, run status, the flush at
interpreter exit, the retry-then-drop policy when the server is away, bad input and unknown runs."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
import time
import warnings
from dataclasses import replace
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from sqlalchemy import func, select

from clients.aether.v1 import tracking_pb2 as pb
from clients.aether.v1 import tracking_pb2_grpc as pb_grpc
from clients.errors import InvalidArgument, NotFound, Unauthenticated
from clients.sdk.artifacts import ArtifactClient
from clients.sdk.auth import ChannelSecurity
from clients.sdk.service_client import ServiceClient
from clients.sdk.tracking import Run, TrackingClient
from control_plane.api.auth import AuthSettings
from control_plane.audit.query import iter_entries
from control_plane.audit.tables import AuditEntryRow
from control_plane.db import create_db_engine, create_session_factory, read_session
from control_plane.tracking.tables import MetricChunkRow, RunRow
from tests.integration.tracking.conftest import ThreadedControlPlane, settings_for
from tests.support.ports import HeldPort, refused_address
from tests.support.row_ids import INT32_MAX, next_ids_just_below_int32_max

ROOT = Path(__file__).resolve().parents[3]


def test_many_points_arrive_complete_with_exact_values(control_plane: ThreadedControlPlane) -> None:
    runs, keys, steps = 6, 5, 300  # 9,000 points; 1,000-point batches force many LogBatch calls
    with TrackingClient(control_plane.address, batch_points=1000) as client:
        handles = [client.start_run("sweep", f"r{r}", params={"lr": r / 10}) for r in range(runs)]
        for step in range(steps):
            for r, run in enumerate(handles):
                run.log_metrics({f"m{k}": r * 1e6 + k * 1e3 + step / 7 for k in range(keys)}, step=step)
        for run in handles:
            run.close()
        assert client.shipped_points == runs * keys * steps
        assert client.dropped_points == 0
        for r, run in enumerate(handles):
            info = client.get_run(run.run_id)
            assert info.status == pb.RUN_STATUS_FINISHED
            assert info.end_time_us >= info.start_time_us > 0
            assert info.params["lr"] == str(r / 10)
            for k in range(keys):
                history = client.metric_history(run.run_id, f"m{k}")
                expected = [r * 1e6 + k * 1e3 + step / 7 for step in range(steps)]
                assert list(history.steps) == list(range(steps))
                assert list(history.values) == expected  # exact: float64 end to end
            summary = {m.key: m for m in info.metrics}["m2"]
            assert summary.count == steps
            assert summary.latest_step == steps - 1
            assert summary.latest_value == r * 1e6 + 2e3 + (steps - 1) / 7
            assert (summary.min_value, summary.max_value) == (r * 1e6 + 2e3, r * 1e6 + 2e3 + (steps - 1) / 7)


def test_metrics_whose_names_change_between_steps_keep_every_point(client: TrackingClient) -> None:
    logged = [({"a": 1.0}, 0), ({"a": 2.0, "b": 10.0}, 1), ({"b": 20.0}, 2), ({"b": 30.0, "a": 3.0}, 3)]
    with client.start_run("changing") as run:
        for metrics, step in logged:
            run.log_metrics(metrics, step=step, timestamp_us=1_000 + step)
    for key, steps, values in (("a", [0, 1, 3], [1.0, 2.0, 3.0]), ("b", [1, 2, 3], [10.0, 20.0, 30.0])):
        history = client.metric_history(run.run_id, key)
        assert (list(history.steps), list(history.values)) == (steps, values)
        assert list(history.timestamps_us) == [1_000 + step for step in steps]


def test_the_same_metrics_every_step_keep_their_own_timestamps(client: TrackingClient) -> None:
    with client.start_run("uniform") as run:
        for step in range(5):
            run.log_metrics({"loss": 1.0 / (step + 1), "acc": step / 10}, step=step, timestamp_us=50 + step)
    for key, values in (("loss", [1.0 / (s + 1) for s in range(5)]), ("acc", [s / 10 for s in range(5)])):
        history = client.metric_history(run.run_id, key)
        assert list(history.values) == values
        assert list(history.timestamps_us) == [50, 51, 52, 53, 54]


def test_huge_finite_values_are_accepted_even_when_their_sum_overflows(client: TrackingClient) -> None:
    with client.start_run("huge") as run:
        assert run.log_metrics({"a": 1.7e308, "b": 1.7e308, "c": -1.7e308})
    assert list(client.metric_history(run.run_id, "b").values) == [1.7e308]


def test_latest_is_the_highest_step_not_the_last_logged(client: TrackingClient) -> None:
    with client.start_run("order") as run:
        run.log_metrics({"loss": 0.5}, step=10)
        run.log_metrics({"loss": 0.9}, step=3)  # a late point from an earlier step
    summary = client.get_run(run.run_id).metrics[0]
    assert (summary.latest_value, summary.latest_step, summary.count) == (0.5, 10, 2)
    assert list(client.metric_history(run.run_id, "loss").steps) == [3, 10]


def test_experiments_runs_and_metric_chunks_are_numbered_past_32_bits(
    control_plane: ThreadedControlPlane, client: TrackingClient, db_url: str
) -> None:
    """Their surrogate ids were 32-bit ``serial`` columns on PostgreSQL (64-bit rowids on SQLite): a chunk
    is stored per metric per logged batch, so a busy server ran out of them, and every LogBatch after
    that failed INTERNAL. They are 64-bit on both."""
    with client.start_run("first") as run:
        run.log_metric("loss", 1.0)
    engine = create_db_engine(db_url)
    try:
        for table in ("tracking_experiments", "tracking_runs", "tracking_metric_chunks"):
            next_ids_just_below_int32_max(engine, table)
        runs = []
        for index in range(3):
            with client.start_run(f"past-{index}") as run:
                for step in range(3):
                    run.log_metric("loss", float(step), step=step)
                    client.get_run(run.run_id)  # sends the point now: one batch, one chunk, per step
            runs.append(run.run_id)
        with read_session(create_session_factory(engine)) as session:
            assert session.scalar(select(func.max(MetricChunkRow.id))) == INT32_MAX + 7
            assert session.scalar(select(func.max(RunRow.id))) == INT32_MAX + 1
    finally:
        engine.dispose()
    for run_id in runs:
        assert list(client.metric_history(run_id, "loss").steps) == [0, 1, 2]
        assert client.get_run(run_id).metrics[0].count == 3
    listed = client.list_runs(client.get_experiment("past-2").experiment_id).runs
    assert [r.run_id for r in listed] == [runs[2]]


def test_exception_in_the_with_block_marks_the_run_failed(client: TrackingClient) -> None:
    with pytest.raises(ZeroDivisionError), client.start_run("failing") as run:
        run.log_metrics({"loss": 1.0}, step=0)
        _ = 1 / 0
    info = client.get_run(run.run_id)
    assert info.status == pb.RUN_STATUS_FAILED
    assert info.metrics[0].count == 1


def test_an_unknown_status_is_refused_before_the_run_is_ended(client: TrackingClient) -> None:
    """close("bogus") raised a bare KeyError after marking the handle closed, so the corrected close
    did nothing and the run stayed RUNNING for good; the status name is also case-insensitive now."""
    run = client.start_run("statuses")
    run.log_metrics({"loss": 0.5}, step=1)
    with pytest.raises(
        InvalidArgument, match="unknown run status 'bogus'; expected one of RUNNING, FINISHED"
    ):
        run.close("bogus")
    run.close("failed")
    info = client.get_run(run.run_id)
    assert (info.status, info.end_time_us > 0, info.metrics[0].count) == (pb.RUN_STATUS_FAILED, True, 1)
    with pytest.raises(InvalidArgument, match="unknown run status 'done'"):
        client.update_run(run.run_id, "done")
    assert client.update_run(run.run_id, "Killed").status == pb.RUN_STATUS_KILLED


def test_a_run_end_that_does_not_end_the_run_is_refused(control_plane: ThreadedControlPlane) -> None:
    """LogBatch took RunEnd(RUNNING) and reopened an ended run, its end time and duration wiped; RunEnd is
    a run's terminal status. The SDK refuses to close a run RUNNING before the handle closes (the server
    would refuse the batch, points logged beside the end included)."""
    with (
        TrackingClient(control_plane.address, close_timeout_s=10.0) as client,
        grpc.insecure_channel(control_plane.address) as channel,
    ):
        run = client.start_run("ends")
        run.log_metrics({"loss": 0.5}, step=1)
        with pytest.raises(InvalidArgument, match="a run cannot end 'running'"):
            run.close("running")
        run.close("finished")
        ended = client.get_run(run.run_id)
        assert ended.status == pb.RUN_STATUS_FINISHED and ended.end_time_us > 0

        stub = pb_grpc.TrackingStub(channel)  # type: ignore[no-untyped-call]
        reopen = pb.RunBatch(run_id=run.run_id, end=pb.RunEnd(status=pb.RUN_STATUS_RUNNING))
        with pytest.raises(grpc.RpcError) as refused:
            stub.LogBatch(pb.LogBatchRequest(runs=[reopen]))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "RunEnd status RUNNING does not end a run" in str(refused.value.details())
        after = client.get_run(run.run_id)
        assert (after.status, after.end_time_us, after.duration_us) == (
            pb.RUN_STATUS_FINISHED,
            ended.end_time_us,
            ended.duration_us,
        )


def test_a_run_closes_after_the_clients_clock_stepped_back(
    client: TrackingClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run.close sent the client's clock as the end: once that clock stepped back (an NTP correction)
    behind the run's start, the server refused the end and, with it, the points sent in the same batch;
    the run stayed RUNNING. The handle's end is now never before its start (it counts the time the run
    was open on a monotonic clock), and the server takes an end before the start as its own clock."""
    import clients.sdk.tracking as sdk

    run = client.start_run("clock-steps")
    run.log_metrics({"loss": 0.5}, step=1)
    assert client.flush(timeout=10)
    # A fake for the one fault a test cannot cause for real: the SDK's wall clock steps an hour back.
    real = sdk._now_us
    monkeypatch.setattr(sdk, "_now_us", lambda: real() - 3_600_000_000)
    assert run._end_time_us() >= run.info.start_time_us  # what close sends
    run.log_metrics({"loss": 0.25}, step=2)  # stamped by the stepped clock: fine
    run.close()
    assert client.dropped_points == 0 and client.last_error is None
    ended = client.get_run(run.run_id)
    assert ended.status == pb.RUN_STATUS_FINISHED
    assert 0 <= ended.duration_us < 60_000_000
    assert list(client.metric_history(run.run_id, "loss").values) == [0.5, 0.25]


def test_a_history_over_the_4_mib_message_limit_is_read_in_pages(client: TrackingClient) -> None:
    """GetMetricHistory sent every point in one message: past 4 MiB the SDK's call failed with
    RESOURCE_EXHAUSTED although every point had been accepted. 200,000 points of 25 bytes on the wire
    (9-byte step and 8-byte timestamp varints) make 5 MB."""
    run = client.create_run(client.create_experiment("long").experiment_id, "r")
    count = 200_000
    steps = np.arange(count, dtype=np.int64) + 2**56
    for low in range(0, count, 50_000):
        part = slice(low, low + 50_000)
        series = pb.MetricSeries(
            key="loss",
            values=np.linspace(1, 0, count)[part].tolist(),
            steps=steps[part].tolist(),
            timestamps_us=(steps[part] - 2**56 + 1_700_000_000_000_000).tolist(),
        )
        client.log_batch(pb.LogBatchRequest(runs=[pb.RunBatch(run_id=run.run_id, metrics=[series])]))
    history = client.metric_history(run.run_id, "loss")
    assert history.ByteSize() > 4 * 2**20
    assert np.array_equal(np.asarray(history.steps), steps)
    assert np.array_equal(np.asarray(history.values), np.linspace(1, 0, count))
    assert history.next_page_token == ""


def test_buffered_points_are_flushed_at_interpreter_exit(control_plane: ThreadedControlPlane) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from clients.sdk.tracking import Run, TrackingClient
        client = TrackingClient({control_plane.address!r}, flush_interval_s=60)
        run = client.start_run("exit", "never-closed")
        for step in range(2000):
            run.log_metrics({{"a": step, "b": -step}}, step=step)
        print(run.run_id)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.strip()
    with TrackingClient(control_plane.address) as client:
        info = client.get_run(run_id)
        assert info.status == pb.RUN_STATUS_FINISHED
        assert {m.key: m.count for m in info.metrics} == {"a": 2000, "b": 2000}
        assert list(client.metric_history(run_id, "b").values) == [-float(s) for s in range(2000)]


def test_points_logged_while_the_server_is_down_arrive_once_it_is_up(tmp_path: Path, db_url: str) -> None:
    # Held for the whole test: the server stops and starts again on it, and meanwhile (nothing listening)
    # another test worker's server could take a port left free.
    with HeldPort() as held:
        address = held.address
        server = ThreadedControlPlane(settings_for(tmp_path / "home", db_url, address))
        try:
            with TrackingClient(address) as setup:
                run_id = setup.start_run("outage").run_id
        finally:
            server.stop()
        client = TrackingClient(address, flush_interval_s=0.05, close_timeout_s=20)
        # Log through a handle on the existing run while nothing listens: logging must not block or fail.
        handle = Run(client, pb.Run(run_id=run_id))
        for step in range(100):
            assert handle.log_metrics({"x": step}, step=step)
        assert not client.flush(timeout=0.5)  # nothing can be delivered yet
        server = ThreadedControlPlane(settings_for(tmp_path / "home", db_url, address))
        try:
            assert client.flush(timeout=20)
            assert client.dropped_points == 0
            client.close()
            with TrackingClient(address) as reader:
                assert list(reader.metric_history(run_id, "x").values) == [float(s) for s in range(100)]
        finally:
            server.stop()


def test_when_the_server_never_comes_back_close_gives_up_and_counts_the_drops(db_url: str) -> None:
    client = TrackingClient(refused_address(), flush_interval_s=0.05, close_timeout_s=0.5)
    handle = Run(client, pb.Run(run_id="0" * 32))
    handle.log_metrics({"x": 1.0, "y": 2.0}, step=0)
    client.close()
    assert client.dropped_points == 2
    assert client.last_error is not None


def test_a_full_buffer_drops_new_points_instead_of_blocking(db_url: str) -> None:
    client = TrackingClient(refused_address(), max_buffered_points=10, close_timeout_s=0.2)
    handle = Run(client, pb.Run(run_id="0" * 32))
    accepted = [handle.log_metrics({"a": 1.0, "b": 2.0, "c": 3.0}, step=s) for s in range(5)]
    assert accepted == [True, True, True, False, False]
    assert client.dropped_points == 6
    client.close()


def test_non_finite_values_and_empty_names_are_invalid_arguments(client: TrackingClient) -> None:
    run = client.start_run("bad-input")
    for value in (math.nan, math.inf, -math.inf):
        with pytest.raises(InvalidArgument, match="'loss'"):
            run.log_metrics({"loss": value})
    with pytest.raises(InvalidArgument, match="must be a non-empty"):
        run.log_metrics({"": 1.0})
    # The server checks too, whoever the client is.
    bad = pb.MetricSeries(key="val/acc", values=[0.1, float("nan")], steps=[0, 1])
    with pytest.raises(InvalidArgument, match=r"'val/acc'.*step 1"):
        client.log_batch(pb.LogBatchRequest(runs=[pb.RunBatch(run_id=run.run_id, metrics=[bad])]))
    empty = pb.MetricSeries(key="", values=[1.0], steps=[0])
    with pytest.raises(InvalidArgument, match="metric name must not be empty"):
        client.log_batch(pb.LogBatchRequest(runs=[pb.RunBatch(run_id=run.run_id, metrics=[empty])]))
    ragged = pb.MetricSeries(key="loss", values=[1.0, 2.0], steps=[0])
    with pytest.raises(InvalidArgument, match="2 values but 1 steps"):
        client.log_batch(pb.LogBatchRequest(runs=[pb.RunBatch(run_id=run.run_id, metrics=[ragged])]))
    # Nothing of a refused batch was written.
    assert client.get_run(run.run_id).metrics == []
    run.close()


def test_values_that_are_not_numbers_are_invalid_arguments_naming_the_metric(client: TrackingClient) -> None:
    """They escaped as float()'s raw ValueError, TypeError or OverflowError, naming no metric."""
    run = client.start_run("not-numbers")
    cases: list[tuple[object, str]] = [
        ("abc", "'abc'"),
        (None, "None"),
        (10**400, "<int of 1329 bits>"),  # beyond float's range
        (10**5000, "<int of 16610 bits>"),  # its repr alone raises (int_max_str_digits)
        ("x" * 1000, "'" + "x" * 79 + r"\.\.\. \(1002 characters\)"),
        ([1.0], r"\[1\.0\]"),
    ]
    for value, shown in cases:
        with pytest.raises(InvalidArgument, match=f"^metric 'acc': value {shown} is not a finite number$"):
            run.log_metrics({"loss": 1.0, "acc": value})  # type: ignore[dict-item]
    run.log_metrics({"loss": 1, "acc": True}, step=1)  # what float() takes is still taken
    run.close()
    summaries = client.get_run(run.run_id).metrics
    # A refused call buffered nothing, not even its valid metrics.
    assert {(m.key, m.latest_value, m.count) for m in summaries} == {("loss", 1.0, 1), ("acc", 1.0, 1)}


def test_numpy_scalars_and_0_d_tensors_are_logged_as_the_numbers_they_hold(client: TrackingClient) -> None:
    """What a training loop holds: ``log_metric("loss", loss)`` with the loss tensor itself (one that
    needs grad made torch warn at every call), numpy scalars of every width, 0-d arrays."""
    run = client.start_run("numpy-torch")
    values: dict[str, object] = {
        "f32": np.float32(0.25),
        "f16": np.float16(0.5),
        "i64": np.int64(2**40),
        "u8": np.uint8(7),
        "flag": np.bool_(True),
        "zero_d": np.array(1.5),
        "loss": torch.tensor(0.75, requires_grad=True) * 2,
        "bf16": torch.tensor(3.0, dtype=torch.bfloat16),
        "count": torch.tensor(9),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's "Converting a tensor with requires_grad=True" included
        run.log_metrics(values, step=1)  # type: ignore[arg-type]
        run.log_metric("single", torch.tensor(0.125), step=2)  # type: ignore[arg-type]
    run.close()
    latest = {m.key: m.latest_value for m in client.get_run(run.run_id).metrics}
    assert latest == {
        "f32": 0.25, "f16": 0.5, "i64": 2.0**40, "u8": 7.0, "flag": 1.0, "zero_d": 1.5, "loss": 1.5,
        "bf16": 3.0, "count": 9.0, "single": 0.125,
    }  # fmt: skip


def test_arrays_tensors_and_complex_values_are_refused_naming_the_metric(client: TrackingClient) -> None:
    """A one-element tensor was taken as its number and a numpy complex lost its imaginary part without
    a word; a complex tensor escaped as torch's RuntimeError; a larger array was "not a finite number"."""
    run = client.start_run("not-one-number")
    cases: list[tuple[object, str]] = [
        (torch.tensor([0.5]), r"a Tensor of shape \(1,\) holds 1 value, not one number"),
        (torch.ones(2, 3), r"a Tensor of shape \(2, 3\) holds 6 values, not one number"),
        (np.array([1.0, 2.0]), r"a ndarray of shape \(2,\) holds 2 values, not one number"),
        (np.zeros((0,)), r"a ndarray of shape \(0,\) holds 0 values, not one number"),
        (np.complex128(1 + 2j), r"value \(1\+2j\) is complex, not a real number"),
        (torch.tensor(1 + 1j), r"value \(1\+1j\) is complex, not a real number"),
        (1j, r"value 1j is complex, not a real number"),
        (np.array(None, dtype=object), "value None is not a finite number"),
        (torch.tensor(float("nan")), "value nan is not a finite number"),
    ]
    for value, message in cases:
        with pytest.raises(InvalidArgument, match=f"^metric 'acc': {message}"):
            run.log_metrics({"loss": 1.0, "acc": value})  # type: ignore[dict-item]
    run.close()
    assert client.get_run(run.run_id).metrics == []  # a refused call buffered nothing


def test_a_fractional_step_is_an_invalid_argument_not_truncated(client: TrackingClient) -> None:
    """int() truncated a fractional step: points logged at steps 0.5 and 0.9 were both stored at step 0,
    one curve's distinct points silently sharing a step. Integral values of any number type still log."""
    run = client.start_run("steps")
    refused = ((0.5, "0.5"), (np.float64(2.25), "2.25"), (math.nan, "nan"), (math.inf, "inf"), (None, "None"))
    for step, shown in (*refused, ("abc", "'abc'")):  # the last two escaped as bare TypeError, ValueError
        with pytest.raises(InvalidArgument, match=f"^step {shown} is not a whole number"):
            run.log_metrics({"loss": 1.0}, step=step)  # type: ignore[arg-type]
    run.log_metrics({"loss": 1.0}, step=1)
    run.log_metrics({"loss": 2.0}, step=2.0)  # type: ignore[arg-type]
    run.log_metrics({"loss": 3.0}, step=np.int64(3))  # type: ignore[arg-type]
    run.log_metrics({"loss": 4.0}, step=np.float32(4.0))  # type: ignore[arg-type]
    run.close()
    history = client.metric_history(run.run_id, "loss")
    assert list(history.steps) == [1, 2, 3, 4] and list(history.values) == [1.0, 2.0, 3.0, 4.0]


def test_parameters_are_immutable(client: TrackingClient) -> None:
    run = client.start_run("params", params={"lr": "0.1"})
    again = pb.RunBatch(run_id=run.run_id, params={"lr": "0.1", "depth": "3"})
    client.log_batch(pb.LogBatchRequest(runs=[again]))
    changed = pb.RunBatch(run_id=run.run_id, params={"lr": "0.2"})
    with pytest.raises(InvalidArgument, match=r"'lr'.*immutable"):
        client.log_batch(pb.LogBatchRequest(runs=[changed]))
    assert dict(client.get_run(run.run_id).params) == {"lr": "0.1", "depth": "3"}
    run.close()


def test_a_closed_run_refuses_parameters_and_tags_as_it_refuses_metrics(client: TrackingClient) -> None:
    """``log_metrics`` on a closed handle raised, but ``log_params`` and ``set_tags`` queued their values
    behind the run's end, where the server refused them in the background and nobody was told."""
    run = client.start_run("closed", params={"lr": "0.1"})
    run.close()
    for log in (
        lambda: run.log_metrics({"loss": 1.0}),
        lambda: run.log_params({"depth": 3}),
        lambda: run.set_tags({"team": "eta"}),
    ):
        with pytest.raises(RuntimeError, match=f"run {run.run_id} is closed"):
            log()
    stored = client.get_run(run.run_id)
    assert dict(stored.params) == {"lr": "0.1"} and "team" not in stored.tags


def test_unknown_runs_and_experiments_are_not_found(client: TrackingClient) -> None:
    unknown = "f" * 32
    with pytest.raises(NotFound, match=unknown):
        client.get_run(unknown)
    with pytest.raises(NotFound, match=unknown):
        client.update_run(unknown, "FINISHED")
    with pytest.raises(NotFound, match=unknown):
        series = pb.MetricSeries(key="x", values=[1.0], steps=[0])
        client.log_batch(pb.LogBatchRequest(runs=[pb.RunBatch(run_id=unknown, metrics=[series])]))
    with pytest.raises(NotFound, match="nope"):
        client.get_experiment("nope")
    with pytest.raises(NotFound):
        client.create_run("0" * 32)


def test_a_missing_run_or_experiment_id_is_an_invalid_argument(client: TrackingClient) -> None:
    """An empty run id was NOT_FOUND ("run '' not found") in GetRun, UpdateRun, GetMetricHistory and
    ListArtifacts, and an empty experiment id NOT_FOUND in CreateRun and a LogBatch's RunStart, where
    ListRuns and CompareRuns answered INVALID_ARGUMENT: a request that names nothing is malformed."""
    for call in (
        lambda: client.get_run(""),
        lambda: client.update_run("", "FINISHED"),
        lambda: client.metric_history("", "loss"),
        lambda: client.list_artifacts(""),
    ):
        with pytest.raises(InvalidArgument, match="a run_id is required"):
            call()
    with pytest.raises(InvalidArgument, match="an experiment_id is required"):
        client.create_run("")
    start = pb.RunBatch(run_id="a" * 32, start=pb.RunStart(experiment_id=""))
    with pytest.raises(InvalidArgument, match=f"run '{'a' * 32}': its RunStart needs an experiment_id"):
        client.log_batch(pb.LogBatchRequest(runs=[start]))


def test_system_metrics_are_logged_under_the_system_prefix(client: TrackingClient) -> None:
    with client.start_run("system", system_metrics_interval_s=0.05) as run:
        time.sleep(0.4)
    keys = {m.key for m in client.get_run(run.run_id).metrics}
    assert {"system/cpu_percent", "system/memory_percent", "system/process_rss_mb"} <= keys
    cpu = np.array(client.metric_history(run.run_id, "system/cpu_percent").values)
    assert len(cpu) >= 2 and ((cpu >= 0) & (cpu <= 100)).all()


def test_artifacts_are_uploaded_and_referenced_by_name(client: TrackingClient, tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"weights" * 1000)
    with client.start_run("artifacts") as run:
        logged = run.log_artifact(model)
    assert logged.name == "model.onnx" and logged.size == 7000 and len(logged.sha256) == 64
    assert [a.sha256 for a in client.list_artifacts(run.run_id)] == [logged.sha256]
    assert [a.name for a in client.get_run(run.run_id).artifacts] == ["model.onnx"]
    with pytest.raises(NotFound):
        client._call(
            client._stub.LogArtifact,
            pb.LogArtifactRequest(run_id=run.run_id, name="ghost", sha256="0" * 64),
            pb.RunArtifact,
        )


def test_replacing_an_artifact_audits_the_checksum_it_replaced(
    client: TrackingClient, db_url: str, tmp_path: Path
) -> None:
    """Logging an artifact again under its name replaced its checksum, and the audit entry said only
    what came after: which weights were replaced could not be told from the log."""
    model = tmp_path / "model.onnx"
    model.write_bytes(b"first")
    with client.start_run("replaced") as run:
        first = run.log_artifact(model)
        model.write_bytes(b"second weights")
        second = run.log_artifact(model)
    engine = create_db_engine(db_url)
    try:
        entries = list(iter_entries(create_session_factory(engine)))
    finally:
        engine.dispose()
    logged = [(e.before, e.after) for e in entries if e.after and "artifact" in e.after]
    assert logged == [
        (None, {"artifact": "model.onnx", "sha256": first.sha256, "size": 5}),
        (
            {"artifact": "model.onnx", "sha256": first.sha256, "size": 5},
            {"artifact": "model.onnx", "sha256": second.sha256, "size": 14},
        ),
    ]


def test_writes_carry_the_clients_actor(
    control_plane: ThreadedControlPlane, db_url: str, tmp_path: Path
) -> None:
    """TrackingClient and ArtifactClient were no ServiceClients: they took no ``actor``, so every tracking
    write (batches included) was audited as "anonymous" however the caller named itself."""
    assert issubclass(TrackingClient, ServiceClient) and issubclass(ArtifactClient, ServiceClient)
    model = tmp_path / "model.bin"
    model.write_bytes(b"weights")
    with (
        TrackingClient(control_plane.address, actor="alice", close_timeout_s=10) as client,
        client.start_run("audited", "r", params={"lr": "0.1"}) as run,
    ):
        run.log_metrics({"loss": 1.0})
        run.log_artifact(model)
    engine = create_db_engine(db_url)
    try:
        with read_session(create_session_factory(engine)) as session:
            entries = session.execute(select(AuditEntryRow.actor, AuditEntryRow.action)).all()
    finally:
        engine.dispose()
    assert len(entries) >= 3  # the experiment, the run, its end (and the artifact)
    assert {actor for actor, _ in entries} == {"alice"}


def test_the_token_and_tls_are_the_clients_own(tmp_path: Path, db_url: str) -> None:
    """``security`` could not be passed: only the environment's token and CA reached the server."""
    token = "tracking-admin-token-0123"
    settings = replace(settings_for(tmp_path / "home", db_url), auth=AuthSettings(admin_token=token))
    server = ThreadedControlPlane(settings)
    try:
        with TrackingClient(
            server.address, security=ChannelSecurity(token=token), close_timeout_s=10
        ) as client:
            with client.start_run("secured") as run:
                run.log_metrics({"loss": 0.5})
            assert client.get_run(run.run_id).metrics[0].latest_value == 0.5
        with (
            TrackingClient(
                server.address, security=ChannelSecurity(), timeout=5, close_timeout_s=1
            ) as anonymous,
            pytest.raises(Unauthenticated),
        ):
            anonymous.list_experiments()
    finally:
        server.stop()
