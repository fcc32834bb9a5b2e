"""`aetherctl materializer run --help` says what each flag defaults to, and the variable it falls back to.

Before, `--lateness-s` (3600), `--rules-every-s` (10), `--count`, `--block-ms`, `--reclaim-idle-ms`,
`--max-future-s`, `--max-future-skew-s` and `--lag-alert-s` named no default, and `--db-url`, `--redis-url`
and `--offline-root` neither the `AETHER_*` variable they fall back to nor its default: a user learnt them
from the code. The defaults shown are the parser's own (``%(default)s``); these tests keep those equal to
the materializer's (``MaterializerOptions``, ``DEFAULT_MAX_FUTURE``) and the shown paths to the code's."""

from __future__ import annotations

import argparse
import contextlib
import io
from pathlib import Path

import pytest

from clients.join_key_limit import (
    DEFAULT_MAX_JOIN_KEY_BYTES,
    MAX_JOIN_KEY_BYTES_LIMIT,
    MAX_JOIN_KEY_BYTES_VARIABLE,
)
from control_plane.cli import ingestion
from control_plane.defaults import DEFAULT_REDIS_URL, default_db_url
from control_plane.ingestion.streaming import flags
from control_plane.ingestion.streaming.__main__ import build_parser
from control_plane.ingestion.streaming.options import MaterializerOptions
from control_plane.ingestion.streaming.stream_time import DEFAULT_MAX_FUTURE_SKEW_S
from control_plane.ingestion.validation import DEFAULT_MAX_FUTURE
from control_plane.offline.roots import default_offline_root

#: Each numeric flag and the default the materializer has for it when no flag sets it.
_OPTION_DEFAULTS: dict[str, float] = {
    "--count": MaterializerOptions().count,
    "--block-ms": MaterializerOptions().block_ms,
    "--reclaim-idle-ms": MaterializerOptions().reclaim_idle_ms,
    "--lateness-s": MaterializerOptions().lateness_s,
    "--max-future-s": DEFAULT_MAX_FUTURE.total_seconds(),
    "--max-future-skew-s": DEFAULT_MAX_FUTURE_SKEW_S,
    "--lag-alert-s": MaterializerOptions().lag_alert_seconds,
    "--rules-every-s": MaterializerOptions().rules_every_s,
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aetherctl")
    ingestion.register(parser.add_subparsers(dest="command", required=True))
    return parser


def _help() -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        _parser().parse_args(["materializer", "run", "--help"])
    return " ".join(out.getvalue().split())  # argparse wraps lines wherever the terminal width says


def _flag_help(text: str, flag: str) -> str:
    """The help of ``flag`` in ``text``: from its entry in the options list to the next option."""
    entry = text.index(f" {flag} ", text.index("options:"))
    following = text.find(" --", entry + len(flag) + 2)
    return text[entry : following if following != -1 else len(text)]


def test_every_numeric_flag_names_the_materializers_default() -> None:
    text = _help()
    parsed = _parser().parse_args(["materializer", "run", "--view", "v"])
    for flag, default in _OPTION_DEFAULTS.items():
        assert getattr(parsed, flag[2:].replace("-", "_")) == default, flag
        assert f"default: {default:g})" in _flag_help(text, flag), flag


def test_the_store_flags_name_their_variable_and_its_default() -> None:
    text = _help()
    home = Path("$AETHER_HOME")
    assert default_db_url(home) == flags.DEFAULT_DB_URL_SHOWN
    assert default_offline_root({"AETHER_HOME": str(home)}) == flags.DEFAULT_OFFLINE_ROOT_SHOWN
    shown = {
        "--db-url": f"$AETHER_DB_URL, else {default_db_url(home)}",
        "--redis-url": f"$AETHER_REDIS_URL, else {DEFAULT_REDIS_URL}",
        "--offline-root": f"$AETHER_OFFLINE_ROOT, else {flags.DEFAULT_OFFLINE_ROOT_SHOWN}",
    }
    for flag, default in shown.items():
        assert f"(default: {default})" in _flag_help(text, flag), flag


def test_the_group_and_version_name_theirs() -> None:
    text = _help()
    assert f"(default: {MaterializerOptions().group})" in _flag_help(text, "--group")
    assert "(default: 0, the latest)" in _flag_help(text, "--version")


def test_the_join_key_limit_is_named_with_its_default_and_range() -> None:
    """``AETHER_MAX_JOIN_KEY_BYTES`` has no flag, and the help named it nowhere (the README did): a user
    whose long keys were quarantined could not learn from ``--help`` what sets the limit."""
    shown = (
        f"${MAX_JOIN_KEY_BYTES_VARIABLE}: the longest string join key accepted, in bytes of UTF-8"
        f" (default: {DEFAULT_MAX_JOIN_KEY_BYTES}, 1 to {MAX_JOIN_KEY_BYTES_LIMIT})"
    )
    assert shown in _help()
    out = io.StringIO()  # the materializer's own entry point says the same
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    assert shown in " ".join(out.getvalue().split())
