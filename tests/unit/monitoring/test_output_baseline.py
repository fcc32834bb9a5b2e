"""The prediction baseline a window makes (no output profile registered) is of one output, and scores only
windows of that output, on a real redis-server and database: after ``prediction_output`` names another
output, the first window of it makes that output's baseline; and a window open across the change keeps
the outputs of one of them."""

from __future__ import annotations

import numpy as np

from clients.aether.v1 import monitoring_pb2 as pb
from data_plane.prediction_log import PredictionRecord
from tests.unit.monitoring.world import T0, World, configure, fields_of


def scored_entry(i: int) -> dict[bytes, bytes]:
    """Request ``i`` of "churn" (churn-model v1): 2 features, a score in [0.1, 0.3) and a class code."""
    rng = np.random.default_rng(i)
    item = PredictionRecord(
        request_id=f"r{i}",
        deployment="churn",
        model="churn-model",
        version=1,
        variant="primary",
        role="served",
        routing_key="",
        ts_us=T0 + i,
        entities=[{"id": str(i)}],
        features=rng.standard_normal((1, 2)).astype(np.float32),
        outputs={
            "score": np.array([[0.1 + 0.2 * rng.random()]], dtype=np.float32),
            "label": np.array([[i % 2]], dtype=np.int64),
        },
    )
    return fields_of(item)


async def test_a_baseline_learned_from_one_output_never_scores_another(world: World) -> None:
    """The score's baseline scored the class codes once the config named them: every window read as
    prediction drift, its output named ``score``, until the process restarted (which learned the codes)."""
    configure(world.sessions, window_rows=40)
    monitor = world.monitor()
    world.add(*(scored_entry(i) for i in range(40)))
    await monitor.tick()
    (first,) = world.reports()
    assert first.prediction_status == pb.DRIFT_STATUS_NO_REFERENCE  # it makes the score's baseline

    configure(world.sessions, window_rows=40, prediction_output="label")
    world.add(*(scored_entry(i) for i in range(40, 80)))
    await monitor.tick()
    second = world.reports()[0]
    # No baseline of the codes yet: this window makes it.
    assert second.prediction_status == pb.DRIFT_STATUS_NO_REFERENCE
    assert [f.name for f in second.outputs] == []

    world.add(*(scored_entry(i) for i in range(80, 120)))
    await monitor.tick()
    third = world.reports()[0]
    assert third.prediction_status == pb.DRIFT_STATUS_NO_DRIFT
    assert [f.name for f in third.outputs] == ["label"]


async def test_a_window_open_across_the_change_keeps_the_outputs_of_one_output(world: World) -> None:
    """Half its rows logged before the config named ``label``, half after: the window held the scores and
    the codes as one output, and the baseline it made mixed them."""
    configure(world.sessions, window_rows=80, test=pb.DRIFT_TEST_KS)
    monitor = world.monitor()
    world.add(*(scored_entry(i) for i in range(40)))
    await monitor.tick()
    configure(world.sessions, window_rows=80, test=pb.DRIFT_TEST_KS, prediction_output="label")
    world.add(*(scored_entry(i) for i in range(40, 80)))
    await monitor.tick()
    (mixed,) = world.reports()
    assert mixed.n_rows == 80 and mixed.prediction_status == pb.DRIFT_STATUS_NO_REFERENCE

    # The baseline it made is of the scores alone: 40 more scores do not drift from it.
    configure(world.sessions, window_rows=80, test=pb.DRIFT_TEST_KS)
    world.add(*(scored_entry(i) for i in range(80, 160)))
    await monitor.tick()
    after = world.reports()[0]
    assert after.prediction_status == pb.DRIFT_STATUS_NO_DRIFT
    assert [f.name for f in after.outputs] == ["score"]
