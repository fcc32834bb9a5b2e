"""Settings of one control-plane process, read once from ``AETHER_*`` environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import redis
import redis.asyncio

from clients.env_values import env_float, env_int
from clients.files import private_folder
from clients.join_key_limit import DEFAULT_MAX_JOIN_KEY_BYTES, env_max_join_key_bytes
from clients.tls import ServerTls
from control_plane.api.auth import AuthSettings
from control_plane.defaults import DEFAULT_LISTEN_ADDR as DEFAULT_LISTEN_ADDR
from control_plane.defaults import DEFAULT_REDIS_URL as DEFAULT_REDIS_URL
from control_plane.defaults import default_db_url as default_db_url
from control_plane.ingestion.draining import DEFAULT_DRAIN_S, DRAIN_VARIABLE
from control_plane.ingestion.streaming import kafka_options
from control_plane.offline.compaction import CompactionPolicy, compaction_policy_from_env
from control_plane.offline.server_paths import DATASETS_ROOT_VARIABLE
from control_plane.redis_clients import (
    DEFAULT_REDIS_TIMEOUT_S,
    MAX_REDIS_TIMEOUT_S,
    async_client,
    sync_client,
)

REDIS_TIMEOUT_VARIABLE = "AETHER_CONTROL_PLANE_REDIS_TIMEOUT_S"


def default_worker_threads() -> int:
    """What asyncio gives its default executor: min(32, CPUs + 4)."""
    return min(32, (os.cpu_count() or 1) + 4)


@dataclass(frozen=True)
class ControlPlaneSettings:
    home: Path
    db_url: str
    redis_url: str = DEFAULT_REDIS_URL
    listen_addr: str = DEFAULT_LISTEN_ADDR
    #: How often a WatchRegistry stream polls the database revision, to notice changes made by other
    #: processes (changes made through this process wake the streams at once).
    watch_poll_interval_s: float = 1.0
    #: How long a SQLite writer waits for the write lock before failing with "database is locked".
    db_busy_timeout_s: float = 30.0
    #: Threads of the executor that ``start_server`` installs on its event loop, which runs every call's
    #: blocking work (database transactions among it); the database pool keeps a connection for each.
    worker_threads: int = field(default_factory=default_worker_threads)
    #: How long a stop waits for in-flight calls before cancelling them.
    shutdown_grace_s: float = 2.0
    #: How long a stop first waits for in-flight ingestion runs to stop at a chunk boundary and answer
    #: what they stored (AETHER_CONTROL_PLANE_DRAIN_S; see control_plane.ingestion.draining). `aetherctl
    #: dev down` waits it + ``shutdown_grace_s`` + 2 s before SIGKILL (``control_plane.cli.dev.down_grace``);
    #: another supervisor must wait as long, or it kills a stop still answering a stuck run's caller.
    shutdown_drain_s: float = DEFAULT_DRAIN_S
    #: Bearer tokens (AETHER_ADMIN_TOKEN[_FILE], AETHER_READONLY_TOKEN[_FILE]); no token = auth off.
    auth: AuthSettings = field(default_factory=AuthSettings)
    #: Server certificate and key (AETHER_TLS_CERT, AETHER_TLS_KEY); None = plaintext.
    tls: ServerTls | None = None
    #: librdkafka settings of every Kafka client of this process (AETHER_KAFKA_OPTIONS_FILE, then
    #: --kafka-option flags): the materializer's consumer and the quarantine replay's producer alike.
    #: Kept out of the repr: it may hold a SASL password.
    kafka_options: Mapping[str, str] = field(default_factory=dict, repr=False)
    #: The only folder (or URI) under which GetHistoricalFeatures reads entity rows and writes training
    #: sets (AETHER_DATASETS_ROOT); None = ``<home>/datasets``. See control_plane.offline.server_paths.
    datasets_root: str | None = None
    #: The offline store's root, a folder or a ``pyarrow.fs`` URI such as ``s3://bucket/features``
    #: (AETHER_OFFLINE_ROOT); None = ``<home>/offline``.
    offline_root: str | None = None
    #: How often the online cleanup of deleted feature views looks for pending work, and retries one
    #: that failed (Redis down).
    online_cleanup_interval_s: float = 10.0
    #: The window over which refusals of callers without a valid token are rate-limited in the audit
    #: log (the first few per peer host and method written, the rest counted into one entry at its end).
    refusal_audit_window_s: float = 60.0
    #: When offline partitions are compacted and their replaced files deleted (AETHER_OFFLINE_COMPACT_
    #: MIN_FILES, _MIN_AGE_S, _LATENESS_S, _GRACE_S; see control_plane.offline.compaction).
    offline_compaction: CompactionPolicy = field(default_factory=CompactionPolicy)
    #: Seconds between the background compaction passes over every view
    #: (AETHER_OFFLINE_COMPACT_INTERVAL_S); 0 = none (``aetherctl offline compact`` still runs one).
    offline_compact_interval_s: float = 600.0
    #: Cap on one wait for Redis (a connect, a reply) of every Redis client of the process
    #: (AETHER_CONTROL_PLANE_REDIS_TIMEOUT_S, ``--redis-timeout-s``; see control_plane.redis_clients).
    redis_timeout_s: float = DEFAULT_REDIS_TIMEOUT_S
    #: The longest string join key ingestion accepts, in bytes of UTF-8 (AETHER_MAX_JOIN_KEY_BYTES): a
    #: longer one is quarantined, by batch runs, replays and the stream materializer alike
    #: (control_plane.ingestion.key_length). Sent with every registry snapshot (WatchRegistry): the data
    #: planes refuse reads of longer keys by it, whatever their own AETHER_MAX_JOIN_KEY_BYTES says.
    max_join_key_bytes: int = DEFAULT_MAX_JOIN_KEY_BYTES

    def redis_client(self, url: str | None = None) -> redis.Redis:
        """A blocking client of the online store (``url``, default ``redis_url``) with this process's
        Redis timeout (:mod:`control_plane.redis_clients`)."""
        return sync_client(url or self.redis_url, self.redis_timeout_s)

    def async_redis_client(self) -> redis.asyncio.Redis:
        """An asyncio client of the online store with this process's Redis timeout."""
        return async_client(self.redis_url, self.redis_timeout_s)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, create_home: bool = True
    ) -> ControlPlaneSettings:
        """Settings from ``AETHER_HOME``, ``AETHER_DB_URL``, ``AETHER_REDIS_URL``,
        ``AETHER_CONTROL_PLANE_REDIS_TIMEOUT_S``,
        ``AETHER_CONTROL_PLANE_ADDR``, ``AETHER_KAFKA_OPTIONS_FILE``, ``AETHER_DATASETS_ROOT``,
        ``AETHER_OFFLINE_ROOT`` and
        ``AETHER_OFFLINE_COMPACT_*``, ``AETHER_CONTROL_PLANE_DRAIN_S``,
        ``AETHER_CONTROL_PLANE_WORKER_THREADS`` and ``AETHER_MAX_JOIN_KEY_BYTES``
        (``environ`` defaults to the process environment). Creates the home folder when it is missing,
        since the default database lives there: mode 0700 (``clients.files.private_folder``), as it holds
        the database, job logs and job specs with their secrets; a folder that exists keeps its mode.
        ``create_home`` False leaves a missing home missing, for a process that only opens what the
        control plane made (the stream materializer: it left an empty ``~/.aether`` behind)."""
        env = os.environ if environ is None else environ
        home = Path(env.get("AETHER_HOME") or Path.home() / ".aether").expanduser()
        if create_home:
            private_folder(home)
        return cls(
            home=home,
            db_url=env.get("AETHER_DB_URL") or default_db_url(home),
            redis_url=env.get("AETHER_REDIS_URL") or DEFAULT_REDIS_URL,
            redis_timeout_s=env_float(
                env, REDIS_TIMEOUT_VARIABLE, DEFAULT_REDIS_TIMEOUT_S, above=0, maximum=MAX_REDIS_TIMEOUT_S
            ),
            listen_addr=env.get("AETHER_CONTROL_PLANE_ADDR") or DEFAULT_LISTEN_ADDR,
            auth=AuthSettings.from_env(env),
            tls=ServerTls.from_env(env),
            kafka_options=kafka_options.from_env(env),
            datasets_root=env.get(DATASETS_ROOT_VARIABLE) or None,
            offline_root=env.get("AETHER_OFFLINE_ROOT") or None,
            offline_compaction=compaction_policy_from_env(env),
            offline_compact_interval_s=env_float(env, "AETHER_OFFLINE_COMPACT_INTERVAL_S", 600.0, minimum=0),
            shutdown_drain_s=env_float(env, DRAIN_VARIABLE, DEFAULT_DRAIN_S, minimum=0, maximum=3600),
            worker_threads=env_int(
                env, "AETHER_CONTROL_PLANE_WORKER_THREADS", default_worker_threads(), minimum=1, maximum=256
            ),
            max_join_key_bytes=env_max_join_key_bytes(env),
        )
