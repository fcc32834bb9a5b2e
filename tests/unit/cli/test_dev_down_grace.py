"""How long `aetherctl dev down` waits between SIGTERM and SIGKILL (``dev.down_grace``): long enough for
the control plane's stop to drain its ingestion runs (AETHER_CONTROL_PLANE_DRAIN_S) and answer them. A
fixed 10 s killed a control plane with a longer drain while it waited for a stuck run, and the run's caller
got a retryable UNAVAILABLE instead of the answer naming what the run stored."""

from __future__ import annotations

import argparse

import pytest

from control_plane.cli import dev, local_stack
from control_plane.cli.main import build_parser
from control_plane.cli.settings import CliSettings
from control_plane.settings import ControlPlaneSettings


def test_without_the_drain_variable_the_grace_is_ten_seconds() -> None:
    assert dev.down_grace(None, {}) == 10.0
    assert dev.down_grace(None, {"AETHER_CONTROL_PLANE_DRAIN_S": ""}) == 10.0


def test_a_drain_longer_than_the_default_lengthens_the_grace_past_drain_and_grpc_grace() -> None:
    grace = dev.down_grace(None, {"AETHER_CONTROL_PLANE_DRAIN_S": "30"})
    assert grace == 30 + ControlPlaneSettings.shutdown_grace_s + dev.DOWN_MARGIN_S == 34.0
    assert dev.down_grace(None, {"AETHER_CONTROL_PLANE_DRAIN_S": "3600"}) == 3604.0


def test_a_short_drain_keeps_the_ten_seconds_the_other_services_get() -> None:
    assert dev.down_grace(None, {"AETHER_CONTROL_PLANE_DRAIN_S": "0"}) == 10.0
    assert dev.down_grace(None, {"AETHER_CONTROL_PLANE_DRAIN_S": "6"}) == 10.0


def test_a_value_the_control_plane_refuses_leaves_the_default() -> None:
    # The control plane does not start with it, so there is no drain of it to wait for; `dev down` must
    # still stop the rest of the stack.
    for value in ("soon", "-1", "3601", "nan"):
        assert dev.down_grace(None, {"AETHER_CONTROL_PLANE_DRAIN_S": value}) == 10.0, value


def test_the_flag_wins_over_the_drain() -> None:
    assert dev.down_grace(3.0, {"AETHER_CONTROL_PLANE_DRAIN_S": "30"}) == 3.0
    assert dev.down_grace(0.0, {}) == 0.0


def test_dev_down_without_the_flag_leaves_the_grace_to_the_drain() -> None:
    parser = build_parser(CliSettings.from_env())
    assert parser.parse_args(["dev", "down"]).grace is None
    assert parser.parse_args(["dev", "down", "--grace", "5"]).grace == 5.0


def test_dev_down_hands_the_stack_the_grace_the_drain_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    # Only the hand-over to the stack is replaced: stopping real services is test_dev_cli's.
    graces: list[float] = []

    def down(args: argparse.Namespace, settings: CliSettings) -> int:
        graces.append(args.grace)
        return 0

    monkeypatch.setattr(local_stack, "run", down)
    monkeypatch.setenv("AETHER_CONTROL_PLANE_DRAIN_S", "20")
    settings = CliSettings.from_env()
    assert dev.run(build_parser(settings).parse_args(["dev", "down"]), settings) == 0
    assert graces == [24.0]
