"""``--timeout``: the seconds each call may take, and whether the user chose them.

The global default (``CliSettings.timeout_s``, 10 s) suits calls that answer at once. A command whose calls
run for minutes by design (``materialize`` validates and writes a whole batch source; ``quarantine replay``
re-validates and ingests its records) waits its client's own default instead when no ``--timeout`` is
given (:func:`given_timeout` is None), but a value the user gives, before the command or after it, is
the one its calls get. Telling "given" from "the default" needs the flag's action: a given 10 looks
like the default 10, and a subcommand's ``set_defaults`` would overwrite a value given before it."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

_GIVEN = "timeout_given"


class TimeoutFlag(argparse.Action):
    """Stores ``--timeout`` as a ``store`` action does, and notes that the user gave it."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, values)
        setattr(namespace, _GIVEN, True)


def given_timeout(args: argparse.Namespace) -> float | None:
    """The ``--timeout`` the user gave (its last, where given twice), or None when none was given."""
    if getattr(args, _GIVEN, False):
        timeout: float = args.timeout
        return timeout
    return None
