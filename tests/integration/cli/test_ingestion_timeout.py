"""``--timeout`` of ``aetherctl quarantine`` and ``aetherctl materialize``: a value the user gives is the one
used, before or after the command; without one, these commands wait as long as the ingestion client's own
default (300 s), since a materialize or a replay of a large batch runs for minutes. Any value below 300 s
was raised to 300 s without a word: ``--timeout 30`` in a script still waited five minutes on a stuck
control plane."""

from __future__ import annotations

import socket
import time

import pytest

from clients.sdk.ingestion import IngestionClient
from control_plane.cli import ingestion
from control_plane.cli.main import build_parser, main
from control_plane.cli.settings import CliSettings
from tests.integration.cli.in_process import Capture

pytestmark = pytest.mark.integration

#: The timeout given: a call to a control plane that never answers ends after it, not after 300 s.
GIVEN_S = 0.3

COMMANDS = [
    ["quarantine", "list"],
    ["quarantine", "show", "1"],
    ["materialize", "stats", "--start", "2024-01-01", "--end", "2024-01-02"],
]


def aetherctl_plain(capsys: Capture, *args: str) -> tuple[int, str, str]:
    """``aetherctl ARGS`` as typed, without the in-process helper's own ``--timeout 5``."""
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("command", COMMANDS, ids=lambda command: " ".join(command[:2]))
@pytest.mark.parametrize("where", ["before the command", "after the command"])
def test_a_timeout_below_300_s_is_the_one_the_call_gets(
    capsys: Capture, command: list[str], where: str
) -> None:
    """Against a control plane that never answers (a socket the kernel accepts connections on, and
    nothing reads), so the outcome does not hang on how fast a real one answers: a microsecond's timeout
    against a real control plane was sometimes answered (NOT_FOUND) before the deadline fired."""
    with socket.socket() as black_hole:
        black_hole.bind(("127.0.0.1", 0))
        black_hole.listen()
        flag = ["--timeout", str(GIVEN_S)]
        argv = ["--control-plane", f"127.0.0.1:{black_hole.getsockname()[1]}"]
        argv += [*flag, *command] if where == "before the command" else [*command, *flag]
        started = time.monotonic()
        code, out, err = aetherctl_plain(capsys, *argv)
        waited = time.monotonic() - started
    assert (code, out) == (1, ""), err
    assert err.startswith("error: DEADLINE_EXCEEDED"), err
    assert waited < 60  # the raised timeout was 300 s


def test_without_a_timeout_the_ingestion_client_waits_its_own_default() -> None:
    """The global default (10 s) suits the other commands' calls, not a materialize of a large source."""
    parser = build_parser(CliSettings.from_env({}))
    for argv, expected in [
        (["quarantine", "list"], IngestionClient.DEFAULT_TIMEOUT_S),
        (["--timeout", "30", "quarantine", "list"], 30.0),
        (["quarantine", "list", "--timeout", "30"], 30.0),
        (["--timeout", "600", "materialize", "v", "--start", "2024-01-01", "--end", "2024-01-02"], 600.0),
        (["materialize", "v", "--start", "2024-01-01", "--end", "2024-01-02", "--timeout", "2.5"], 2.5),
        (["--timeout", "400", "quarantine", "list", "--timeout", "3"], 3.0),  # the command's own wins
    ]:
        with ingestion._client(parser.parse_args(argv)) as client:
            assert client.timeout == expected, argv


@pytest.mark.parametrize("value", ["0", "-5", "nan"])
def test_a_timeout_of_zero_or_less_is_a_usage_error(capsys: Capture, value: str) -> None:
    code, out, err = aetherctl_plain(capsys, "quarantine", "list", f"--timeout={value}")
    assert (code, out) == (2, "")
    expected = f"expected a number of seconds above 0 and at most 31536000 (one year), got {value!r}"
    assert f"argument --timeout: {expected}" in err, err
