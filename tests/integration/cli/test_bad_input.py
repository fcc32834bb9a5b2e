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


def test_an_unforeseen_bad_path_is_one_line_naming_the_command_and_the_path(
    capsys: Capture, nowhere: str, tmp_path: Path
) -> None:
    """main's safety net for OSError: `fleet status --endpoints FOLDER` used to end in IsADirectoryError."""
    result = aetherctl(capsys, nowhere, "fleet", "status", "--endpoints", str(tmp_path))
    assert_refused(result, 1, f"error: fleet status: {tmp_path}: Is a directory")
