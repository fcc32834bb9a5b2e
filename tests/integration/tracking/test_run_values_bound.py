"""The SDK keeps a run's parameters and tags within the server's bound (``MAX_RUN_VALUES_BYTES``, 3.5 MiB
as a ``Run`` message's maps) at the call. It checked each value but not their sum: the call that crossed
the bound returned, and the server refused the run's whole share of the batch it was shipped in, points
logged beside it included, counted as dropped long after. Now the call raises INVALID_ARGUMENT, logging
nothing of it, and what fits exactly is still taken by both."""

from __future__ import annotations

import pytest

from clients.aether.v1 import tracking_pb2 as pb
from clients.errors import InvalidArgument, NotFound
from clients.sdk.tracking import Run, TrackingClient
from clients.tracking_rules import MAX_RUN_VALUES_BYTES, run_values_bytes

LIMIT = f"over the limit of {MAX_RUN_VALUES_BYTES} bytes per run"


def _filling(used: int, prefix: str = "p") -> dict[str, str]:
    """Parameters that take a run whose values use ``used`` bytes to exactly MAX_RUN_VALUES_BYTES."""
    params: dict[str, str] = {}
    left = MAX_RUN_VALUES_BYTES - used
    while left:
        key = f"{prefix}{len(params):04d}"
        length = 6000
        while run_values_bytes({key: "z" * length}, {}) > left:
            length -= 1
        params[key] = "z" * length
        left -= run_values_bytes({key: params[key]}, {})
    assert run_values_bytes(params, {}) == MAX_RUN_VALUES_BYTES - used
    return params


def _delivered(client: TrackingClient) -> None:
    assert client.flush(timeout=30)
    assert (client.last_error, client.dropped_points) == (None, 0)


def test_values_up_to_the_bound_are_taken_and_the_call_past_it_raises_logging_nothing(
    client: TrackingClient,
) -> None:
    tags = {"team": "search"}
    run = client.start_run("bound", "full", params={"lr": "0.1"}, tags=tags)
    run.log_metrics({"loss": 1.0}, step=0)
    full = _filling(run_values_bytes({"lr": "0.1"}, tags))
    run.log_params(full)  # exactly the bound: the server takes it too
    with pytest.raises(InvalidArgument, match=f"run {run.run_id!r}: .*{LIMIT}.*nothing was written"):
        run.log_params({"zz-fits-alone": "1", "another": "2"})  # refused whole, its first key too
    with pytest.raises(InvalidArgument, match=LIMIT):
        run.set_tags({"stage": "x"})
    with pytest.raises(InvalidArgument, match=LIMIT):
        run.set_tags({"team": "search-ranking"})  # an overwrite that grows the value
    run.set_tags({"team": "search"})  # the same size: taken
    run.log_metrics({"loss": 0.5}, step=1)
    run.close()
    _delivered(client)
    stored = client.get_run(run.run_id)
    assert dict(stored.params) == {"lr": "0.1", **full}
    assert dict(stored.tags) == tags
    assert stored.status == pb.RUN_STATUS_FINISHED and stored.metrics[0].count == 2


def test_a_tag_overwritten_shorter_makes_room(client: TrackingClient) -> None:
    run = client.start_run("bound", "room", tags={"notes": "n" * 6000})
    run.log_params(_filling(run_values_bytes({}, {"notes": "n" * 6000})))
    with pytest.raises(InvalidArgument, match=LIMIT):
        run.log_params({"late": "1"})
    run.set_tags({"notes": ""})
    run.log_params({"late": "1"})
    run.close()
    _delivered(client)
    assert client.get_run(run.run_id).params["late"] == "1"


def test_a_run_started_with_values_past_the_bound_is_refused_before_it_is_queued(
    client: TrackingClient,
) -> None:
    too_many = {**_filling(0), "one-more": "1"}
    with pytest.raises(InvalidArgument, match=f"new run 'too-big' of experiment 'bound-start': .*{LIMIT}"):
        client.start_run("bound-start", "too-big", params=too_many)
    with pytest.raises(InvalidArgument, match=LIMIT):
        client.start_run("bound-start", "too-big", params=_filling(0), tags={"t": "1"})
    _delivered(client)
    with pytest.raises(NotFound):  # refused before anything was sent, the experiment's creation too
        client.get_experiment("bound-start")


def test_a_run_handle_counts_the_values_it_was_made_with(client: TrackingClient) -> None:
    """A handle made from a run's message (its values as stored) starts from their size."""
    experiment = client.create_experiment("bound-handle")
    info = client.create_run(experiment.experiment_id, params=_filling(0))
    run = Run(client, info)
    with pytest.raises(InvalidArgument, match=LIMIT):
        run.set_tags({"t": "1"})
