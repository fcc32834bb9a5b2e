"""A quarantine replay's publish to a streaming view's Redis stream, idempotent per record.

A replay that publishes records may not learn whether the publish happened: Redis can run it and the
answer be lost, or come after the control plane's socket timeout (``TimeoutError``, ``ConnectionError``).
The replay then fails and hands its records back to the quarantine, and the operator's retry published
them again under new stream ids, which the materializer applied as new events (a window count of two,
two offline history rows).

So each record's XADD goes with a marker, ``aether:replay:published:<stream>:<record id>:<created>``
(the record's creation time guards a reset database's reused ids), holding the event's fields as JSON:
one Lua script adds the event and sets its marker, or finds the marker and adds nothing, for every
record of the group at once and atomically (a script runs whole; with MULTI/EXEC the XADD could not
depend on the marker). A retry therefore publishes only what is not in the stream yet, and the records
an earlier, unanswered publish put there count as published (``replayed``). Stream ids cannot carry
the idempotence instead: they must grow, and a retry's are later than the first attempt's.

The marker outlives any retry an operator plausibly makes (:data:`MARKER_TTL_S`); a replay retried
after it expired publishes again. A record whose marker holds other fields than the retry's (the retry
carries another correction) is not published again: the stream holds the first one, which the record is
committed with, and the caller reports it (:class:`PublishedBefore`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import redis

#: How long a record's marker stays: a retry of a replay whose answer was lost later than this publishes
#: the record again. Only a record whose publish went unanswered needs it; the others are ``replayed``
#: and never claimed again.
MARKER_TTL_S = 7 * 24 * 3600

# KEYS: the stream, then each record's marker. ARGV: the marker TTL, then per record its fields as JSON
# (the marker's value), their count and the fields and values. Answers, per record, "" when it added the
# event now, else the marker's value (an earlier publish added it).
_PUBLISH = """
local at = 2
local answers = {}
for i = 2, #KEYS do
  local fields = ARGV[at]
  local count = tonumber(ARGV[at + 1])
  local before = redis.call('GET', KEYS[i])
  if before then
    answers[i - 1] = before
  else
    redis.call('XADD', KEYS[1], '*', unpack(ARGV, at + 2, at + 1 + 2 * count))
    redis.call('SET', KEYS[i], fields, 'EX', ARGV[1])
    answers[i - 1] = ''
  end
  at = at + 2 + 2 * count
end
return answers
"""


@dataclass(frozen=True)
class PublishedBefore:
    """An event an earlier replay of the record published with other fields (another correction)."""

    payload: str  # those fields as a JSON object, which the stream holds


#: Publishes events (with their records' identities, ``marker_key``'s) to a stream; per event, None once
#: the stream holds it, a ``PublishedBefore`` when it holds another version of it, or why it does not.
Publish = Callable[[list[dict[str, str]], list[str]], list[str | PublishedBefore | None]]


def record_identity(record_id: int, created_at_us: int) -> str:
    return f"{record_id}:{created_at_us}"


def marker_key(stream: str, identity: str) -> str:
    return f"aether:replay:published:{stream}:{identity}"


def redis_publisher(client: redis.Redis, stream: str) -> Publish:
    """Publishes to ``stream`` at most once per record (see the module's docstring)."""

    def publish(events: list[dict[str, str]], identities: list[str]) -> list[str | PublishedBefore | None]:
        args: list[Any] = [MARKER_TTL_S]
        for event in events:
            args += [_fields_json(event), len(event)]
            args += [part for item in event.items() for part in item]
        keys = [stream, *(marker_key(stream, identity) for identity in identities)]
        answers = cast(list[bytes], client.eval(_PUBLISH, len(keys), *keys, *args))
        results: list[str | PublishedBefore | None] = []
        for event, answer in zip(events, answers, strict=True):
            before = answer.decode()
            same = not before or json.loads(before) == event  # the retry of a request: the same fields
            results.append(None if same else PublishedBefore(before))
        return results

    return publish


def _fields_json(event: dict[str, str]) -> str:
    return json.dumps(event, sort_keys=True, separators=(",", ":"))
