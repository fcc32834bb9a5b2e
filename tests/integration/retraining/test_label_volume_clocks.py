"""The label-volume rule across control planes whose clocks disagree: the retraining loop runs on one
whose clock is an hour ahead of the one the labels are written through (the loop's ``clock`` is that
plane's clock; the writers here run on this host's).

Labels were stamped by the writing host's clock and a tick's period ended at the loop's: a label written
after a trigger, on the host behind, was stamped before that trigger's time, where the next period
starts, and counted in no period. Labels are stamped by the database's clock now, and a trigger's period
ends at the database's clock read as it counts, where the next one starts."""

from __future__ import annotations

import time

from clients.aether.v1 import monitoring_pb2 as monpb
from clients.aether.v1 import retraining_pb2 as pb
from control_plane.monitoring.feedback import IndexedPrediction, index_predictions, record_feedback
from control_plane.retraining import config as configs
from tests.integration.retraining.conftest import World, restarted

AHEAD_S = 3600.0


def plane_an_hour_ahead() -> float:
    """The wall clock of the control plane the loop runs on: an hour ahead of this host's."""
    return time.time() + AHEAD_S


async def test_a_label_written_through_a_plane_behind_the_loops_counts_in_the_next_period(
    world: World,
) -> None:
    configs.put_config(
        world.sessions,
        pb.TriggerConfig(deployment="eta", enabled=True, new_labels=1, cooldown_seconds=0),
        actor="operator",
    )
    retrainer = restarted(world, plane_an_hour_ahead)
    first = [d for d in await retrainer.tick() if d.deployment == "eta"]
    # The holdout's labels trigger (no training spec is recorded for the champion: blocked, in flight none).
    assert [(d.triggered, tuple(d.rules)) for d in first] == [(True, ("labels",))]

    # After the trigger, one more labelled prediction, written through this host (an hour behind the loop).
    ts_us = time.time_ns() // 1000
    index_predictions(
        world.sessions,
        [IndexedPrediction("late", 0, "eta", "eta", world.champion, "eta-v1", ts_us, [0.0], False)],
    )
    record_feedback(world.sessions, [monpb.Feedback(request_id="late", row=0, label=1.0)])

    second = [d for d in await retrainer.tick() if d.deployment == "eta"]
    assert [(d.triggered, tuple(d.rules), d.reasons[0]) for d in second] == [
        (True, ("labels",), "1 new labels (rule: 1)")
    ]
