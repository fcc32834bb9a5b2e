"""Settings of one data-plane process: one frozen object, read from ``AETHER_*`` variables (CLI flags
override them with ``dataclasses.replace``).

Security: with ``AETHER_TLS_CERT`` and ``AETHER_TLS_KEY`` the server listens with TLS only; with
``AETHER_ADMIN_TOKEN`` (and ``AETHER_READONLY_TOKEN``, or their ``_FILE`` forms: the variables the control
plane reads its tokens from, by the same rules, :class:`clients.server_auth.ServerTokens`) every call but
health and reflection needs one of those tokens; the watches'
channels to the control plane follow :class:`clients.sdk.auth.ChannelSecurity` (``AETHER_TOKEN`` or
``AETHER_TOKEN_FILE``: the read-only token is enough, since watching only reads; ``AETHER_TLS_CA`` for a
TLS control plane; ``AETHER_TLS_SERVER_NAME``). Settings built in code default to plaintext and no token."""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from clients.env_values import (
    ConfigurationError,
    env_bool,
    env_float,
    env_int,
    env_listen_address,
    env_text,
    listen_address,
)
from clients.join_key_limit import DEFAULT_MAX_JOIN_KEY_BYTES, env_max_join_key_bytes
from clients.sdk.auth import ChannelSecurity
from clients.server_auth import ServerTokens
from clients.tls import ServerTls


def aether_home(env: Mapping[str, str]) -> Path:
    return Path(env.get("AETHER_HOME") or Path.home() / ".aether").expanduser()


# The range of each numeric setting: one rule for its AETHER_* variable and its command-line flag
# (:func:`check_override`); a flag once bypassed them (--max-queue-size 0 started a server whose every
# model FAILED, where AETHER_MAX_QUEUE_SIZE=0 was refused). 0 intra-op threads lets ONNX Runtime pick
# (one per core); the thread pools need at least one thread.
INT_RANGES: dict[str, dict[str, int]] = {
    "redis_pool_size": {"minimum": 1},
    "max_rows_per_request": {"minimum": 1},
    "max_features_per_request": {"minimum": 1},
    "intra_op_threads": {"minimum": 0},
    "inference_threads": {"minimum": 1},
    "shadow_threads": {"minimum": 1},
    "max_queue_size": {"minimum": 1},
}
FLOAT_RANGES: dict[str, dict[str, float]] = {
    "redis_timeout_s": {"above": 0},
    "near_cache_mb": {"minimum": 0},
    "near_cache_max_age_s": {"above": 0},
    "inline_batch_below_us": {"minimum": 0},
    "prediction_log_sample_rate": {"minimum": 0, "maximum": 1},
    "prediction_log_linger_ms": {"minimum": 0},
    "drain_delay_s": {"minimum": 0},
    "drain_grace_s": {"minimum": 0},
    "unload_grace_s": {"minimum": 0},
    "metrics_released_series_s": {"minimum": 0},
}


def check_override(field: str, value: object, name: str) -> None:
    """A ConfigurationError naming ``name`` (the flag that gave ``value`` for ``field``) when the value is
    outside the range the field's variable allows: the same check and message as the variable's."""
    if field in INT_RANGES:
        env_int({name: str(value)}, name, 0, **INT_RANGES[field])
    elif field in FLOAT_RANGES:
        env_float({name: str(value)}, name, 0.0, **FLOAT_RANGES[field])
    elif field == "metrics_listen":
        listen_address(str(value), name)


