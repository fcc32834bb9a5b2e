"""`aetherctl feedback record --help` states the JSON-lines format it reads (it said only "JSON-lines")."""

from __future__ import annotations

import argparse
import contextlib
import io

import pytest

from control_plane.cli import monitoring


def test_feedback_record_help_states_the_line_format() -> None:
    parser = argparse.ArgumentParser(prog="aetherctl")
    monitoring.register(parser.add_subparsers(dest="command", required=True))
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        parser.parse_args(["feedback", "record", "--help"])
    text = " ".join(out.getvalue().split())
    assert '"request_id"' in text and '"label"' in text and '"row"' in text
