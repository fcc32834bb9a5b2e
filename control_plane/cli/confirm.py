"""Asking before a command destroys something (``features delete``, ``models delete``, ``models alias
--delete``, ``deploy delete``, ``quarantine discard``): each goes on only with ``--yes``, or with ``y``
typed at the terminal.

Where stdin is not a terminal (a script, a pipe, CI) there is nobody to ask, so without ``--yes`` the
command refuses as a usage error before any call: a script that forgot ``--yes`` changes nothing.

The question and the answer-was-no line go to stderr: stdout carries the command's result alone, which
``--json`` makes a document for a script (``input()`` wrote its prompt to stdout when stdout was a pipe,
and ``features delete --json | jq`` read the question before the JSON)."""

from __future__ import annotations

import argparse
import select
import sys

from control_plane.cli.errors import UsageError

_YES = ("y", "yes")


def add_yes_flag(parser: argparse.ArgumentParser) -> None:
    """``--yes``, the same flag and help on every destructive command."""
    parser.add_argument(
        "--yes",
        action="store_true",
        help="do not ask for confirmation (required where stdin is not a terminal)",
    )


def confirmed(action: str, *, yes: bool, details: str = "") -> bool:
    """True when the command may ``action`` ("delete deployment 'eta-prod'"): ``yes`` was given, or the
    user answered y at the terminal; False (said on stderr) when they answered anything else. Raises
    UsageError when there is no terminal to ask on. ``details`` ends the question (" and all its
    versions")."""
    if yes:
        return True
    if not _stdin_is_a_terminal():
        raise UsageError(
            f"refusing to {action} without --yes: stdin is not a terminal to ask on (pass --yes to confirm)"
        )
    # Ctrl-C: a no, said on a line of its own; main then says "interrupted". The question is written
    # inside the try: a Ctrl-C seen as it is written, before readline starts, is caught as well.
    try:
        sys.stderr.write(f"{action[:1].upper()}{action[1:]}{details}? [y/N] ")
        sys.stderr.flush()
        answer = _read_answer()  # "" at end of input (Ctrl-D): a no
    except KeyboardInterrupt:
        _declined(action, answered="")
        raise
    if answer.strip().lower() in _YES:
        return True
    _declined(action, answered=answer)
    return False


def _read_answer() -> str:
    """A line from stdin, where a Ctrl-C lands within a tenth of a second. By the time a command asks, its
    gRPC channel has threads, and the kernel may hand the SIGINT to one of them: Python's handler then
    only marks it, and the main thread, blocked in read(), went on waiting for Enter (seen: the command
    hung at its question after Ctrl-C, about one time in four under load). Waiting in short selects runs
    Python between them, where the marked signal raises KeyboardInterrupt."""
    while True:
        try:
            ready, _, _ = select.select([sys.stdin], [], [], 0.1)
        except (OSError, ValueError):  # no descriptor to wait on (a stdin replaced in process)
            break
        if ready:  # a whole line at a terminal (canonical mode), or the end of input
            break
    return sys.stdin.readline()


def _declined(action: str, answered: str) -> None:
    if not answered.endswith("\n"):
        sys.stderr.write("\n")  # the terminal's cursor is still after the question
    print(f"not confirmed: did not {action}; nothing was changed", file=sys.stderr)


def _stdin_is_a_terminal() -> bool:
    stdin = sys.stdin
    if stdin is None:  # started with its stdin closed
        return False
    try:
        return stdin.isatty()
    except ValueError:  # closed since
        return False
