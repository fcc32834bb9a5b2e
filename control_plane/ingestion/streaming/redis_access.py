"""The Redis permissions a stream materializer needs beyond reading and writing its keys, checked at start.

Its Lua scripts (the commit's online writes and trim point, ``commit.py``; the consumer group's creation,
``redis_source.CREATE_GROUP``) run by ``EVALSHA`` after ``SCRIPT LOAD``, never by ``EVAL``: an ACL user
the earlier releases accepted (``+@all -eval``, say) keeps working. A user lacking either command is
refused at start, in one line naming them, rather than in a traceback at the first batch or group
created (or, for a materializer that had not yet met them, never).
"""

from __future__ import annotations

import hashlib

import redis

from clients.env_values import ConfigurationError

#: The scripting commands the materializer runs, as Redis names them in an ACL (``+evalsha``,
#: ``+script|load``; ``+@scripting`` grants both).
SCRIPTING = ("EVALSHA", "SCRIPT LOAD")
# A script that touches nothing: loading it and running it by its hash asks Redis only whether the user
# may run the commands (an ACL refuses a command before it runs).
_PROBE = "return 0"
_PROBE_SHA = hashlib.sha1(_PROBE.encode()).hexdigest()


class ScriptingRefused(ConfigurationError):
    """The Redis user may not run the scripting commands the materializer needs."""


def check_scripting(client: redis.Redis) -> None:
    """Raises ScriptingRefused, naming the commands, when ``client``'s user may not run ``SCRIPTING``."""
    missing = []
    try:
        client.script_load(_PROBE)
    except redis.exceptions.NoPermissionError:
        missing.append("SCRIPT LOAD")
    try:
        client.evalsha(_PROBE_SHA, 0)
    except redis.exceptions.NoPermissionError:
        missing.append("EVALSHA")
    except redis.exceptions.NoScriptError:
        pass  # allowed to run it; not loaded, as SCRIPT LOAD was refused (or the cache was flushed since)
    if missing:
        user = client.connection_pool.connection_kwargs.get("username") or "default"
        names = ", ".join(sorted(missing))
        raise ScriptingRefused(
            f"AETHER_REDIS_URL: Redis user {user!r} may not run {names} (the materializer's scripts run by"
            " EVALSHA after SCRIPT LOAD; grant +evalsha +script|load, or +@scripting)"
        )
