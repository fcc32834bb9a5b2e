"""``aetherctl`` given bad input: one clear line on stderr and exit status 2 (usage) or 1, never a
traceback, and no work thrown away. The commands run in-process through ``main``, as a user's shell would
run them; those refused before any call point at an address where nothing listens, so a command that
called a server would fail with UNAVAILABLE instead of the expected message."""

from __future__ import annotations

from pathlib import Path

import pytest

from control_plane.cli.main import main
from tests.support.redis_server import free_port

Capture = pytest.CaptureFixture[str]


def aetherctl(capsys: Capture, address: str, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()  # drop anything printed before
    code = main(["--control-plane", address, "--timeout", "5", *args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_refused(result: tuple[int, str, str], code: int, message: str) -> None:
    status, _, err = result
    assert (status, "Traceback" in err) == (code, False), err
    assert err.count("\n") == 1 and message in err, err


@pytest.fixture
def nowhere() -> str:
    """An address where nothing listens."""
    return f"127.0.0.1:{free_port()}"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["retrain", "configure", "churn", "--cooldown", "1w"], "--cooldown: invalid duration '1w'"),
        (["retrain", "configure", "churn", "--shadow", "soon"], "--shadow: invalid duration 'soon'"),
        (["retrain", "configure", "churn", "--cooldown", "1.5.h"], "--cooldown: invalid duration '1.5.h'"),
        (["retrain", "configure", "churn", "--cooldown", "99999999999999d"], "--cooldown: duration"),
        (["drift", "report", "churn", "--since", "99999999999d"], "--since: '99999999999d' lies before 1970"),
        (["performance", "churn", "--since", "99999999999d"], "--since: '99999999999d' lies before 1970"),
        (["performance", "churn", "--since", "tuesday"], "--since: invalid time 'tuesday'"),
        (["audit", "list", "--since", "99999999999999d"], "--since: '99999999999999d' lies before 1970"),
        (["audit", "list", "--until", "9" * 23 + "d"], f"--until: '{'9' * 23}d' lies before 1970"),
    ],
)
def test_malformed_and_out_of_range_durations_name_their_flag(
    capsys: Capture, nowhere: str, args: list[str], message: str
) -> None:
    """Every duration flag goes through one parser (control_plane/cli/durations.py): `1w` used to end in
    a ValueError traceback, `1.5.h` in a message about --since, a huge --since in protobuf's "Value out
    of range" traceback."""
    assert_refused(aetherctl(capsys, nowhere, *args), 2, f"aetherctl: error: {message}")


def test_an_unforeseen_bad_path_is_one_line_naming_the_command_and_the_path(
    capsys: Capture, nowhere: str, tmp_path: Path
) -> None:
    """main's safety net for OSError: `fleet status --endpoints FOLDER` used to end in IsADirectoryError."""
    result = aetherctl(capsys, nowhere, "fleet", "status", "--endpoints", str(tmp_path))
    assert_refused(result, 1, f"error: fleet status: {tmp_path}: Is a directory")
