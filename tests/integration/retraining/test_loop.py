"""The retraining loop across restarts: the schedule rule's window starts at the last tick stored before
the restart, so a cron minute in the first window after it, or during the downtime, still fires, once."""

from __future__ import annotations

import datetime as dt

from clients.aether.v1 import retraining_pb2 as pb
from control_plane.retraining import config as configs
from control_plane.retraining.loop import Retrainer, RetrainingSettings
from tests.integration.retraining.conftest import STREAM, World


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def restarted(world: World, clock: Clock) -> Retrainer:
    """A fresh retrainer on the same database, as after a control-plane restart."""
    return Retrainer(
        world.sessions,
        world.registry,
        world.deployments,
        world.jobs,
        world.features,
        world.offline,
        world.client,
        RetrainingSettings(stream=STREAM),
        clock=clock,
    )


def at(day: int, hour: int, minute: int, second: int = 0) -> float:
    return dt.datetime(2026, 5, day, hour, minute, second, tzinfo=dt.UTC).timestamp()


async def triggered_at(retrainer: Retrainer, clock: Clock, moment: float) -> list[str]:
    """The rules that fired at ``moment`` for deployment eta (empty: no retraining)."""
    clock.now = moment
    decisions = await retrainer.tick()
    return [rule for d in decisions if d.deployment == "eta" and d.triggered for rule in d.rules]


def schedule(world: World, expression: str) -> None:
    configs.put_config(
        world.sessions,
        pb.TriggerConfig(deployment="eta", enabled=True, schedule=expression, cooldown_seconds=0),
        actor="operator",
    )


async def test_a_restart_does_not_skip_the_cron_minute_of_its_first_window(world: World) -> None:
    schedule(world, "0 2 * * *")
    clock = Clock()
    assert await triggered_at(restarted(world, clock), clock, at(1, 1, 59, 30)) == []
    after_restart = restarted(world, clock)
    assert await triggered_at(after_restart, clock, at(1, 2, 0, 10)) == ["schedule"]
    assert await triggered_at(after_restart, clock, at(1, 2, 0, 40)) == []


async def test_cron_minutes_missed_while_down_fire_once(world: World) -> None:
    schedule(world, "*/10 * * * *")
    clock = Clock()
    before = restarted(world, clock)
    assert await triggered_at(before, clock, at(2, 1, 0, 30)) == []
    assert await triggered_at(before, clock, at(2, 1, 1, 0)) == []
    # Three hours down: eighteen matching minutes passed, and the first tick back retrains once for all.
    after_restart = restarted(world, clock)
    assert await triggered_at(after_restart, clock, at(2, 4, 5, 0)) == ["schedule"]
    assert await triggered_at(after_restart, clock, at(2, 4, 5, 30)) == []
    assert await triggered_at(after_restart, clock, at(2, 4, 10, 0)) == ["schedule"]