#: The default of ``max_message_bytes``: the most one request or answer may hold.
MAX_MESSAGE_BYTES = 128 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class DataPlaneSettings:
    listen: str = "127.0.0.1:50052"
    redis_url: str = "redis://127.0.0.1:6379/0"
    control_plane_addr: str = "127.0.0.1:50051"
    # The last registry snapshot, so that a restart serves while the control plane is unreachable.
    snapshot_path: Path = Path("registry_snapshot.pb")  # from_env puts it under AETHER_HOME
    # Cap on one Redis wait; a shorter gRPC deadline shortens it further.
    redis_timeout_s: float = 0.5
    redis_pool_size: int = 4
    # The near cache of online-store blobs (data_plane.near_cache), in MiB; 0 = off (every read asks Redis).
    near_cache_mb: float = 64.0
    # The longest a cached blob is served (invalidations drop it sooner): a last bound in case an
    # invalidation went missing while its connection stayed up and answered pings (a silent or lost
    # connection already stops or clears the cache). Each entity read N times in this window is read
    # from Redis once in N, so a short bound caps the hit rate.
    near_cache_max_age_s: float = 300.0
    max_rows_per_request: int = 1000
    max_features_per_request: int = 10_000
    # The longest string join key a read may name, in bytes of UTF-8, when the registry snapshot names
    # none (an older control plane): AETHER_MAX_JOIN_KEY_BYTES, the variable ingestion quarantines longer
    # keys by, read by the same rules (clients.join_key_limit). A snapshot of a current control plane
    # carries that control plane's value, which comes first. A longer key can never have been stored: its
    # read is INVALID_ARGUMENT, not a multi-megabyte key sent to Redis.
    max_join_key_bytes: int = DEFAULT_MAX_JOIN_KEY_BYTES
    plan_cache_size: int = 1024
    # The largest answer allowed by the limits: 1,000 rows x 10,000 int64 features + statuses ~ 90 MB.
    max_message_bytes: int = MAX_MESSAGE_BYTES
    watch_backoff_initial_s: float = 0.1
    watch_backoff_max_s: float = 5.0
    # The metadata database (its id) whose registry and plans the watches follow even though what they
    # hold came from another one: the deliberate way to move a data plane to a new database (otherwise a
    # snapshot of another database is refused, data_plane.watch_stream). Empty = none.
    accept_store_id: str = ""
    # Serving. Models from a static config (ModelSpecs as JSON, see data_plane.models.spec), served besides
    # those the deployment plans reference; None = plans only.
    model_config: Path | None = None
    # Prometheus /metrics on HOST:PORT (port 0 picks one); empty = no metrics endpoint.
    metrics_listen: str = ""
    intra_op_threads: int = 1  # ONNX Runtime threads per model version
    inference_threads: int = 2  # worker threads running batches (shared by every version)
    shadow_threads: int = 1  # worker threads running shadow copies' batches (never the threads above)
    # Batches measured to run shorter than this run on the event loop, not a worker thread (0 = never).
    inline_batch_below_us: float = 500.0
    max_queue_size: int = 1024  # requests waiting per model version before RESOURCE_EXHAUSTED
    # Restrict ONNX Runtime to these execution providers (still tried TensorRT → CUDA → CPU); empty = all.
    execution_providers: tuple[str, ...] = ()
    native_tensorrt: bool = False  # build native TensorRT engines instead of ONNX Runtime sessions
    engine_cache_dir: Path = Path("trt_engines")  # from_env puts it under AETHER_HOME
    prediction_log_stream: str = "aether:predictions"
    prediction_log_sample_rate: float = 0.01  # fraction of Predict requests logged
    prediction_log_maxlen: int = 1_000_000  # approximate cap of the stream (XADD MAXLEN ~)
    # How long a prediction-log batch waits for more entries before it is written (unless it is full).
    prediction_log_linger_ms: float = 5.0
    # Share the port with sibling worker processes (SO_REUSEPORT); set by --workers.
    reuse_port: bool = False
    # An open file where the workers of one --workers data plane agree on the view versions of the static
    # models' references without one (data_plane.feature_pins); set by --workers, None otherwise.
    feature_pins_fd: int | None = None
    # On SIGTERM: seconds of serving while health says NOT_SERVING (load balancers catch up), then seconds
    # the admitted requests get to finish while new ones are refused.
    drain_delay_s: float = 0.5
    drain_grace_s: float = 5.0
    # A model version dropped from the plans finishes the requests it holds within this, then is released.
    unload_grace_s: float = 10.0
    # A released version's metrics series stay at least this long, and until scraped once more, so that
    # its final counts reach the autoscaler and Prometheus (0 = dropped at the release; data_plane.metrics).
    metrics_released_series_s: float = 300.0
    # The server's certificate and key (None: plaintext).
    tls: ServerTls | None = None
    # The bearer tokens callers must present (none: every caller is served, and no check runs).
    auth: ServerTokens = field(default_factory=ServerTokens)
    # How the watches reach the control plane (token, CA).
    channel_security: ChannelSecurity = field(default_factory=ChannelSecurity)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DataPlaneSettings:
        """Every field from its ``AETHER_*`` variable through :mod:`clients.env_values` (empty = unset;
        a value of the wrong type or out of range is a ConfigurationError naming the variable).
        ``AETHER_MAX_JOIN_KEY_BYTES`` is the variable the control plane and the stream materializer read
        (:mod:`clients.join_key_limit`): here only the fallback for a registry snapshot that does not say
        the control plane's (reads refuse a key that ingestion would quarantine)."""
        env = os.environ if env is None else env
        d = cls()
        home = aether_home(env)
        model_config = env_text(env, "AETHER_MODEL_CONFIG", "")
        return cls(
            listen=env_text(env, "AETHER_DATA_PLANE_ADDR", d.listen),
            redis_url=env_text(env, "AETHER_REDIS_URL", d.redis_url),
            control_plane_addr=env_text(env, "AETHER_CONTROL_PLANE_ADDR", d.control_plane_addr),
            accept_store_id=accepted_store_id(env_text(env, "AETHER_ACCEPT_STORE_ID", d.accept_store_id)),
            snapshot_path=Path(
                env_text(env, "AETHER_REGISTRY_SNAPSHOT_PATH", str(home / "registry_snapshot.pb"))
            ).expanduser(),
            redis_timeout_s=env_float(
                env, "AETHER_REDIS_TIMEOUT_S", d.redis_timeout_s, **FLOAT_RANGES["redis_timeout_s"]
            ),
            redis_pool_size=env_int(
                env, "AETHER_REDIS_POOL_SIZE", d.redis_pool_size, **INT_RANGES["redis_pool_size"]
            ),
            near_cache_mb=env_float(
                env, "AETHER_NEAR_CACHE_MB", d.near_cache_mb, **FLOAT_RANGES["near_cache_mb"]
            ),
            near_cache_max_age_s=env_float(
                env,
                "AETHER_NEAR_CACHE_MAX_AGE_S",
                d.near_cache_max_age_s,
                **FLOAT_RANGES["near_cache_max_age_s"],
            ),
            max_rows_per_request=env_int(
                env,
                "AETHER_MAX_ROWS_PER_REQUEST",
                d.max_rows_per_request,
                **INT_RANGES["max_rows_per_request"],
            ),
            max_features_per_request=env_int(
                env,
                "AETHER_MAX_FEATURES_PER_REQUEST",
                d.max_features_per_request,
                **INT_RANGES["max_features_per_request"],
            ),
            max_join_key_bytes=env_max_join_key_bytes(env),
            model_config=Path(model_config).expanduser() if model_config else None,
            metrics_listen=env_listen_address(env, "AETHER_METRICS_ADDR", d.metrics_listen),
            intra_op_threads=env_int(
                env, "AETHER_INTRA_OP_THREADS", d.intra_op_threads, **INT_RANGES["intra_op_threads"]
            ),
            inference_threads=env_int(
                env, "AETHER_INFERENCE_THREADS", d.inference_threads, **INT_RANGES["inference_threads"]
            ),
            shadow_threads=env_int(
                env, "AETHER_SHADOW_THREADS", d.shadow_threads, **INT_RANGES["shadow_threads"]
            ),
            inline_batch_below_us=env_float(
                env,
                "AETHER_INLINE_BATCH_BELOW_US",
                d.inline_batch_below_us,
                **FLOAT_RANGES["inline_batch_below_us"],
            ),
            max_queue_size=env_int(
                env, "AETHER_MAX_QUEUE_SIZE", d.max_queue_size, **INT_RANGES["max_queue_size"]
            ),
            execution_providers=execution_providers(env),
            native_tensorrt=env_bool(env, "AETHER_NATIVE_TENSORRT", d.native_tensorrt),
            engine_cache_dir=Path(
                env_text(env, "AETHER_ENGINE_CACHE_DIR", str(home / "trt_engines"))
            ).expanduser(),
            prediction_log_stream=env_text(env, "AETHER_PREDICTION_LOG_STREAM", d.prediction_log_stream),
            prediction_log_sample_rate=env_float(
                env,
                "AETHER_PREDICTION_LOG_SAMPLE_RATE",
                d.prediction_log_sample_rate,
                **FLOAT_RANGES["prediction_log_sample_rate"],
            ),
            prediction_log_linger_ms=env_float(
                env,
                "AETHER_PREDICTION_LOG_LINGER_MS",
                d.prediction_log_linger_ms,
                **FLOAT_RANGES["prediction_log_linger_ms"],
            ),
            drain_delay_s=env_float(
                env, "AETHER_DRAIN_DELAY_S", d.drain_delay_s, **FLOAT_RANGES["drain_delay_s"]
            ),
            drain_grace_s=env_float(
                env, "AETHER_DRAIN_GRACE_S", d.drain_grace_s, **FLOAT_RANGES["drain_grace_s"]
            ),
            unload_grace_s=env_float(
                env, "AETHER_UNLOAD_GRACE_S", d.unload_grace_s, **FLOAT_RANGES["unload_grace_s"]
            ),
            metrics_released_series_s=env_float(
                env,
                "AETHER_METRICS_RELEASED_SERIES_S",
                d.metrics_released_series_s,
                **FLOAT_RANGES["metrics_released_series_s"],
            ),
            tls=ServerTls.from_env(env),
            auth=ServerTokens.from_env(env),
            channel_security=ChannelSecurity.from_env(env),
        )


