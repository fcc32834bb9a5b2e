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


def entity_tag(entity: str, join_values: Sequence[str]) -> str:
    """The hash-tag body for one entity instance (several join keys are joined with ``|``)."""
    return entity + ":" + "|".join(v.translate(_ESCAPES) for v in join_values)


def online_key(entity: str, join_values: Sequence[str], view: str, version: int) -> bytes:
    return f"ae:{{{entity_tag(entity, join_values)}}}:{view}:v{version}".encode()
