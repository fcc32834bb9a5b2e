"""The control plane's Redis clients, built in one place with timeouts.

Every Redis client of the control plane (the server's RPCs, its background loops, the stream materializer)
is built here, with ``socket_connect_timeout`` and ``socket_timeout`` both set to one setting,
``ControlPlaneSettings.redis_timeout_s`` (``AETHER_CONTROL_PLANE_REDIS_TIMEOUT_S``, ``--redis-timeout-s``).
Built with the URL alone, a client waited for ever on a Redis that accepts connections but never answers
(a frozen process, a network partition that sends no RST): an RPC touching Redis never answered, a
background loop (canary controller, drift monitor, online cleanup, outbox drain) stopped for good, and the
control plane's shutdown waited for it. With the timeout, such a wait ends in redis-py's ``TimeoutError``,
which an RPC answers UNAVAILABLE naming Redis (:mod:`clients.redis_errors`) and a loop retries at its next
pass.

The timeout bounds each wait for a reply, so a command that makes Redis wait on purpose needs a longer one:
an ``XREADGROUP``/``XREAD``/``BLPOP`` with ``BLOCK`` ms answers only after up to that long on an idle
stream, and would time out spuriously under a shorter socket timeout. :func:`blocking_timeout` is the
socket timeout for such a command (the stream materializer's reads: ``RedisStreamSource.read``). The
monitors' reads of the prediction log do not block (no ``BLOCK``), and no other blocking command is used.

The default is 5 s, not the data plane's 0.5 s (``AETHER_REDIS_TIMEOUT_S``, a latency bound on its GETs):
the control plane sends long pipelines and transactions (a batch run's online write, a materializer's
commit of thousands of events), whose replies may take longer than a single GET's without anything
being wrong, and a spurious failure there costs a retried run where waiting costs little.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio

#: The default of ``ControlPlaneSettings.redis_timeout_s``.
DEFAULT_REDIS_TIMEOUT_S = 5.0
#: The most it may be (one year, as every seconds flag of the CLI): redis-py adds it to the clock, and a
#: value such as 1e300 failed every blocking call with OverflowError (not a Redis error: INTERNAL).
MAX_REDIS_TIMEOUT_S = 365 * 24 * 3600.0


def timeout_options(timeout_s: float) -> dict[str, Any]:
    """The keyword arguments that bound a client's connects and replies by ``timeout_s``."""
    return {"socket_connect_timeout": timeout_s, "socket_timeout": timeout_s}


def sync_client(url: str, timeout_s: float) -> redis.Redis:
    """A blocking client of ``url`` (run its commands off the event loop: ``asyncio.to_thread``)."""
    return redis.Redis.from_url(url, **timeout_options(timeout_s))


def async_client(url: str, timeout_s: float) -> redis.asyncio.Redis:
    """An asyncio client of ``url``."""
    return redis.asyncio.Redis.from_url(url, **timeout_options(timeout_s))


def blocking_timeout(timeout_s: float | None, block_ms: int) -> float | None:
    """The socket timeout for a command that blocks up to ``block_ms`` (``XREADGROUP ... BLOCK``) on a
    client whose timeout is ``timeout_s``: the block time plus the timeout, so that an idle stream answers
    (empty) before the socket gives up, and a Redis that stopped answering is noticed that much later.
    None (no timeout) stays None."""
    return None if timeout_s is None else timeout_s + block_ms / 1000