PROVIDERS_VARIABLE = "AETHER_EXECUTION_PROVIDERS"


def execution_providers(env: Mapping[str, str]) -> tuple[str, ...]:
    """``AETHER_EXECUTION_PROVIDERS``: comma-separated ONNX Runtime provider names the data plane may use.
    A name ONNX Runtime does not know (a typo, ``cuda``) or one the data plane never asks for is a
    ConfigurationError: either was dropped, and the models ran on the CPU without a word. A known GPU
    provider this build lacks is allowed (the same settings serve CPU and GPU hosts) and logged at start
    (:func:`data_plane.runtime.onnx.warn_missing_named_providers`)."""
    names = tuple(p.strip() for p in env_text(env, PROVIDERS_VARIABLE, "").split(",") if p.strip())
    if not names:
        return ()
    # Imported only when the variable is set: onnxruntime takes a while to import, and the settings
    # are read by processes that never serve a model (``--help``, the supervisor of --workers).
    import onnxruntime

    from data_plane.runtime.onnx import PROVIDER_PREFERENCE

    known = set(onnxruntime.get_all_providers())
    for name in names:
        if name not in known:
            raise ConfigurationError(
                f"{PROVIDERS_VARIABLE}: {name!r} is not an ONNX Runtime execution provider;"
                f" expected names from {', '.join(PROVIDER_PREFERENCE)}"
            )
        if name not in PROVIDER_PREFERENCE:
            raise ConfigurationError(
                f"{PROVIDERS_VARIABLE}: the data plane does not use {name}; expected names from"
                f" {', '.join(PROVIDER_PREFERENCE)}"
            )
    return names


def accepted_store_id(text: str, name: str = "AETHER_ACCEPT_STORE_ID") -> str:
    """The metadata database id to accept (``--accept-store-id``), in the form ids are sent in; "" for
    none. A value that is no id (a typo, a truncated paste) was taken without a word, and the snapshot it
    was meant to accept stayed refused with nothing saying why."""
    value = text.strip()
    if not value:
        return ""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ConfigurationError(
            f"{name} must be a metadata database id (a UUID, as the refusal's log line names it), "
            f"not {text!r}"
        ) from None
