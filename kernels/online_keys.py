"""Redis key layout of the online store.

One key per (entity, feature view, version)::

    ae:{<entity>:<join values>}:<view>:v<version>

The braces are a Redis Cluster hash tag: every view of one entity hashes to the same slot, so one MGET
fetches an entity's whole feature vector even on a cluster. Join values are percent-encoded so that the
encoding is injective (no two entity keys share a Redis key) and a value can never close the tag early.
"""

from __future__ import annotations

from collections.abc import Sequence

_ESCAPES = str.maketrans({"%": "%25", ":": "%3A", "|": "%7C", "{": "%7B", "}": "%7D"})


def _escaped(value: str) -> str:
    # Letters and digits need no escape (none of % : | { } is alphanumeric), and checking is far cheaper
    # than translating: this runs for every entity of every online read.
    return value if value.isalnum() else value.translate(_ESCAPES)


def entity_tag(entity: str, join_values: Sequence[str]) -> str:
    """The hash-tag body for one entity instance (several join keys are joined with ``|``)."""
    if len(join_values) == 1:
        return entity + ":" + _escaped(join_values[0])
    return entity + ":" + "|".join(map(_escaped, join_values))


def online_key(entity: str, join_values: Sequence[str], view: str, version: int) -> bytes:
    return f"ae:{{{entity_tag(entity, join_values)}}}:{view}:v{version}".encode()
