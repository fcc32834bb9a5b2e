"""The tracking SDK against values and conditions that used to break its background shipper: a value the
wire cannot carry, a value the server refuses, a batch over the server's message limit, a server that does
not answer at close. Each is refused at the call or costs only its own data, never the shipper."""

from __future__ import annotations

import socket
import time

import pytest

from clients.aether.v1 import tracking_pb2 as pb
from clients.errors import InvalidArgument
from clients.sdk.tracking import Run, TrackingClient
from tests.integration.tracking.conftest import ThreadedControlPlane


def _shipper_threads_alive(client: TrackingClient) -> bool:
    return client._shipper._thread.is_alive() and client._shipper._sender.is_alive()


# A value protobuf cannot encode ---------------------------------------------------------------------------


def test_values_the_wire_cannot_carry_are_invalid_arguments_at_the_call(client: TrackingClient) -> None:
    run = client.start_run("unencodable")
    with pytest.raises(InvalidArgument, match="step"):
        run.log_metrics({"loss": 1.0}, step=2**63)
    with pytest.raises(InvalidArgument, match="timestamp_us"):
        run.log_metrics({"loss": 1.0}, step=0, timestamp_us=-(2**63) - 1)
    # The server would refuse the run's whole batch share for it, long after this call returned.
    with pytest.raises(InvalidArgument, match="timestamp_us 253402300800000000 is outside years 1 to 9999"):
        run.log_metrics({"loss": 1.0}, step=0, timestamp_us=253_402_300_800_000_000)
    with pytest.raises(InvalidArgument, match="'path'"):
        run.log_params({"path": "data/\udcff.csv"})  # a lone surrogate, as os.fsdecode makes
    with pytest.raises(InvalidArgument, match="tag"):
        run.set_tags({"\udcff": "x"})
    with pytest.raises(InvalidArgument, match="metric name"):
        run.log_metrics({"loss\udcff": 1.0})
    with pytest.raises(InvalidArgument, match="run name"):
        client.start_run("unencodable", "r\udcff")
    run.log_metrics({"loss": 2.0}, step=2**63 - 1)  # the largest step is fine
    run.close()
    assert client.dropped_points == 0 and client.last_error is None
    assert list(client.metric_history(run.run_id, "loss").steps) == [2**63 - 1]


def test_an_unbuildable_value_costs_its_run_not_the_shipper(client: TrackingClient) -> None:
    good, bad = client.start_run("unbuildable", "good"), client.start_run("unbuildable", "bad")
    assert client.flush(timeout=10)
    # Past the checks at the call (as a value a check missed would be): the builder thread meets it.
    client._shipper.add_points(bad.run_id, 2**63, 0, {"loss": 1.0})
    good.log_metrics({"loss": 0.5}, step=1)
    assert client.flush(timeout=10)  # settled, not hung
    assert _shipper_threads_alive(client)
    assert client.dropped_points == 1
    assert isinstance(client.last_error, InvalidArgument)
    good.log_metrics({"loss": 0.25}, step=2)  # later batches are still sent
    bad.log_metrics({"loss": 0.75}, step=3)
    assert client.flush(timeout=10)
    assert list(client.metric_history(good.run_id, "loss").values) == [0.5, 0.25]
    assert list(client.metric_history(bad.run_id, "loss").values) == [0.75]


def test_a_send_that_raises_unexpectedly_is_counted_and_the_sender_goes_on(
    client: TrackingClient,
) -> None:
    run = client.start_run("closed-channel")
    assert client.flush(timeout=10)
    client._channel.close()  # every LogBatch now raises ValueError, not an RpcError
    assert run.log_metrics({"loss": 1.0, "acc": 0.5}, step=0)
    assert client.flush(timeout=10)
    assert _shipper_threads_alive(client)
    assert client.dropped_points == 2
    assert client.last_error is not None and "ValueError" in client.last_error.message
    assert run.log_metrics({"loss": 2.0}, step=1)
    assert client.flush(timeout=10)
    assert client.dropped_points == 3
    run.close(wait=False)


