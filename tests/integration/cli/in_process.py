"""Running ``aetherctl`` in the test's process against a control plane, and the one-view definitions the
quarantine tests apply."""

from __future__ import annotations

import pytest

from control_plane.cli.main import main

Capture = pytest.CaptureFixture[str]

#: One entity and one batch view whose feature ``trips`` must not be negative (what the quarantine holds).
DRIVER_STATS = """
entities:
  - name: driver
    join_keys: [{name: driver_id, type: int64}]
feature_views:
  - name: stats
    entity: driver
    ttl: 1d
    source: {kind: batch, uri: file:///nowhere.parquet}
    features:
      - {name: trips, dtype: int64, validation: {min: 0}}
"""


def aetherctl(capsys: Capture, address: str, *args: str) -> tuple[int, str, str]:
    """``aetherctl --control-plane ADDRESS --timeout 5 ARGS``: its exit code, stdout and stderr."""
    capsys.readouterr()  # drop anything printed before
    code = main(["--control-plane", address, "--timeout", "5", *args])
    out, err = capsys.readouterr()
    return code, out, err
