"""Credentials the local stack (:mod:`control_plane.cli.local_stack`) hands its services: the
redis-server configuration that makes it take the password of ``AETHER_REDIS_URL``, and the token its data
plane sends the control plane."""

from __future__ import annotations

from collections.abc import Mapping

from clients.env_values import ConfigurationError
from clients.redis_address import RedisAddress, credentials_given_twice
from clients.uris import redact_uri

_CREDENTIAL_WORDS = {"username": "user name", "password": "password"}


def redis_auth_config(url: str) -> str:
    """redis-server configuration that makes it take the credentials in ``url`` ("" when it holds none).

    Without it the stack's Redis ran without a password while every client sent one: each PING failed
    with an authentication error, and ``dev up`` waited out ``--wait`` before calling Redis not ready.
    The credentials are read as the clients read them (:class:`RedisAddress`: the userinfo, else
    ``?username=`` / ``?password=``); reading only the userinfo left a query password out of the config
    and ``dev up`` blamed "another redis-server". ConfigurationError for a URL the clients cannot use, or
    one giving a credential twice with different values (which one was meant is the user's to say)."""
    try:
        address = RedisAddress.from_url(url)
        twice = credentials_given_twice(url)
    except ValueError as error:  # its message shows the URL without its password
        raise ConfigurationError(f"AETHER_REDIS_URL: {error}") from None
    if twice:
        name = twice[0]
        raise ConfigurationError(
            f"AETHER_REDIS_URL gives the {_CREDENTIAL_WORDS[name]} twice, with different "
            f"values, in USER:PASSWORD@ and in ?{name}= ({redact_uri(url)}); give it once"
        )
    password = address.password or ""
    if not password:  # redis-py sends no AUTH for an empty password either
        return ""
    # The default user's password: a URL without a user name logs in as that user.
    lines = [f"requirepass {_config_word(password)}"]
    user = address.username or ""
    if user and user != "default":
        lines.append(f"user {_config_word(user)} on {_config_word('>' + password)} ~* &* +@all")
    return "\n".join(lines) + "\n"


def _config_word(text: str) -> str:
    """``text`` as one double-quoted word of a redis.conf line, whatever it holds: redis.conf reads
    ``\\xHH`` in a quoted word as that byte, so quotes, backslashes, spaces and non-ASCII survive."""
    plain = range(0x20, 0x7F)
    escaped = "".join(chr(b) if b in plain and chr(b) not in '"\\' else f"\\x{b:02x}" for b in text.encode())
    return f'"{escaped}"'


def data_plane_token(environ: Mapping[str, str]) -> dict[str, str]:
    """The token the stack's data plane sends its control plane, when auth is on and none is set for it.

    The data plane follows the registry over a watch stream; with AETHER_ADMIN_TOKEN set that stream
    needs a token, and without one the data plane served its last snapshot forever, logging
    UNAUTHENTICATED. The stack knows its control plane's tokens: the read-only one when there is one
    (the watch only reads), else the admin one."""
    if environ.get("AETHER_TOKEN") or environ.get("AETHER_TOKEN_FILE"):
        return {}
    for name in ("AETHER_READONLY_TOKEN", "AETHER_ADMIN_TOKEN"):
        if environ.get(name):
            return {"AETHER_TOKEN": environ[name]}
        if environ.get(f"{name}_FILE"):
            return {"AETHER_TOKEN_FILE": environ[f"{name}_FILE"]}
    return {}