def test_run_batches_built_for_the_wire_hold_every_kind_of_entry() -> None:
    """The isolating path of the builder keeps the request of the good runs intact."""
    from clients.sdk.tracking_requests import Entry, build_outgoing

    start = pb.RunStart(experiment_id="e" * 32, name="r")
    entries = [
        Entry("a" * 32, start=start),
        Entry("a" * 32, 1, 3, 10, {"x": 1.0}),
        Entry("b" * 32, 1, 2**64, 10, {"x": 1.0}),
        Entry("a" * 32, params={"p": "1"}),
    ]
    outgoing, error = build_outgoing(entries)
    assert isinstance(error, ValueError)
    assert outgoing.request is not None and [run.run_id for run in outgoing.request.runs] == ["a" * 32]
    assert (outgoing.points, outgoing.entries, outgoing.unbuildable) == ({"a" * 32: 1}, 4, 1)
    assert dict(outgoing.request.runs[0].params) == {"p": "1"}


# A value the server refuses --------------------------------------------------------------------------------


def test_values_the_server_refuses_are_invalid_arguments_at_the_call(
    control_plane: ThreadedControlPlane,
) -> None:
    # One flush window for everything: a refused value must not cost the start or the points beside it.
    with TrackingClient(control_plane.address, flush_interval_s=60) as client:
        run = client.start_run("refused", params={"lr": "0.01"})
        run.log_metrics({"acc": 0.5}, step=0)
        for bad in ({"train\tloss": 1.0}, {"k" * 251: 1.0}, {"acc": 0.9, "\x00": 1.0}):
            with pytest.raises(InvalidArgument, match="metric name"):
                run.log_metrics(bad, step=1)
        with pytest.raises(InvalidArgument, match="'config': value is longer than 6000"):
            run.log_params({"config": "x" * 6001})
        with pytest.raises(InvalidArgument, match="tag name"):
            run.set_tags({"a\nb": "x"})
        with pytest.raises(InvalidArgument, match="'note': value is longer than 6000"):
            run.set_tags({"note": "x" * 6001})
        with pytest.raises(InvalidArgument, match=r"'lr'.*immutable"):
            run.log_params({"lr": "0.02"})
        with pytest.raises(InvalidArgument, match="longer than 128"):
            client.start_run("refused", "r" * 129)
        with pytest.raises(InvalidArgument, match="parameter name"):
            client.start_run("refused", params={"": "1"})
        run.log_params({"lr": "0.01", "depth": 3})  # the same value again is fine
        with pytest.raises(InvalidArgument, match=r"'depth'.*immutable"):
            run.log_params({"batch": 64, "depth": 4})  # refused whole: nothing of the call is logged
        run.log_params({"batch": "32"})
        run.log_metrics({"acc": 0.75}, step=1)
        run.close()
        assert client.dropped_points == 0 and client.last_error is None
        info = client.get_run(run.run_id)
        assert info.status == pb.RUN_STATUS_FINISHED
        assert dict(info.params) == {"lr": "0.01", "depth": "3", "batch": "32"}
        assert list(client.metric_history(run.run_id, "acc").values) == [0.5, 0.75]


def test_a_nul_character_in_a_value_or_run_name_is_refused_at_the_call(
    control_plane: ThreadedControlPlane,
) -> None:
    """The server refuses text holding a NUL byte (0x00) in every request, and the SDK took it in a
    parameter or tag value and in a run's name: the server then refused the run's whole batch share, long
    after the call, and with it the points beside it, or the run's start and so the whole run."""
    with TrackingClient(control_plane.address, flush_interval_s=60) as client:
        with pytest.raises(InvalidArgument, match=r"run name contains a NUL byte \(0x00\) at position 1"):
            client.start_run("nul", "r\x00")
        with pytest.raises(
            InvalidArgument, match=r"parameter 'path': value contains a NUL byte \(0x00\) at position 1"
        ):
            client.start_run("nul", params={"path": "a\x00b"})
        run = client.start_run("nul", params={"lr": "0.01"})
        run.log_metrics({"acc": 0.5}, step=0)
        with pytest.raises(InvalidArgument, match=r"parameter 'path': value contains a NUL byte"):
            run.log_params({"path": "a\x00b"})
        with pytest.raises(
            InvalidArgument, match=r"tag 'note': value contains a NUL byte \(0x00\) at position 0"
        ):
            run.set_tags({"note": "\x00"})
        run.log_metrics({"acc": 0.75}, step=1)
        run.close()
        assert client.dropped_points == 0 and client.last_error is None
        info = client.get_run(run.run_id)
        assert (info.status, dict(info.params), dict(info.tags)) == (
            pb.RUN_STATUS_FINISHED,
            {"lr": "0.01"},
            {},
        )
        assert list(client.metric_history(run.run_id, "acc").values) == [0.5, 0.75]


