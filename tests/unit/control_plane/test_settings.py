from __future__ import annotations

from pathlib import Path

import pytest

from clients.env_values import ConfigurationError
from control_plane.__main__ import parse_settings
from control_plane.ingestion.streaming import kafka_options
from control_plane.ingestion.streaming.__main__ import build_parser as build_materializer_parser
from control_plane.settings import ControlPlaneSettings


def test_defaults_live_under_aether_home_which_is_created(tmp_path: Path) -> None:
    home = tmp_path / "state" / "aether"
    settings = ControlPlaneSettings.from_env({"AETHER_HOME": str(home)})
    assert home.is_dir()
    assert settings.home == home
    assert settings.db_url == f"sqlite:///{home / 'aether.db'}"
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.listen_addr == "127.0.0.1:50051"
    assert settings.offline_root is None  # the offline store is <home>/offline


def test_environment_overrides(tmp_path: Path) -> None:
    settings = ControlPlaneSettings.from_env(
        {
            "AETHER_HOME": str(tmp_path),
            "AETHER_DB_URL": "postgresql+psycopg://aether@db/aether",
            "AETHER_REDIS_URL": "redis://cache:6380/1",
            "AETHER_CONTROL_PLANE_ADDR": "0.0.0.0:6000",
            "AETHER_OFFLINE_ROOT": "s3://bucket/features",
        }
    )
    assert (settings.db_url, settings.redis_url, settings.listen_addr, settings.offline_root) == (
        "postgresql+psycopg://aether@db/aether",
        "redis://cache:6380/1",
        "0.0.0.0:6000",
        "s3://bucket/features",
    )


def test_kafka_options_come_from_a_properties_file_and_flags_override_them_key_by_key(
    tmp_path: Path,
) -> None:
    options = tmp_path / "kafka.properties"
    options.write_text(
        "# the cluster's client settings\n\n"
        "security.protocol = SASL_SSL\n"
        "sasl.mechanism=PLAIN\n"
        "! a comment the Java way\n"
        "sasl.password = pa=ss word\n"
    )
    environ = {"AETHER_HOME": str(tmp_path), "AETHER_KAFKA_OPTIONS_FILE": str(options)}
    from_file = {"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN", "sasl.password": "pa=ss word"}
    assert ControlPlaneSettings.from_env(environ).kafka_options == from_file
    assert ControlPlaneSettings.from_env({"AETHER_HOME": str(tmp_path)}).kafka_options == {}

    # The control plane takes the materializer's flag, parsed by the same code.
    flags = ["--kafka-option", "sasl.mechanism=SCRAM-SHA-512", "--kafka-option=client.id=replayer"]
    settings = parse_settings(flags, environ)
    assert settings.kafka_options == {**from_file, "sasl.mechanism": "SCRAM-SHA-512", "client.id": "replayer"}
    assert "pa=ss" not in repr(settings)  # a SASL password is never printed with the settings
    materializer = build_materializer_parser().parse_args(["--view", "clicks", *flags])
    assert kafka_options.merged(from_file, materializer.kafka_option) == settings.kafka_options


def test_an_unreadable_or_malformed_kafka_options_file_is_an_error(tmp_path: Path) -> None:
    environ = {"AETHER_HOME": str(tmp_path), "AETHER_KAFKA_OPTIONS_FILE": str(tmp_path / "missing")}
    with pytest.raises(ValueError, match="cannot read AETHER_KAFKA_OPTIONS_FILE"):
        ControlPlaneSettings.from_env(environ)
    malformed = tmp_path / "kafka.properties"
    malformed.write_text("security.protocol=SSL\nsasl.password\n")
    with pytest.raises(ValueError, match=r"kafka.properties:2: expected KEY=VALUE"):
        ControlPlaneSettings.from_env({**environ, "AETHER_KAFKA_OPTIONS_FILE": str(malformed)})


def test_worker_threads_come_from_the_environment_and_a_bad_value_names_the_variable(tmp_path: Path) -> None:
    environ = {"AETHER_HOME": str(tmp_path), "AETHER_CONTROL_PLANE_WORKER_THREADS": "20"}
    assert ControlPlaneSettings.from_env(environ).worker_threads == 20
    with pytest.raises(ConfigurationError, match="AETHER_CONTROL_PLANE_WORKER_THREADS"):
        ControlPlaneSettings.from_env({**environ, "AETHER_CONTROL_PLANE_WORKER_THREADS": "0"})


def test_the_redis_timeout_comes_from_the_environment_or_the_flag_and_a_bad_value_names_it(
    tmp_path: Path,
) -> None:
    environ = {"AETHER_HOME": str(tmp_path)}
    assert ControlPlaneSettings.from_env(environ).redis_timeout_s == 5.0
    environ["AETHER_CONTROL_PLANE_REDIS_TIMEOUT_S"] = "1.5"
    settings = ControlPlaneSettings.from_env(environ)
    assert settings.redis_timeout_s == 1.5
    pool = settings.redis_client().connection_pool.connection_kwargs
    assert (pool["socket_timeout"], pool["socket_connect_timeout"]) == (1.5, 1.5)
    assert parse_settings(["--redis-timeout-s", "0.25"], environ).redis_timeout_s == 0.25
    # 1e300: past a year, which redis-py's clock arithmetic overflowed on every blocking call.
    for bad in ("0", "-1", "soon", "inf", "1e300", str(366 * 24 * 3600)):
        with pytest.raises(ConfigurationError, match="AETHER_CONTROL_PLANE_REDIS_TIMEOUT_S"):
            ControlPlaneSettings.from_env({**environ, "AETHER_CONTROL_PLANE_REDIS_TIMEOUT_S": bad})
    with pytest.raises(SystemExit):
        parse_settings(["--redis-timeout-s", "0"], environ)


def test_the_join_key_limit_is_1024_bytes_unless_aether_max_join_key_bytes_says_otherwise(
    tmp_path: Path,
) -> None:
    assert ControlPlaneSettings.from_env({"AETHER_HOME": str(tmp_path)}).max_join_key_bytes == 1024
    env = {"AETHER_HOME": str(tmp_path), "AETHER_MAX_JOIN_KEY_BYTES": "64"}
    assert ControlPlaneSettings.from_env(env).max_join_key_bytes == 64
    for bad in ("0", "-1", "1kb", str(2**20 + 1)):
        with pytest.raises(ConfigurationError, match="AETHER_MAX_JOIN_KEY_BYTES"):
            ControlPlaneSettings.from_env({**env, "AETHER_MAX_JOIN_KEY_BYTES": bad})
