"""The length limit of a string join key, one setting for every process that handles keys: ingestion
quarantines a key longer than it (``control_plane.ingestion.key_length``: batch runs, replays, the stream
materializer), and the data plane refuses a read of one (``data_plane.plan``), since no such key can have
been stored. Here, in ``clients``, because the two planes never import each other: each reads
``AETHER_MAX_JOIN_KEY_BYTES`` from its own environment by :func:`env_max_join_key_bytes`, so the name, the
default and the range cannot drift apart. The data plane's reads go by the control plane's value, sent with
each registry snapshot (``RegistrySnapshot.max_join_key_bytes``): its own is only the fallback for a
snapshot that names none (an older control plane), so raising the limit on the control plane alone cannot
make stored keys unreadable.

Bytes of UTF-8, not characters, as Redis and Parquet hold bytes (513 ``é`` are 1,026 bytes)."""

from __future__ import annotations

from collections.abc import Mapping

from clients.env_values import env_int

DEFAULT_MAX_JOIN_KEY_BYTES = 1024
#: The largest limit the variable takes: a key is a Redis key and a value of every offline row.
MAX_JOIN_KEY_BYTES_LIMIT = 2**20
MAX_JOIN_KEY_BYTES_VARIABLE = "AETHER_MAX_JOIN_KEY_BYTES"


def env_max_join_key_bytes(env: Mapping[str, str]) -> int:
    """``AETHER_MAX_JOIN_KEY_BYTES`` (1 to 1,048,576; unset or empty: 1,024), a ConfigurationError naming
    it otherwise."""
    return env_int(
        env,
        MAX_JOIN_KEY_BYTES_VARIABLE,
        DEFAULT_MAX_JOIN_KEY_BYTES,
        minimum=1,
        maximum=MAX_JOIN_KEY_BYTES_LIMIT,
    )
