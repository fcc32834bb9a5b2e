"""Every `aetherctl` command the README and docs/architecture.md show in a shell block parses as written.

A newcomer copies these lines; a flag renamed or removed in the code, or a command misspelt in the docs,
is a usage error on their first try. The lines are parsed by the real parser (nothing is run), with the
README's placeholders (JOB_ID) taken as the values they stand for."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from control_plane.cli.main import build_parser
from control_plane.cli.settings import CliSettings

REPO_ROOT = Path(__file__).resolve().parents[3]
DOCUMENTS = ("README.md", "docs/architecture.md")


def shell_commands(markdown: str) -> list[str]:
    """The commands of the markdown's ```bash blocks: continuation lines joined, comments dropped, and
    ``a && b`` taken as two commands."""
    commands: list[str] = []
    for block in re.findall(r"^```(?:bash|sh)\n(.*?)^```", markdown, flags=re.MULTILINE | re.DOTALL):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            code = line.split(" #", 1)[0].strip()
            if code.startswith("#"):
                continue
            commands.extend(part.strip() for part in code.split("&&") if part.strip())
    return commands


def aetherctl_commands() -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for document in DOCUMENTS:
        for command in shell_commands((REPO_ROOT / document).read_text(encoding="utf-8")):
            words = shlex.split(command)
            if words and Path(words[0]).name == "aetherctl":
                found.append((document, command))
    return found


def test_the_readme_shows_aetherctl_commands() -> None:
    # The extraction itself: the README's "Using it" section holds some twenty of them.
    assert len([c for d, c in aetherctl_commands() if d == "README.md"]) >= 20


@pytest.mark.parametrize(("document", "command"), aetherctl_commands())
def test_documented_command_parses(document: str, command: str) -> None:
    parser = build_parser(CliSettings.from_env({}))
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            parser.parse_args(shlex.split(command)[1:])
    except SystemExit as exit:
        pytest.fail(f"{document}: `{command}` is refused (exit {exit.code}): {errors.getvalue().strip()}")
