"""A quarantine replay's publish to a streaming view's Redis stream, idempotent per record (or to the topic
of a ``kafka://`` source: :func:`kafka_publisher`).

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

A marker is needed only while its record may still be published: from the publish until the replay's
SQL commit marks the record ``replayed`` (never claimed again), and a little after, for a replay that
stalled past the claim's lease before its publish while another took its records over and committed them
(its late publish must still find the marker; its commit is then refused, ``claims.ClaimLost``). So once
that commit is done the replay cuts the markers of the records it committed down to a short grace
(:meth:`RedisPublisher.forget`, twice the claim lease: 10 minutes), best effort: a failure is logged and
never fails the replay. A replay whose answer was lost keeps its markers until a retry commits the
records, however late the retry comes, and Redis holds markers only for records not yet committed or
committed in the last grace, not one per record replayed in the TTL. The quarantine has no purge path
for these records (a discarded record keeps its row and is never replayed); a record discarded after a
lost answer keeps its marker until the TTL. The TTL (:data:`MARKER_TTL_S`, 90 days) is only a backstop
for a control plane killed between the commit and the cut (or a cut that failed): before, every marker
lived 7 days, a successful replay's too, and a retry of a lost answer made after 7 days published the
record again. Now only a retry more than 90 days late does, or a replay stalled before its publish for
longer than the lease plus the grace while another committed its records.

A record whose marker holds other fields than the retry's (the retry carries another correction) is not
published again: the stream holds the first one, which the record is committed with, and the caller
reports it (:class:`PublishedBefore`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import redis

from clients.aether.v1 import feature_registry_pb2 as pb
from clients.errors import FailedPrecondition
from control_plane.ingestion.claims import CLAIM_LEASE_S
from control_plane.ingestion.records import as_text

_log = logging.getLogger("aether.ingestion.replay")

#: How long a record's marker stays at most: the replay that commits the record cuts it to a short grace
#: (:meth:`RedisPublisher.forget`); this only bounds a marker whose cut never ran (the control plane
#: killed between the commit and the delete, Redis unreachable then). A retry of a replay whose answer
#: was lost publishes the record again only when it comes later than this.
MARKER_TTL_S = 90 * 24 * 3600
#: How long a marker stays once its record is committed ``replayed``: twice the claim lease (5 minutes),
#: so a replay that stalled past the lease before its publish, while another took its records over and
#: committed them, still finds it (the service passes twice its own ``claim_lease_s``).
GRACE_S = int(2 * CLAIM_LEASE_S)

# KEYS: the stream, then each record's marker. ARGV: the marker TTL, then per record its fields as JSON
# (the marker's value), their count and the fields and values. Answers, per record, "" when it added the
# event now, else the marker's value (an earlier publish added it).
PUBLISH_SCRIPT = """
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


#: Publishes records (their payloads: JSON values, with their records' identities, ``marker_key``'s) to a
#: stream, each in the stream's form (a Redis stream's text fields, ``stream_fields``; a Kafka record's
#: JSON object, its values as they came); per record, None once the stream holds it, a
#: ``PublishedBefore`` when it holds another version of it, or why it does not.
Publish = Callable[[list[dict[str, Any]], list[str]], list[str | PublishedBefore | None]]


def stream_fields(payload: Mapping[str, Any]) -> dict[str, str]:
    """A record as Redis stream fields: values as text, absent ones left out (as a stream message
    carries). A Redis stream's fields are text, and its quarantined records hold text: unchanged, they
    are published as they were read."""
    return {k: v for k, v in ((k, as_text(v)) for k, v in payload.items()) if v is not None}


def record_identity(record_id: int, created_at_us: int) -> str:
    return f"{record_id}:{created_at_us}"


def marker_key(stream: str, identity: str) -> str:
    return f"aether:replay:published:{stream}:{identity}"


