"""The trigger config's documented defaults name the config's real fields; values out of range are
refused naming their field."""

from __future__ import annotations

import math
import re

import pytest

from clients.aether.v1 import retraining_pb2 as pb
from clients.errors import InvalidArgument
from control_plane.retraining import config as configs


def documented_fields() -> list[str]:
    doc = configs.__doc__ or ""
    table = doc.split("\n=", 1)[1].split("\n=", 1)[0]  # between the table's two rules
    return [line.split()[0] for line in table.splitlines()[1:] if line and not line.startswith(" ")]


def test_every_documented_default_names_a_trigger_config_field() -> None:
    """The table named ``gates.max_relative_drop``, which a person setting it found nowhere."""
    fields = documented_fields()
    assert "gates.max_relative_degradation" in fields and len(fields) == 10
    for path in fields:
        message = pb.TriggerConfig.DESCRIPTOR
        for part in path.split("."):
            assert part in message.fields_by_name, f"{path}: no field {part!r} in {message.name}"
            field = message.fields_by_name[part]
            message = field.message_type or message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("cooldown_seconds", 1e12),  # its end is past year 9999: every tick after a trigger raised
        ("cooldown_seconds", -1.0),
        ("data_window_seconds", 1e11),  # TriggerNow raised OverflowError (INTERNAL) on every tick
        ("data_window_seconds", math.nan),
        ("data_window_seconds", 0.5),
        ("gates.holdout_seconds", 1e14),  # past SQLite's INTEGER: every evaluation failed
        ("gates.holdout_seconds", math.inf),
        ("gates.max_latency_ratio", math.nan),  # compared false everywhere: the gate was off unseen
        ("gates.max_latency_ratio", math.inf),
    ],
)
def test_spans_and_ratios_out_of_range_are_refused_naming_the_field(field: str, value: float) -> None:
    config = pb.TriggerConfig(deployment="eta")
    target, name = (config.gates, field.split(".")[1]) if "." in field else (config, field)
    setattr(target, name, value)
    with pytest.raises(InvalidArgument, match=re.escape(field)):
        configs.effective(config)


def test_the_bounds_themselves_are_accepted() -> None:
    year = 366 * 24 * 3600.0
    config = pb.TriggerConfig(
        deployment="eta",
        data_window_seconds=year,
        cooldown_seconds=year,
        gates=pb.EvaluationGates(holdout_seconds=1.0, max_latency_ratio=-1.0),
    )
    stored = configs.effective(config)
    assert (stored.data_window_seconds, stored.gates.holdout_seconds) == (year, 1.0)
    assert stored.cooldown_seconds == year
    assert configs.effective(pb.TriggerConfig(deployment="eta", cooldown_seconds=0)).cooldown_seconds == 0
    assert configs.gates_of(stored).max_latency_ratio == 0.0  # < 0: no ratio gate, as documented
