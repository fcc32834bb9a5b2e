"""What the data plane's Redis client raises, and how an error reply of Redis is sorted into it: callers
answer "Redis cannot serve now" (retry), "the URL does not fit this Redis" (a setting to fix) and any other
error reply differently (:mod:`data_plane.redis_client`)."""

from __future__ import annotations


class RedisUnavailable(Exception):
    """Redis could not be reached, did not answer in time, or cannot serve now (:class:`RedisBusy`)."""


class RedisBusy(RedisUnavailable):
    """An error reply saying Redis cannot serve now (:data:`BUSY_REPLIES`): worth a retry."""


class RedisCommandError(Exception):
    """Redis answered with an error reply (``-ERR ...``) that is none of the kinds below."""


class RedisMisconfigured(Exception):
    """The Redis URL does not fit the Redis it names: credentials missing or wrong, a permission missing,
    a database that does not exist, or a Redis Cluster node. The message names the URL (no password)."""


class RedisNoPermission(RedisMisconfigured):
    """NOPERM: the URL's user may not run a command (a least-privilege user may lack one we can skip)."""


#: First words of error replies that mean "not now": loading the dataset after a restart, a script or
#: module command running past its time limit, a replica whose primary is down, a cluster resharding or
#: down, and a connection left on a primary that failover turned into a replica (the next dial may reach
#: the new primary).
BUSY_REPLIES = frozenset({"LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "READONLY"})
#: First words of error replies about the credentials or the permissions of the URL's user.
ACCESS_REPLIES = frozenset({"NOAUTH", "WRONGPASS", "NOPERM"})
#: Where the data plane is told which Redis to use.
URL_SETTING = "AETHER_REDIS_URL or --redis-url"


def reply_error(text: str, url: str) -> Exception:
    """The exception for the error reply ``text`` of the Redis at ``url`` (redacted)."""
    word = text.partition(" ")[0]
    if word in BUSY_REPLIES:
        return RedisBusy(f"{text} ({url})")
    if word == "NOPERM":
        return RedisNoPermission(
            f"the online store at {url} refused a command: {text}; give the Redis user of {URL_SETTING} "
            "that permission (ACL SETUSER) or use a user that has it"
        )
    if word in ACCESS_REPLIES:
        return RedisMisconfigured(
            f"the online store at {url} refused the data plane: {text}; set the password in "
            f"{URL_SETTING} (redis://:PASSWORD@HOST:PORT/DB, or redis://USER:PASSWORD@... for an ACL user)"
        )
    return RedisCommandError(text)
