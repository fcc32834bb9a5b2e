"""``aetherctl`` takes long options only as spelt in full: argparse's prefix matching turned
``audit export --out FILE`` into ``--outcome FILE`` ("invalid choice"), and ``audit export --out ok
FILE`` into a silent filter by outcome."""

from __future__ import annotations

import argparse
import contextlib
import io

import pytest

from control_plane.cli.main import build_parser
from control_plane.cli.settings import CliSettings


def parse(*argv: str) -> tuple[argparse.Namespace | None, str]:
    """The parsed arguments (None when refused) and argparse's last line on stderr."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            return build_parser(CliSettings.from_env({})).parse_args(list(argv)), ""
        except SystemExit:
            return None, err.getvalue().strip().splitlines()[-1]


@pytest.mark.parametrize(
    "argv",
    [
        ["audit", "export", "--out", "ok", "audit.jsonl"],
        ["audit", "list", "--obj", "model/demand"],
        ["quarantine", "list", "--reason", "max"],
        ["jobs", "logs", "job-1", "--fol"],
        ["--control", "127.0.0.1:1", "features", "list"],
    ],
)
def test_a_prefix_of_a_long_option_is_refused_not_taken_for_it(argv: list[str]) -> None:
    parsed, error = parse(*argv)
    assert parsed is None and error.startswith("aetherctl"), error


def test_audit_export_out_is_not_taken_for_outcome() -> None:
    assert parse("audit", "export", "--out", "audit.jsonl") == (
        None,
        "aetherctl: error: unrecognized arguments: --out",
    )
    parsed, _ = parse("audit", "export", "--outcome", "ok", "audit.jsonl")
    assert parsed is not None and (parsed.outcome, str(parsed.file)) == ("ok", "audit.jsonl")
