"""The trigger config's documented defaults name the config's real fields."""

from __future__ import annotations

from clients.aether.v1 import retraining_pb2 as pb
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
