"""Typed ``AETHER_*`` settings from the environment, one rule for every process: an empty variable means
unset (a template that renders a missing value as ``""`` gets the default, not a crash), a value is
checked for its type and range, and a wrong one is a :class:`ConfigurationError` naming the variable,
what it expects and what it got (``AETHER_MAX_ROWS_PER_REQUEST: expected a whole number >= 1, got
'-5'``), which the processes' ``__main__`` print as one line and exit with status 2."""

from __future__ import annotations

import math
from collections.abc import Mapping

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class ConfigurationError(ValueError):
    """A setting that cannot be used; the message names the variable (or file) and says why."""


def env_text(env: Mapping[str, str], name: str, default: str) -> str:
    """The variable's value, ``default`` when it is unset or empty."""
    return env.get(name) or default


def env_int(
    env: Mapping[str, str], name: str, default: int, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    raw = env.get(name) or None
    if raw is None:
        return default
    expected = "a whole number" + _bounds(minimum, maximum)
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigurationError(f"{name}: expected {expected}, got {raw!r}") from None
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ConfigurationError(f"{name}: expected {expected}, got {raw!r}")
    return value


def env_float(
    env: Mapping[str, str],
    name: str,
    default: float,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
) -> float:
    """A finite number; ``minimum``/``maximum`` are inclusive bounds, ``above`` an exclusive one."""
    raw = env.get(name) or None
    if raw is None:
        return default
    expected = "a number" + (f" > {above:g}" if above is not None else "") + _bounds(minimum, maximum)
    try:
        value = float(raw.strip())
    except ValueError:
        raise ConfigurationError(f"{name}: expected {expected}, got {raw!r}") from None
    if (
        not math.isfinite(value)
        or (above is not None and value <= above)
        or (minimum is not None and value < minimum)
        or (maximum is not None and value > maximum)
    ):
        raise ConfigurationError(f"{name}: expected {expected}, got {raw!r}")
    return value


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name) or None
    if raw is None:
        return default
    word = raw.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ConfigurationError(f"{name}: expected 1/true/yes/on or 0/false/no/off, got {raw!r}")


def listen_address(text: str, name: str) -> str:
    """``text`` as a ``HOST:PORT`` to listen on (port 0 picks a free one; IPv6 hosts in brackets;
    ``:PORT`` is every interface, ``0.0.0.0:PORT``), "" for empty; a ConfigurationError naming ``name`` (a
    variable or a flag) otherwise. Checked with the settings: a bad one was taken as it was and failed only
    when the server bound it, as a traceback, after the process had started other things (a fleet's
    replica so failing was never seen as a refusal)."""
    value = text.strip()
    if not value:
        return ""
    host, colon, port = value.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]") and len(host) > 2
    # An IPv6 host only in brackets: "a:b:9090" would otherwise pass, its host never resolvable.
    well_formed = bracketed or not any(c in host for c in ":[]")
    if not (colon and well_formed and port.isdigit() and int(port) <= 65535):
        raise ConfigurationError(
            f"{name}: expected HOST:PORT with a port from 0 to 65535 (e.g. 127.0.0.1:9090), got {text!r}"
        )
    # ":PORT" listens on every interface, as it did before addresses were checked.
    return value if host else f"0.0.0.0:{port}"


def env_listen_address(env: Mapping[str, str], name: str, default: str) -> str:
    """The ``HOST:PORT`` in the variable (:func:`listen_address`), ``default`` when it is unset or empty."""
    raw = env.get(name) or None
    return default if raw is None else listen_address(raw, name)


def _bounds(minimum: float | None, maximum: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f" from {minimum:g} to {maximum:g}"
    if minimum is not None:
        return f" >= {minimum:g}"
    if maximum is not None:
        return f" <= {maximum:g}"
    return ""


def sendable_token(raw: str, name: str) -> str:
    """A bearer token as read from ``name`` (a variable, or a file a variable names), with a leading UTF-8
    byte order mark (Windows editors save one, and ``str.strip`` keeps it) and surrounding whitespace
    dropped; "" when nothing is left. A token a gRPC header cannot carry (anything but printable ASCII on
    one line) is a :class:`ConfigurationError` naming ``name``: gRPC refuses it only when a call is made,
    every call, as INTERNAL "Invalid metadata", and a server configured with one could never be called.
    The message says what and where, never the token itself."""
    token = raw.removeprefix("\ufeff").strip()
    for position, char in enumerate(token, start=1):
        if " " <= char <= "~":
            continue
        if char in "\r\n":
            what = "a line break (a token is one line)"
        elif char.isascii():
            what = "a control character"
        else:
            what = "a non-ASCII character"
        raise ConfigurationError(
            f"{name}: the token has {what} at character {position}; "
            "a token must be printable ASCII (space to '~') on one line"
        )
    return token