class RedisPublisher:
    """Publishes to ``stream`` at most once per record (see the module's docstring); a ``Publish``.
    ``marker_ttl_s``: the markers' backstop TTL (:data:`MARKER_TTL_S`); ``grace_s``: how long a marker
    stays once its record is committed (:data:`GRACE_S`, the service's twice its claim lease)."""

    def __init__(
        self, client: redis.Redis, stream: str, marker_ttl_s: int = MARKER_TTL_S, grace_s: int = GRACE_S
    ) -> None:
        self._client = client
        # Run by EVALSHA (SCRIPT LOAD when Redis does not know it), never EVAL: the streaming side needs
        # only those two of a Redis user (see streaming/redis_access.py), and an ACL user granted them and
        # not EVAL had every replay to a streaming view refused NOPERM.
        self._publish = client.register_script(PUBLISH_SCRIPT)
        self.stream = stream
        self._marker_ttl_s = marker_ttl_s
        self._grace_s = max(1, grace_s)

    def __call__(
        self, payloads: list[dict[str, Any]], identities: list[str]
    ) -> list[str | PublishedBefore | None]:
        events = [stream_fields(payload) for payload in payloads]
        args: list[Any] = [self._marker_ttl_s]
        for event in events:
            args += [_fields_json(event), len(event)]
            args += [part for item in event.items() for part in item]
        keys = [self.stream, *(marker_key(self.stream, identity) for identity in identities)]
        answers = cast(list[bytes], self._publish(keys=keys, args=args))
        results: list[str | PublishedBefore | None] = []
        for event, answer in zip(events, answers, strict=True):
            before = answer.decode()
            same = not before or json.loads(before) == event  # the retry of a request: the same fields
            results.append(None if same else PublishedBefore(before))
        return results

    def forget(self, identities: list[str]) -> bool:
        """Cuts the markers of records whose replay committed them (``replayed``: never claimed again) down
        to the grace, best effort: a failure is logged (the TTL removes them later) and never raised.
        Whether it was done."""
        if not identities:
            return True
        try:
            pipeline = self._client.pipeline(transaction=False)
            for identity in identities:
                pipeline.expire(marker_key(self.stream, identity), self._grace_s)
            pipeline.execute()
        except redis.RedisError:
            _log.exception(
                "could not cut the replay publish markers of committed records %s of stream %r to %d s;"
                " they expire after %d s",
                identities, self.stream, self._grace_s, self._marker_ttl_s,
            )  # fmt: skip
            return False
        return True


def redis_publisher(
    client: redis.Redis, stream: str, marker_ttl_s: int = MARKER_TTL_S, grace_s: int = GRACE_S
) -> RedisPublisher:
    """Publishes to ``stream`` at most once per record (see the module's docstring)."""
    return RedisPublisher(client, stream, marker_ttl_s, grace_s)


def _fields_json(event: dict[str, str]) -> str:
    return json.dumps(event, sort_keys=True, separators=(",", ":"))


def kafka_publisher(view: pb.FeatureView, url: str, options: Mapping[str, str]) -> Publish:
    """Publishes to the topic of a ``kafka://`` URL with the process's librdkafka settings (the ones
    its materializer consumes with: a secured cluster's security.protocol, sasl.*, ssl.*), each record
    a JSON object of its payload's values as they are (a number stays a number: as text, a record
    quarantined for a float join key was accepted when replayed unchanged)."""
    try:
        from control_plane.ingestion.streaming.kafka_publish import parse_kafka_url, produce
    except ImportError as exc:  # confluent-kafka is the optional ``kafka`` extra
        raise FailedPrecondition(
            f"streaming view {view.spec.name!r} reads from Kafka ({url}), but this control plane has no"
            " Kafka client (install the 'kafka' extra) to publish replayed records; they stay quarantined"
        ) from exc
    try:
        bootstrap, topic = parse_kafka_url(url)
    except ValueError as exc:
        raise FailedPrecondition(f"streaming view {view.spec.name!r}: {exc}") from exc
    return lambda events, _identities: list(produce(bootstrap, topic, events, options))
