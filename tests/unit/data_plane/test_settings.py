"""Data-plane settings from AETHER_* variables."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from clients.env_values import ConfigurationError
from clients.sdk.auth import ChannelSecurity
from clients.server_auth import ServerTokens
from control_plane.monitoring.settings import MonitoringSettings
from control_plane.settings import ControlPlaneSettings
from data_plane.__main__ import parse_args
from data_plane.settings import DataPlaneSettings
from tests.integration.security.conftest import make_certificate


def test_defaults_put_the_snapshot_under_aether_home() -> None:
    settings = DataPlaneSettings.from_env({"AETHER_HOME": "/srv/aether"})
    assert settings.snapshot_path == Path("/srv/aether/registry_snapshot.pb")
    assert settings.listen == "127.0.0.1:50052" and settings.control_plane_addr == "127.0.0.1:50051"
    assert (settings.max_rows_per_request, settings.max_features_per_request) == (1000, 10_000)


def test_variables_override_the_defaults() -> None:
    settings = DataPlaneSettings.from_env(
        {
            "AETHER_DATA_PLANE_ADDR": "0.0.0.0:7000",
            "AETHER_REDIS_URL": "redis://cache:6380/2",
            "AETHER_CONTROL_PLANE_ADDR": "cp:50051",
            "AETHER_REGISTRY_SNAPSHOT_PATH": "/tmp/snap.pb",
            "AETHER_REDIS_TIMEOUT_S": "0.1",
            "AETHER_MAX_ROWS_PER_REQUEST": "10",
        }
    )
    assert settings.listen == "0.0.0.0:7000" and settings.redis_url == "redis://cache:6380/2"
    assert settings.control_plane_addr == "cp:50051" and settings.snapshot_path == Path("/tmp/snap.pb")
    assert settings.redis_timeout_s == 0.1 and settings.max_rows_per_request == 10


def test_drain_unload_and_security_come_from_the_environment(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("reader-token\n", encoding="utf-8")
    server = make_certificate(tmp_path)
    settings = DataPlaneSettings.from_env(
        {
            "AETHER_DRAIN_DELAY_S": "1.5",
            "AETHER_DRAIN_GRACE_S": "20",
            "AETHER_UNLOAD_GRACE_S": "3",
            "AETHER_METRICS_RELEASED_SERIES_S": "45",
            "AETHER_TLS_CERT": str(server.cert_path),
            "AETHER_TLS_KEY": str(server.key_path),
            "AETHER_TOKEN_FILE": str(token_file),
            "AETHER_TLS_CA": str(server.cert_path),  # self-signed: its own authority
            "AETHER_TLS_SERVER_NAME": "control-plane.internal",
        }
    )
    assert (settings.drain_delay_s, settings.drain_grace_s, settings.unload_grace_s) == (1.5, 20.0, 3.0)
    assert settings.metrics_released_series_s == 45.0
    assert settings.tls == server
    assert settings.channel_security == ChannelSecurity(
        token="reader-token", ca_path=server.cert_path, server_name="control-plane.internal"
    )
    assert "reader-token" not in repr(settings)  # the secret never reaches a log line


def test_without_security_variables_the_data_plane_is_plaintext_and_sends_no_token() -> None:
    settings = DataPlaneSettings.from_env({})
    assert settings.tls is None and settings.channel_security == ChannelSecurity()
    assert (settings.drain_delay_s, settings.drain_grace_s) == (0.5, 5.0)
    with pytest.raises(ValueError, match="AETHER_TLS_CERT and AETHER_TLS_KEY"):
        DataPlaneSettings.from_env({"AETHER_TLS_CERT": "/etc/aether/server.pem"})


def test_drain_flags_override_the_settings() -> None:
    settings, workers = parse_args(["--drain-delay-s", "0.1", "--drain-grace-s", "30", "--workers", "2"])
    assert (settings.drain_delay_s, settings.drain_grace_s, workers) == (0.1, 30.0, 2)


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("AETHER_MAX_ROWS_PER_REQUEST", "abc", "a whole number >= 1"),
        ("AETHER_MAX_ROWS_PER_REQUEST", "-5", "a whole number >= 1"),
        ("AETHER_DRAIN_GRACE_S", "5s", "a number >= 0"),
        ("AETHER_REDIS_TIMEOUT_S", "0", "a number > 0"),
        ("AETHER_REDIS_TIMEOUT_S", "nan", "a number > 0"),
        ("AETHER_PREDICTION_LOG_SAMPLE_RATE", "7", "a number from 0 to 1"),
        ("AETHER_INFERENCE_THREADS", "0", "a whole number >= 1"),
        ("AETHER_SHADOW_THREADS", "0", "a whole number >= 1"),
        ("AETHER_MAX_QUEUE_SIZE", "1.5", "a whole number >= 1"),
        ("AETHER_NATIVE_TENSORRT", "maybe", "1/true/yes/on or 0/false/no/off"),
    ],
)
def test_a_bad_value_names_its_variable(variable: str, value: str, expected: str) -> None:
    """They were a bare int()/float() traceback naming no variable, or accepted (-5 rows, a rate of 7)."""
    with pytest.raises(ConfigurationError) as caught:
        DataPlaneSettings.from_env({variable: value})
    assert str(caught.value) == f"{variable}: expected {expected}, got {value!r}"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("cuda", "'cuda' is not an ONNX Runtime execution provider"),
        ("CUDAExecutionProvider,TensorRT", "'TensorRT' is not an ONNX Runtime execution provider"),
        ("OpenVINOExecutionProvider", "the data plane does not use OpenVINOExecutionProvider"),
    ],
)
def test_an_execution_provider_name_the_data_plane_cannot_use_is_refused(value: str, expected: str) -> None:
    """Such a name was dropped when sessions were built, and the models ran on the CPU, nothing logged."""
    with pytest.raises(ConfigurationError) as caught:
        DataPlaneSettings.from_env({"AETHER_EXECUTION_PROVIDERS": value})
    assert str(caught.value) == (
        f"AETHER_EXECUTION_PROVIDERS: {expected}; expected names from TensorrtExecutionProvider,"
        " CUDAExecutionProvider, CPUExecutionProvider"
    )
    # A real GPU provider is accepted on a build without it (one configuration for CPU and GPU hosts).
    named = DataPlaneSettings.from_env(
        {"AETHER_EXECUTION_PROVIDERS": " CUDAExecutionProvider , CPUExecutionProvider"}
    )
    assert named.execution_providers == ("CUDAExecutionProvider", "CPUExecutionProvider")


def test_an_empty_variable_means_unset() -> None:
    names = [
        "AETHER_DATA_PLANE_ADDR", "AETHER_REDIS_URL", "AETHER_REDIS_TIMEOUT_S", "AETHER_REDIS_POOL_SIZE",
        "AETHER_MAX_ROWS_PER_REQUEST", "AETHER_INFERENCE_THREADS", "AETHER_PREDICTION_LOG_SAMPLE_RATE",
        "AETHER_DRAIN_GRACE_S", "AETHER_NATIVE_TENSORRT", "AETHER_TLS_CA", "AETHER_TOKEN_FILE",
    ]  # fmt: skip
    assert DataPlaneSettings.from_env(dict.fromkeys(names, "")) == DataPlaneSettings.from_env({})
    assert DataPlaneSettings.from_env({"AETHER_INTRA_OP_THREADS": "0"}).intra_op_threads == 0  # ORT picks


def _data_plane(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    base = {key: value for key, value in os.environ.items() if not key.startswith("AETHER_")}
    return subprocess.run(
        [sys.executable, "-m", "data_plane", *args],
        env={**base, "AETHER_REDIS_URL": "redis://127.0.0.1:1/0", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_process_prints_one_line_and_help_works_whatever_the_environment(tmp_path: Path) -> None:
    garbage = {"AETHER_HOME": str(tmp_path), "AETHER_MAX_ROWS_PER_REQUEST": "abc"}
    helped = _data_plane(garbage, "--help")
    assert helped.returncode == 0 and "--workers" in helped.stdout, helped.stderr
    refused = _data_plane(garbage, "--listen", "127.0.0.1:0")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines() == [
        "python -m data_plane: error: AETHER_MAX_ROWS_PER_REQUEST: expected a whole number >= 1, got 'abc'"
    ]


def test_native_tensorrt_that_cannot_be_used_fails_the_start_in_one_line(tmp_path: Path) -> None:
    """Before, the data plane started and every model fell back to ONNX Runtime with a warning each
    (the project's GPU image had no torch, so AETHER_NATIVE_TENSORRT=1 never took effect). The test
    environment has no tensorrt package, the first thing native TensorRT needs."""
    refused = _data_plane(
        {"AETHER_HOME": str(tmp_path), "AETHER_NATIVE_TENSORRT": "1"}, "--listen", "127.0.0.1:0"
    )
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    assert refused.stderr.strip().splitlines() == [
        "python -m data_plane: error: AETHER_NATIVE_TENSORRT=1 but native TensorRT cannot be used here:"
        " the tensorrt package is not installed (the `gpu` extra)"
    ]


def test_the_control_planes_token_variables_turn_the_data_planes_auth_on(tmp_path: Path) -> None:
    """The data plane served every caller whatever tokens its environment held; it now reads the same
    variables and files as the control plane, by the same rules."""
    token_file = tmp_path / "admin"
    token_file.write_text("admin-token\n")
    settings = DataPlaneSettings.from_env(
        {"AETHER_ADMIN_TOKEN_FILE": str(token_file), "AETHER_READONLY_TOKEN": "reader-token"}
    )
    assert settings.auth == ServerTokens(admin_token="admin-token", readonly_token="reader-token")
    assert not DataPlaneSettings.from_env({}).auth.enabled
    assert "admin-token" not in repr(settings)
    # A configuration that cannot be meant is the same one line as any other setting, not a traceback.
    refused = _data_plane(
        {"AETHER_HOME": str(tmp_path), "AETHER_READONLY_TOKEN": "reader-token"}, "--listen", "127.0.0.1:0"
    )
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    assert refused.stderr.strip().splitlines() == [
        "python -m data_plane: error: AETHER_READONLY_TOKEN is set without AETHER_ADMIN_TOKEN:"
        " no call could ever write"
    ]


def test_a_model_config_that_cannot_be_used_fails_the_start_in_one_line(tmp_path: Path) -> None:
    """A model config whose entry lacks a field ended the process with a KeyError traceback."""
    config = tmp_path / "models.json"
    config.write_text('{"models": [{"name": "m", "version": "one"}]}')
    refused = _data_plane(
        {"AETHER_HOME": str(tmp_path)}, "--listen", "127.0.0.1:0", "--model-config", str(config)
    )
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    assert refused.stderr.strip().splitlines() == [
        f"python -m data_plane: error: model config {config}: models[0] ('m'): missing field 'artifact_uri'"
    ]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--max-queue-size", "0"], "--max-queue-size: expected a whole number >= 1, got '0'"),
        (["--intra-op-threads", "-1"], "--intra-op-threads: expected a whole number >= 0, got '-1'"),
        (
            ["--prediction-log-sample-rate", "1.5"],
            "--prediction-log-sample-rate: expected a number from 0 to 1",
        ),
        (["--drain-grace-s", "nan"], "--drain-grace-s: expected a number >= 0, got 'nan'"),
        (["--inline-batch-below-us", "-1"], "--inline-batch-below-us: expected a number >= 0"),
        (["--workers", "0"], "--workers: expected a whole number >= 1, got 0"),
    ],
)
def test_flags_are_held_to_the_ranges_of_their_variables(flags: list[str], message: str) -> None:
    """--max-queue-size 0 started a server whose every model FAILED (AETHER_MAX_QUEUE_SIZE=0 was refused
    at start), and --workers 0 ran one process as if the flag were not there."""
    with pytest.raises(ConfigurationError, match="^" + re.escape(message)):
        parse_args(flags, {})
    assert parse_args(["--max-queue-size", "1", "--intra-op-threads", "0"], {})[0].max_queue_size == 1


def test_the_store_to_accept_comes_from_its_variable_or_its_flag() -> None:
    """The deliberate way to follow another metadata database (data_plane.watch_stream): none by default."""
    assert DataPlaneSettings.from_env({}).accept_store_id == ""
    store = "6f1d2c3e-9a8b-4c5d-8e7f-0a1b2c3d4e5f"
    from_env = DataPlaneSettings.from_env({"AETHER_ACCEPT_STORE_ID": f" {store} \n"})
    assert from_env.accept_store_id == store
    settings, _ = parse_args(["--accept-store-id", f" {store.upper()}\n"], {"AETHER_ACCEPT_STORE_ID": ""})
    assert settings.accept_store_id == store  # trimmed and in the form ids are sent in, as the variable
    # A value that is no id (a typo, a truncated paste) was taken without a word, and the snapshot it was
    # meant to accept stayed refused with nothing saying why.
    with pytest.raises(ConfigurationError, match="AETHER_ACCEPT_STORE_ID must be a metadata database id"):
        DataPlaneSettings.from_env({"AETHER_ACCEPT_STORE_ID": "yes"})
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--accept-store-id", store[:8]], {})
    assert exit_.value.code == 2


@pytest.mark.parametrize(
    "value", ["bad", "127.0.0.1:99999", "127.0.0.1:90x", "127.0.0.1:", "a:b:9090", "[]:9"]
)
def test_a_metrics_address_that_is_no_host_and_port_names_its_variable_or_flag(value: str) -> None:
    """It was taken as it was and failed only as the metrics server bound it: a ValueError or OverflowError
    traceback and status 1, which a fleet does not take for a replica refusing its settings (status 2)."""
    expected = f"expected HOST:PORT with a port from 0 to 65535 (e.g. 127.0.0.1:9090), got {value!r}"
    with pytest.raises(ConfigurationError) as caught:
        DataPlaneSettings.from_env({"AETHER_METRICS_ADDR": value})
    assert str(caught.value) == f"AETHER_METRICS_ADDR: {expected}"
    with pytest.raises(ConfigurationError) as caught:
        parse_args(["--metrics-listen", value], {})
    assert str(caught.value) == f"--metrics-listen: {expected}"
    assert DataPlaneSettings.from_env({"AETHER_METRICS_ADDR": "[::1]:0"}).metrics_listen == "[::1]:0"
    assert parse_args(["--metrics-listen", "127.0.0.1:65535"], {})[0].metrics_listen == "127.0.0.1:65535"


def test_a_metrics_address_without_a_host_is_every_interface_as_before_the_check() -> None:
    # ":9090" listened on every interface (the metrics server was given an empty host); the first version
    # of the address check refused it, and a data plane set up so exited 2 at start.
    assert DataPlaneSettings.from_env({"AETHER_METRICS_ADDR": ":9090"}).metrics_listen == "0.0.0.0:9090"
    assert parse_args(["--metrics-listen", ":0"], {})[0].metrics_listen.endswith(":0")  # accepted
    monitor = MonitoringSettings.from_env({"AETHER_MONITOR_METRICS_ADDR": ":9090"})
    assert monitor.metrics_addr == "0.0.0.0:9090"


def test_the_join_key_limit_is_the_same_variable_default_and_range_as_ingestions(tmp_path: Path) -> None:
    """A read of a key ingestion would quarantine is refused (data_plane.plan): the data plane reads the
    limit from the variable the control plane and the stream materializer read, by the same rules."""
    home = {"AETHER_HOME": str(tmp_path)}
    assert DataPlaneSettings.from_env(home).max_join_key_bytes == 1024
    assert ControlPlaneSettings.from_env(home).max_join_key_bytes == 1024
    for value in ("64", str(2**20)):
        env = {**home, "AETHER_MAX_JOIN_KEY_BYTES": value}
        assert DataPlaneSettings.from_env(env).max_join_key_bytes == int(value)
        assert ControlPlaneSettings.from_env(env).max_join_key_bytes == int(value)
    for bad in ("0", "-1", "1kb", str(2**20 + 1)):
        env = {**home, "AETHER_MAX_JOIN_KEY_BYTES": bad}
        with pytest.raises(ConfigurationError) as data_plane:
            DataPlaneSettings.from_env(env)
        with pytest.raises(ConfigurationError) as control_plane:
            ControlPlaneSettings.from_env(env)
        assert str(data_plane.value) == str(control_plane.value)
        assert str(data_plane.value).startswith("AETHER_MAX_JOIN_KEY_BYTES: ")