def test_the_sdk_and_the_server_share_one_set_of_rules() -> None:
    from clients import tracking_rules
    from control_plane.db.models import NAME_LENGTH
    from control_plane.tracking import metrics, records, tables

    assert tracking_rules.NAME_LENGTH == NAME_LENGTH  # the width of the server's name columns
    assert tables.KEY_LENGTH is tracking_rules.KEY_LENGTH
    assert metrics.check_key is tracking_rules.check_key
    assert (records.check_values, records.check_name) == (
        tracking_rules.check_values,
        tracking_rules.check_name,
    )


# A batch over the server's message limit (gRPC's default 4 MiB) -------------------------------------------


def _log_a_large_sweep(client: TrackingClient) -> list[Run]:
    """About 8 MB in one flush window: 100 starts with 20 parameters of 2,500 characters (a config dump
    each), and one call logging 500 parameters of 6,000 characters."""
    runs = [
        client.start_run("sweep", f"r{i}", params={f"p{j}": f"{i}" + "x" * 2500 for j in range(20)})
        for i in range(100)
    ]
    for step, run in enumerate(runs):
        run.log_metrics({"loss": 0.5}, step=step)
    runs[0].log_params({f"c{i}": "y" * 6000 for i in range(500)})
    return runs


def _assert_the_sweep_arrived(client: TrackingClient, runs: list[Run]) -> None:
    assert client.flush(timeout=60)
    assert client.dropped_points == 0 and client.last_error is None
    assert client.shipped_points == 100
    for i in (0, 57, 99):
        info = client.get_run(runs[i].run_id)
        assert info.params["p19"] == f"{i}" + "x" * 2500
        assert [(m.key, m.latest_step) for m in info.metrics] == [("loss", i)]
    assert len(client.get_run(runs[0].run_id).params) == 520
    small = client.start_run("other", "small")
    small.log_metrics({"loss": 1.0})
    assert client.flush(timeout=10)  # nothing is stuck in front of it


def test_requests_are_capped_by_bytes_so_no_batch_exceeds_the_servers_limit(
    control_plane: ThreadedControlPlane,
) -> None:
    with TrackingClient(control_plane.address, flush_interval_s=60) as client:
        _assert_the_sweep_arrived(client, _log_a_large_sweep(client))


def test_a_request_refused_as_too_large_is_split_not_resent(control_plane: ThreadedControlPlane) -> None:
    with TrackingClient(control_plane.address, flush_interval_s=60) as client:
        # A cap above the server's limit stands for a server or proxy whose limit is below the SDK's.
        client._shipper.max_request_bytes = 64 * 1024 * 1024
        _assert_the_sweep_arrived(client, _log_a_large_sweep(client))


# A server that does not answer at close --------------------------------------------------------------------


def test_close_keeps_to_its_timeout_and_counts_every_point_it_did_not_send(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as black_hole:  # accepts connections (the kernel does) and never answers
        black_hole.bind(("127.0.0.1", 0))
        black_hole.listen()
        address = f"127.0.0.1:{black_hole.getsockname()[1]}"
        client = TrackingClient(address, timeout=2.0, close_timeout_s=1.0, batch_points=10)
        handle = Run(client, pb.Run(run_id="0" * 32))
        for step in range(100):
            assert handle.log_metrics({"loss": 1.0}, step=step)
        started = time.monotonic()
        client.close()
        assert time.monotonic() - started < 1.5  # one deadline for the flush, the joins and every call
        assert client.dropped_points == 100  # counted before close returned, in flight or not
        # The sender, still inside its call, ends on its own without sending more and closes the channel
        # then (closing it under the call would make the sender raise).
        client._shipper._sender.join(timeout=10)
        assert not client._shipper._sender.is_alive() and not client._shipper._thread.is_alive()
        assert client.dropped_points == 100 and client.shipped_points == 0
        assert "unexpected error" not in caplog.text
        with pytest.raises(ValueError, match="closed channel"):  # closed once the sender was done
            client._send_batch(pb.LogBatchRequest())
