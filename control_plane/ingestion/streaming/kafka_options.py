"""The librdkafka settings of every Kafka client Aether makes: the stream materializer's consumer and the
quarantine replay's producer. A secured cluster needs the same ``security.protocol``, ``sasl.*`` and
``ssl.*`` settings on both, so both take them from the same place:

* ``AETHER_KAFKA_OPTIONS_FILE``: a properties file (``KEY=VALUE`` per line, ``#`` comments, the form
  Kafka's own tools read), loaded into ``ControlPlaneSettings.kafka_options`` by every process that
  reads its settings: a file, so that a SASL password stays out of command lines and the environment;
* ``--kafka-option KEY=VALUE`` (repeatable) on ``aetherctl materializer run`` and on
  ``python -m control_plane``, which overrides the file key by key.

This module imports no Kafka client: the settings and the command lines read it without the ``kafka``
extra installed.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping
from pathlib import Path

FILE_VARIABLE = "AETHER_KAFKA_OPTIONS_FILE"


def parse_option(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` → (key, value); the value may be empty or hold ``=`` (a SASL password can)."""
    key, equals, value = text.partition("=")
    key = key.strip()
    if not key or not equals:
        raise ValueError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _flag_value(text: str) -> tuple[str, str]:
    try:
        return parse_option(text)
    except ValueError as exc:  # argparse reports an ArgumentTypeError as a usage error, with the flag
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_flag(parser: argparse.ArgumentParser) -> None:
    """``--kafka-option KEY=VALUE`` into ``args.kafka_option`` (a list of pairs)."""
    parser.add_argument(
        "--kafka-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        type=_flag_value,
        help=f"a librdkafka setting for kafka:// streams (repeatable; overrides ${FILE_VARIABLE}),"
        " e.g. security.protocol=SASL_SSL",
    )


def read_file(path: str | Path) -> dict[str, str]:
    """The settings of a properties file: blank lines and ``#`` or ``!`` comments skipped, the rest
    ``KEY=VALUE`` with whitespace around the key and the value dropped."""
    options: dict[str, str] = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith(("#", "!")):
            continue
        try:
            key, value = parse_option(text)
        except ValueError as exc:
            raise ValueError(f"{path}:{number}: {exc}") from None
        options[key] = value.strip()
    return options


def from_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The settings of the file ``AETHER_KAFKA_OPTIONS_FILE`` names; none when it is unset. A file that
    cannot be read is an error, not an empty set: a replay or a consumer without the cluster's security
    settings would fail later and further from the cause."""
    path = environ.get(FILE_VARIABLE)
    if not path:
        return {}
    try:
        return read_file(path)
    except OSError as exc:
        raise ValueError(f"cannot read {FILE_VARIABLE} {path}: {exc}") from exc


def merged(base: Mapping[str, str], flags: Iterable[tuple[str, str]]) -> dict[str, str]:
    """``base`` (the settings' options) with each flag's value in place of the setting of its key."""
    return {**base, **dict(flags)}
