"""``aetherctl fleet run`` as a user runs it: a separate process autoscaling real ``python -m data_plane``
replicas against a real control plane, publishing them in its endpoints file; a client balancing over
them with :func:`clients.sdk.fleet.fleet_target` and round robin; ``aetherctl fleet status``; and the
fleet's settings (environment, then flags)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc.aio
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from clients.aether.v1 import inference_pb2_grpc as pb_grpc
from clients.env_values import ConfigurationError
from clients.errors import InvalidArgument, Unavailable
from clients.sdk.auth import open_aio_channel
from clients.sdk.fleet import ROUND_ROBIN, FleetEndpoints, FleetReplica, fleet_target, read_endpoints
from clients.sdk.inference import build_predict_request
from clients.sdk.online import data_plane_channel_options
from control_plane.cli import fleet as fleet_cli
from control_plane.cli.main import build_parser, main
from control_plane.cli.settings import CliSettings
from control_plane.deployments.autoscale_loop import fetch_metrics, parse_metrics
from control_plane.deployments.autoscaler import AutoscalerPolicy
from control_plane.deployments.fleet import (
    STOP_MARGIN_S,
    FleetSettings,
    FleetStopped,
    hold_home,
    replica_stop_timeout,
    run_fleet,
    write_endpoints,
)
from control_plane.deployments.replica import ReplicaSettings
from control_plane.deployments.replicas import ReplicaManager
from data_plane.models.spec import dump_model_config
from tests.integration.closed_loop.models import slow_on_features
from tests.integration.deployments.conftest import Plane
from tests.support import onnx_models

REPO = Path(__file__).resolve().parents[3]
# Scale on queue depth only (latency never decides), at once on load, after 1 s without it.
POLICY_FLAGS = (
    "--min", "1", "--max", "2", "--interval-s", "0.3", "--target-queue-per-replica", "2",
    "--target-p99-ms", "60000", "--up-window-s", "0", "--down-window-s", "1",
)  # fmt: skip
CLIENTS = 8


def test_settings_come_from_the_environment_and_flags_override_them(tmp_path: Path) -> None:
    env = {
        "AETHER_HOME": str(tmp_path),
        "AETHER_CONTROL_PLANE_ADDR": "127.0.0.1:7001",
        "AETHER_REDIS_URL": "redis://127.0.0.1:7002/3",
        "AETHER_MIN_REPLICAS": "2",
        "AETHER_MAX_REPLICAS": "6",
        "AETHER_AUTOSCALE_INTERVAL_S": "5",
        "AETHER_TARGET_P99_MS": "80",
        "AETHER_AUTOSCALE_DOWN_WINDOW_S": "30",
    }
    from_env = FleetSettings.from_env(env)
    assert from_env.endpoints_path == tmp_path / "fleet" / "endpoints.json"
    assert (from_env.control_plane_addr, from_env.redis_url) == ("127.0.0.1:7001", "redis://127.0.0.1:7002/3")
    assert from_env.policy == AutoscalerPolicy(
        min_replicas=2, max_replicas=6, interval_s=5.0, target_p99_ms=80.0, down_window_s=30.0
    )

    parser = build_parser(CliSettings.from_env(env))
    argv = ["fleet", "run", "--max", "3", "--target-queue-per-replica", "4", "--redis-url", "redis://h:1/0"]
    args = parser.parse_args([*argv, "--", "--model-config", "m.json"])
    settings = fleet_cli.settings_from_args(args, env)
    assert settings.policy == dataclasses.replace(
        from_env.policy, max_replicas=3, target_queue_per_replica=4.0
    )
    assert (settings.control_plane_addr, settings.redis_url) == ("127.0.0.1:7001", "redis://h:1/0")
    assert settings.replica_args == ("--model-config", "m.json") and settings.home == tmp_path

    args = parser.parse_args(["--control-plane", "10.0.0.1:9", "fleet", "run", "--up-window-s", "0"])
    settings = fleet_cli.settings_from_args(args, env)
    assert settings.control_plane_addr == "10.0.0.1:9" and settings.policy.up_window_s == 0.0
    assert settings.replica_args == ()

    with pytest.raises(ConfigurationError, match="7 \\(--min\\)"):  # > max 6: refused before anything starts
        fleet_cli.settings_from_args(parser.parse_args(["fleet", "run", "--min", "7"]), env)
    with pytest.raises(ConfigurationError, match="AETHER_MIN_REPLICAS: expected a whole number >= 1"):
        FleetSettings.from_env({"AETHER_MIN_REPLICAS": "two"})


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("AETHER_MIN_REPLICAS", "abc", "a whole number >= 1"),
        ("AETHER_MIN_REPLICAS", "-1", "a whole number >= 1"),
        ("AETHER_AUTOSCALE_INTERVAL_S", "nan", "a number > 0"),
        ("AETHER_TARGET_P99_MS", "inf", "a number > 0"),
    ],
)
def test_fleet_run_refuses_a_bad_policy_variable_in_one_line_with_exit_2(
    tmp_path: Path, variable: str, value: str, expected: str
) -> None:
    """As a user runs it: the variable named with its range, exit 2 like every other AETHER_* setting,
    before any replica starts or the endpoints file is written. It was exit 1 with "INVALID_ARGUMENT:
    autoscaler settings: invalid literal for int() with base 10: 'abc'", or a message naming the policy's
    field (interval_s) rather than the variable."""
    env = dict(os.environ, AETHER_HOME=str(tmp_path), **{variable: value})
    done = subprocess.run(
        [sys.executable, "-m", "control_plane.cli.main", "fleet", "run"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    message = f"error: {variable}: expected {expected}, got {value!r}\n"
    assert (done.returncode, done.stdout, done.stderr) == (2, "", message)
    assert not (tmp_path / "fleet").exists()


def test_flags_are_merged_with_the_environment_before_the_policy_is_checked(tmp_path: Path) -> None:
    # AETHER_MIN_REPLICAS=5 is wrong only with the default max (4), which --max replaces.
    env = {"AETHER_HOME": str(tmp_path), "AETHER_MIN_REPLICAS": "5", "AETHER_AUTOSCALE_UP_WINDOW_S": "7"}
    parser = build_parser(CliSettings.from_env(env))
    settings = fleet_cli.settings_from_args(parser.parse_args(["fleet", "run", "--max", "10"]), env)
    assert settings.policy == AutoscalerPolicy(min_replicas=5, max_replicas=10, up_window_s=7.0)
    # No flag: the default max holds.
    with pytest.raises(
        ConfigurationError, match=r"5 \(AETHER_MIN_REPLICAS\), is more than the most, 4 \(the def"
    ):
        fleet_cli.settings_from_args(parser.parse_args(["fleet", "run"]), env)
    with pytest.raises(ConfigurationError, match=r"11 \(--min\), is more than the most, 10 \(--max\)"):
        fleet_cli.settings_from_args(parser.parse_args(["fleet", "run", "--min", "11", "--max", "10"]), env)


@pytest.mark.parametrize(
    ("flags", "env", "expected"),
    [
        (
            ["--min", "5"],
            {},
            "the fewest replicas, 5 (--min), is more than the most, 4 (the default; set --max or "
            "AETHER_MAX_REPLICAS)",
        ),
        (
            ["--min", "3"],
            {"AETHER_MAX_REPLICAS": "2"},
            "the fewest replicas, 3 (--min), is more than the most, 2 (AETHER_MAX_REPLICAS)",
        ),
        (
            ["--max", "2"],
            {"AETHER_MIN_REPLICAS": "3"},
            "the fewest replicas, 3 (AETHER_MIN_REPLICAS), is more than the most, 2 (--max)",
        ),
    ],
)
def test_fleet_run_with_more_min_than_max_replicas_says_where_each_came_from(
    tmp_path: Path, flags: list[str], env: dict[str, str], expected: str
) -> None:
    """It was exit 1 with "INVALID_ARGUMENT: replicas need 1 <= min (5) <= max (4)" for `--min 5` alone:
    not a flag's name, nor that the 4 was a default, nor how to change it."""
    done = subprocess.run(
        [sys.executable, "-m", "control_plane.cli.main", "fleet", "run", *flags],
        env=dict(os.environ, AETHER_HOME=str(tmp_path), **env), cwd=REPO, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert (done.returncode, done.stdout, done.stderr) == (2, "", f"error: {expected}\n")
    assert not (tmp_path / "fleet").exists()


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--min", "0", "expected a whole number from 1 to"),
        ("--max", "1.5", "expected a whole number from 1 to"),
        ("--interval-s", "nan", "expected a number of seconds above 0"),
        ("--interval-s", "0", "expected a number of seconds above 0"),
        ("--interval-s", "1e10", "expected a number of seconds above 0 and at most 31536000 (one year)"),
        ("--target-p99-ms", "inf", "expected a finite number"),
        ("--target-queue-per-replica", "-1", "expected a number above 0"),
        ("--up-window-s", "-1", "expected a number of seconds, 0 or more"),
        ("--down-window-s", "nan", "expected a finite number"),
    ],
)
def test_a_bad_policy_flag_is_a_usage_error_naming_the_flag(
    flag: str, value: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """As the variables are: it was exit 1 with INVALID_ARGUMENT naming the policy's field (interval_s),
    which the user never typed."""
    parser = build_parser(CliSettings.from_env({}))
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["fleet", "run", f"{flag}={value}"])
    assert exit_.value.code == 2
    assert f"argument {flag}: {expected}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("replica_args", "flag"),
    [
        (["--listen", "127.0.0.1:9000"], "--listen"),
        (["--model-config", "m.json", "--listen=127.0.0.1:9000"], "--listen"),
        (["--metrics-listen", "127.0.0.1:9100"], "--metrics-listen"),
        (["--metrics-listen="], "--metrics-listen"),
        (["--snapshot-path", "/tmp/shared.pb"], "--snapshot-path"),
    ],
)
def test_a_replica_flag_the_fleet_sets_itself_is_refused_naming_it(
    tmp_path: Path, replica_args: list[str], flag: str
) -> None:
    """Given after --, it came later on every replica's command line than the fleet's own, so it won: with
    `-- --listen 127.0.0.1:9000` the first replica took the port and every other start failed on it, at
    every interval for ever, the fleet stuck at one replica; a fixed metrics port did the same, an empty
    one left every start waiting for a metrics line that never came, and a shared --snapshot-path had every
    replica writing one file. Refused before anything starts (fleet run exits 2)."""
    parser = build_parser(CliSettings.from_env({"AETHER_HOME": str(tmp_path)}))
    with pytest.raises(
        ConfigurationError, match=f"^{flag} after --: the fleet sets it for each replica: .*; leave it out$"
    ):
        fleet_cli.settings_from_args(parser.parse_args(["fleet", "run", "--", *replica_args]), {})


@pytest.mark.parametrize(
    ("replica_args", "flag", "got"),
    [
        (["--drain-delay-s=abc"], "--drain-delay-s", "got 'abc'"),
        (["--model-config", "m.json", "--drain-grace-s", "5s"], "--drain-grace-s", "got '5s'"),
        (["--drain-grace-s"], "--drain-grace-s", "got nothing"),
    ],
)
def test_a_replica_drain_flag_that_is_no_number_is_refused_in_one_line_with_exit_2(
    tmp_path: Path, replica_args: list[str], flag: str, got: str
) -> None:
    """The fleet reads a drain flag given after -- itself, for its stop timeout, with an argparse parser of
    its own: a value that was no number (or none) ended `fleet run` after its start line with that
    parser's usage, `usage: main.py [--drain-delay-s DRAIN_DELAY_S] [--drain-grace-s DRAIN_GRACE_S]`,
    naming neither `fleet run` nor that the flag was one of the replicas'. Refused before anything starts,
    as the fleet's own drain flags are."""
    env = dict(os.environ, AETHER_HOME=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-m", "control_plane.cli.main", "fleet", "run", "--", *replica_args],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    message = f"error: {flag} after --: expected a number of seconds, 0 or more, {got}\n"
    assert (done.returncode, done.stdout, done.stderr) == (2, "", message)
    assert not (tmp_path / "fleet").exists()


def test_the_fleet_target_names_every_ready_replica(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "fleet" / "endpoints.json"
    with pytest.raises(Unavailable, match="no fleet endpoints file"):
        fleet_target(path)
    assert main(["fleet", "status", "--endpoints", str(path)]) == 1
    assert "error: UNAVAILABLE: no fleet endpoints file at" in capsys.readouterr().err

    replicas = (
        FleetReplica(0, "127.0.0.1:4001", "127.0.0.1:5001", 11),
        FleetReplica(3, "127.0.0.2:4002", "", 12),
    )
    write_endpoints(path, FleetEndpoints(replicas, "2026-01-01T00:00:00.000Z", os.getpid()))
    assert read_endpoints(path).replicas == replicas
    assert fleet_target(path) == "ipv4:127.0.0.1:4001,127.0.0.2:4002"
    assert [p.name for p in path.parent.iterdir()] == ["endpoints.json"]  # no temporary file left behind

    write_endpoints(path, FleetEndpoints((FleetReplica(0, "[::1]:4001", "", 11),), "t", 1))
    assert fleet_target(path) == "ipv6:[::1]:4001"
    write_endpoints(path, FleetEndpoints((FleetReplica(0, "localhost:4001", "", 11),), "t", 1))
    with pytest.raises(InvalidArgument, match="not IP:PORT"):
        fleet_target(path)
    write_endpoints(path, FleetEndpoints((), "t", 1))
    with pytest.raises(Unavailable, match="no ready replica"):
        fleet_target(path)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b'\xff\xfe{"replicas": []}', "'utf-8' codec can't decode byte 0xff"),
        (b'{"replicas": [], "updated_at": "x", "pid": 1e400}', "cannot convert float infinity to integer"),
        (b'{"replicas": [], "updated_at": "x", "pid": 99999999999999999999}', "is not a process id"),
        (b'{"replicas": [{"number": 0, "address": "127.0.0.1:1", "pid": -5}]}', "pid -5 is not a process id"),
        (b"[" * 100_000, "maximum recursion depth"),
    ],
    ids=["not-utf8", "pid-inf", "pid-huge", "pid-negative", "nested"],
)
def test_a_file_that_is_not_an_endpoints_file_is_one_line(
    tmp_path: Path, content: bytes, reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not UTF-8, a pid of 1e400, a pid os.kill cannot take: each was a traceback (UnicodeDecodeError,
    OverflowError) from both ``aetherctl fleet status`` and the SDK's fleet_target."""
    path = tmp_path / "endpoints.json"
    path.write_bytes(content)
    with pytest.raises(
        InvalidArgument, match=f"{re.escape(str(path))} is not a fleet endpoints file: .*{re.escape(reason)}"
    ):
        fleet_target(path)
    assert main(["fleet", "status", "--endpoints", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: INVALID_ARGUMENT: {path} is not a fleet endpoints file: ")
    assert reason in err and len(err.splitlines()) == 1


def _replicas(path: Path) -> tuple[FleetReplica, ...]:
    try:
        return read_endpoints(path).replicas
    except Unavailable:  # the fleet has not written its file yet
        return ()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def _wait(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def _predict(stub: pb_grpc.InferenceStub) -> None:
    request = build_predict_request(
        "slow", [{"driver_id": 1}], request_features=[{f"f{i}": 0.5 for i in range(4)}]
    )
    await stub.Predict(request, timeout=20)


async def _load(target: str, stop: asyncio.Event) -> int:
    """Closed-loop load from CLIENTS callers over one round-robin channel; the requests answered."""
    answered = 0

    async def caller(stub: pb_grpc.InferenceStub) -> None:
        nonlocal answered
        while not stop.is_set():
            await _predict(stub)
            answered += 1

    async with open_aio_channel(target, options=[ROUND_ROBIN]) as channel:
        stub = pb_grpc.InferenceStub(channel)  # type: ignore[no-untyped-call]
        await asyncio.gather(*(caller(stub) for _ in range(CLIENTS)))
    return answered


async def _served(metrics_address: str) -> float:
    """Requests the replica has answered, from its own Prometheus histogram."""
    return parse_metrics(await fetch_metrics(metrics_address)).latency_buckets.get(float("inf"), 0.0)


async def _health(address: str) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        return int(answer.status)


async def test_the_fleet_scales_with_load_and_drains_on_sigterm(
    plane: Plane, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A slow model (~10 ms a row, one row at a time): 8 callers keep ~8 requests in flight on one replica.
    spec = onnx_models.save(
        slow_on_features(), tmp_path / "slow.onnx", "slow",
        feature_refs=tuple(f"request:f{i}" for i in range(4)), max_batch_size=1,
    )  # fmt: skip
    dump_model_config([spec], tmp_path / "models.json")
    home = tmp_path / "fleet-home"
    path = home / "fleet" / "endpoints.json"
    env = dict(
        os.environ,
        AETHER_HOME=str(home),
        AETHER_CONTROL_PLANE_ADDR=plane.address,
        AETHER_REDIS_URL=plane.redis_url,
    )
    replica_flags = ("--model-config", str(tmp_path / "models.json"), "--prediction-log-sample-rate", "0")
    with (tmp_path / "fleet.log").open("wb") as log:
        fleet = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "control_plane.cli.main", "fleet", "run", *POLICY_FLAGS,
            "--", *replica_flags, "--drain-delay-s", "0.1",
            stdout=asyncio.subprocess.PIPE, stderr=log, env=env, cwd=REPO,
        )  # fmt: skip
    seen: set[int] = set()  # every replica process the fleet started
    stop = asyncio.Event()
    load: asyncio.Task[int] | None = None
    try:
        await _wait(lambda: len(_replicas(path)) == 1, 60, "the fleet starts min_replicas")
        (first,) = _replicas(path)
        seen.add(first.pid)
        load = asyncio.create_task(_load(fleet_target(path), stop))

        await _wait(lambda: len(_replicas(path)) == 2, 60, "load scales the fleet up")
        second = _replicas(path)[1]
        seen.add(second.pid)
        assert _replicas(path)[0] == first and second.number == 1
        for replica in (first, second):
            assert await _health(replica.address) == health_pb2.HealthCheckResponse.SERVING
        # Only a client that reads the new list reaches the new replica; round robin then spreads over both.
        assert await _served(second.metrics_address) == 0
        target = fleet_target(path)
        assert target == f"ipv4:{first.address},{second.address}"
        async with open_aio_channel(target, options=[ROUND_ROBIN]) as channel:
            stub = pb_grpc.InferenceStub(channel)  # type: ignore[no-untyped-call]
            deadline = time.monotonic() + 10
            while await _served(second.metrics_address) == 0:
                assert time.monotonic() < deadline, "round robin never reached the second replica"
                await asyncio.gather(*(_predict(stub) for _ in range(CLIENTS)))

        stop.set()
        assert await load > 0
        load = None
        await _wait(lambda: len(_replicas(path)) == 1, 30, "no load scales the fleet down")
        assert _replicas(path) == (first,)  # the newest replica left: unlisted, then drained
        await _wait(lambda: not _alive(second.pid), 30, "the replica that left exits")

        assert await asyncio.to_thread(main, ["fleet", "status", "--endpoints", str(path)]) == 0
        status = capsys.readouterr().out
        assert f"fleet process {fleet.pid} (running)" in status
        assert f"0        {first.address}  {first.metrics_address}  {first.pid}  SERVING" in status

        fleet.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(fleet.wait(), 30) == 0
        assert read_endpoints(path).replicas == ()
        assert not _alive(first.pid)
        assert fleet.stdout is not None
        lines = (await fleet.stdout.read()).decode().splitlines()
        assert lines[0].endswith(f"endpoints file {path}")
        assert lines[1] == f"1 replica ready: {first.address}"
        assert lines[2].startswith("scaled to 2 replicas (queue ")
        assert lines[2].endswith(f"): {first.address}, {second.address}")
        assert lines[3].startswith("scaled to 1 replica (queue 0, ") and lines[3].endswith(
            f"): {first.address}"
        )
        assert lines[4:] == ["0 replicas ready: -", "aether fleet stopped: every replica drained"]
    finally:
        stop.set()
        if load is not None:
            load.cancel()
        if fleet.returncode is None:
            fleet.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(fleet.wait(), 30)
            except TimeoutError:
                fleet.kill()
                await fleet.wait()
        for pid in seen:  # replicas of a fleet that did not drain them
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


async def test_a_second_fleet_on_the_same_home_is_refused_in_one_line(plane: Plane, tmp_path: Path) -> None:
    """A second fleet on the same home was accepted: it overwrote the first one's endpoints file, emptied
    it on its stop while the first still served, and started its replicas in the first one's folders."""
    home = tmp_path / "fleet-home"
    path = home / "fleet" / "endpoints.json"
    env = dict(
        os.environ,
        AETHER_HOME=str(home),
        AETHER_CONTROL_PLANE_ADDR=plane.address,
        AETHER_REDIS_URL=plane.redis_url,
    )
    command = [sys.executable, "-m", "control_plane.cli.main", "fleet", "run", "--min", "1", "--max", "1"]
    first = await asyncio.create_subprocess_exec(
        *command, env=env, cwd=REPO, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        await _wait(lambda: len(_replicas(path)) == 1, 60, "the first fleet starts its replica")
        listed = read_endpoints(path)
        second = await asyncio.to_thread(
            subprocess.run, command, env=env, cwd=REPO, capture_output=True, text=True, timeout=20
        )
        assert (second.returncode, second.stdout) == (1, "")
        assert second.stderr == (
            f"error: FAILED_PRECONDITION: a fleet (pid {first.pid}) is already running with this home "
            f"({home}); stop it first, or give this one another AETHER_HOME\n"
        )
        assert read_endpoints(path) == listed  # untouched
        assert [p.name for p in (home / "fleet" / "replicas").iterdir()] == ["replica-0"]
        first.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(first.wait(), 30) == 0
        with hold_home(home):  # released with its fleet
            pass
    finally:
        if first.returncode is None:
            first.kill()
            await first.wait()


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--bogus-flag"], "unrecognized arguments: --bogus-flag"),
        # A value the data plane's settings refuse (a --metrics-listen port of 99999 was the example here,
        # once an OverflowError traceback; the fleet now refuses any --metrics-listen itself).
        (["--max-queue-size", "0"], "--max-queue-size: expected a whole number >= 1, got '0'"),
    ],
)
async def test_a_replica_flag_the_data_plane_refuses_stops_the_fleet_with_one_error(
    plane: Plane, tmp_path: Path, flags: list[str], said: str
) -> None:
    """``fleet run -- --bogus-flag``: every replica exits 2 (a usage error) before serving. The fleet
    restarted it every interval for ever, logging "exited with status 2 before serving" with neither the
    replica's error nor its log. It now stops at once: exit 1, one error quoting the replica's stderr and
    naming its log, and an empty endpoints file. A flag value the settings refuse is such an error too."""
    home = tmp_path / "fleet-home"
    env = dict(
        os.environ,
        AETHER_HOME=str(home),
        AETHER_CONTROL_PLANE_ADDR=plane.address,
        AETHER_REDIS_URL=plane.redis_url,
    )
    command = [
        sys.executable, "-m", "control_plane.cli.main", "fleet", "run", "--min", "1", "--max", "1",
        "--interval-s", "0.3", "--", *flags,
    ]  # fmt: skip
    try:
        ran = await asyncio.to_thread(
            subprocess.run, command, env=env, cwd=REPO, capture_output=True, text=True, timeout=120
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"the fleet kept restarting the replica: {exc.stderr!r}") from None
    assert ran.returncode == 1, ran.stderr
    log = home / "fleet" / "replicas" / "replica-0" / "stderr.log"
    error = ran.stderr[ran.stderr.index("error: FAILED_PRECONDITION: ") :]
    assert error.startswith(
        "error: FAILED_PRECONDITION: data-plane replica 0 exited with status 2 before serving: a usage or"
        " settings error, which every restart would repeat, so the fleet stops"
    ), ran.stderr
    assert said in error and error.endswith(f"(its log: {log})\n")
    assert "failed to start" not in ran.stderr  # one error, not one per restart
    assert _replicas(home / "fleet" / "endpoints.json") == ()


async def test_a_replica_exit_2_after_the_fleet_served_is_retried_not_fatal(
    plane: Plane, tmp_path: Path
) -> None:
    """The data plane also exits 2 when its --model-config cannot be read or is not JSON at that moment
    (a file mid-write). A fleet that served with its command line took such an exit, by a replacement
    started while the file was half written, for a usage error and stopped whole, healthy replicas
    included. Only the fleet's first start may stop it so; here the replacement is retried and serves
    once the file is whole again, the fleet running throughout."""
    models = tmp_path / "models.json"
    dump_model_config([], models)
    home = tmp_path / "fleet-home"
    path = home / "fleet" / "endpoints.json"
    env = dict(
        os.environ,
        AETHER_HOME=str(home),
        AETHER_CONTROL_PLANE_ADDR=plane.address,
        AETHER_REDIS_URL=plane.redis_url,
    )
    fleet_log = tmp_path / "fleet.log"
    with fleet_log.open("wb") as log:
        fleet = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "control_plane.cli.main", "fleet", "run", "--min", "1", "--max", "1",
            "--interval-s", "0.3", "--", "--model-config", str(models),
            stdout=asyncio.subprocess.DEVNULL, stderr=log, env=env, cwd=REPO,
        )  # fmt: skip
    seen: set[int] = set()
    try:
        await _wait(lambda: len(_replicas(path)) == 1, 60, "the fleet serves")
        (first,) = _replicas(path)
        seen.add(first.pid)
        models.write_text('{"models": [')  # an editor's write in progress
        os.kill(first.pid, signal.SIGKILL)  # the replica dies meanwhile (the OOM killer, say)

        def refused_once() -> bool:  # a replacement read the half-written file and exited 2
            return "exited with status 2 before serving" in fleet_log.read_text(errors="replace")

        await _wait(lambda: refused_once() or fleet.returncode is not None, 60, "a replacement starts")
        assert fleet.returncode is None, fleet_log.read_text(errors="replace")
        dump_model_config([], models)  # the file is whole again

        def replaced() -> bool:
            listed = _replicas(path)
            return len(listed) == 1 and listed[0].pid != first.pid

        await _wait(lambda: replaced() or fleet.returncode is not None, 60, "the fleet serves again")
        assert fleet.returncode is None, fleet_log.read_text(errors="replace")
        (again,) = _replicas(path)
        seen.add(again.pid)
        assert await _health(again.address) == health_pb2.HealthCheckResponse.SERVING
        said = fleet_log.read_text(errors="replace")
        assert f"(its log: {home / 'fleet' / 'replicas' / 'replica-0' / 'stderr.log'})" in said
        fleet.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(fleet.wait(), 30) == 0
    finally:
        if fleet.returncode is None:
            fleet.kill()
            await fleet.wait()
        for pid in seen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


class _Replica:
    """A gRPC server with the health service and a Predict that counts its calls (or refuses them)."""

    def __init__(self, refuse: bool = False) -> None:
        self.calls = 0
        self.refuse = refuse
        self.server = grpc.aio.server()
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)

        async def predict(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
            self.calls += 1
            if self.refuse:  # what a draining data plane answers once its drain delay is over
                await context.abort(grpc.StatusCode.UNAVAILABLE, "draining")
            return b""

        handler = grpc.unary_unary_rpc_method_handler(predict)
        self.server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler("aether.v1.Inference", {"Predict": handler})]
        )
        self.address = f"127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"


async def test_a_fleet_channel_sends_nothing_to_a_replica_once_it_is_not_serving() -> None:
    """A scale-down under load refused ~25% of the calls with UNAVAILABLE: the channel kept sending to the
    leaving replica, unlisted and NOT_SERVING, until its connection closed."""
    replicas = [_Replica(), _Replica()]
    for replica in replicas:
        await replica.server.start()
    try:
        target = "ipv4:" + ",".join(r.address for r in replicas)
        async with open_aio_channel(target, options=[ROUND_ROBIN]) as channel:
            predict = channel.unary_unary("/aether.v1.Inference/Predict")
            deadline = time.monotonic() + 5
            while not all(r.calls for r in replicas):  # until both are connected and known SERVING
                await predict(b"", timeout=5)
                assert time.monotonic() < deadline, "a SERVING replica gets no calls"
            before = [r.calls for r in replicas]
            for _ in range(10):
                await predict(b"", timeout=5)
            assert [r.calls - b for r, b in zip(replicas, before, strict=True)] == [5, 5]  # round robin
            await replicas[1].health.enter_graceful_shutdown()  # what a drain does first
            deadline = time.monotonic() + 5
            while True:  # the channel hears of it over its health watch, within a round trip
                before = replicas[1].calls
                for _ in range(20):
                    await predict(b"", timeout=5)
                if replicas[1].calls == before:
                    break
                assert time.monotonic() < deadline, "the NOT_SERVING replica still gets calls"
    finally:
        for replica in replicas:
            await replica.server.stop(0)


async def test_a_fleet_channel_retries_a_refused_inference_call_on_another_replica() -> None:
    """A call that reaches a replica refusing it (sent just before the health update) is answered by the
    next one instead of failing."""
    replicas = [_Replica(), _Replica(refuse=True)]
    for replica in replicas:
        await replica.server.start()
    try:
        target = "ipv4:" + ",".join(r.address for r in replicas)
        async with open_aio_channel(target, options=[ROUND_ROBIN]) as channel:
            predict = channel.unary_unary("/aether.v1.Inference/Predict")
            for _ in range(6):
                await predict(b"", timeout=5)
        assert replicas[0].calls == 6 and replicas[1].calls > 0
    finally:
        for replica in replicas:
            await replica.server.stop(0)


async def test_a_client_of_one_data_plane_is_not_held_back_by_its_health() -> None:
    """Health checking is for fleets: a client of one address still reaches a data plane whose overall
    health is NOT_SERVING (no registry yet), which answers ModelInfer of its static models."""
    replica = _Replica()
    await replica.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    await replica.server.start()
    try:
        options = data_plane_channel_options(replica.address)
        async with open_aio_channel(replica.address, options=list(options)) as channel:
            await channel.unary_unary("/aether.v1.Inference/Predict")(b"", timeout=5)
        assert replica.calls == 1
        assert ROUND_ROBIN not in options
        assert ROUND_ROBIN in data_plane_channel_options(f"ipv4:{replica.address},127.0.0.1:9")
        assert ROUND_ROBIN in data_plane_channel_options(f"ipv4:{replica.address}")  # a fleet of one
    finally:
        await replica.server.stop(0)


def test_a_replica_is_given_its_drain_delay_and_grace_before_it_is_killed() -> None:
    """The stop timeout was a fixed 30 s: replicas told to drain for 35 s were killed mid-drain while the
    fleet still said "every replica drained". It follows the replicas' flags, then the fleet's settings."""
    args = ("--model-config", "m.json", "--drain-delay-s", "30", "--drain-grace-s=5")
    assert replica_stop_timeout(args, 0.5, 5.0) == 35 + STOP_MARGIN_S
    assert replica_stop_timeout(("--drain-grace-s", "1"), 40.0, 20.0) == 41 + STOP_MARGIN_S


def test_the_fleets_drain_settings_are_told_to_every_replica_and_set_its_stop_timeout(tmp_path: Path) -> None:
    """The fleet computed its stop timeout from a copy of the data plane's default drain times (when no
    flag or variable said otherwise) and left the replicas to their own defaults: the two could differ.
    The drain times are now the fleet's settings (variables, then flags), passed to every replica."""
    env = {"AETHER_HOME": str(tmp_path), "AETHER_DRAIN_DELAY_S": "1.5", "AETHER_DRAIN_GRACE_S": "2"}
    replica = FleetSettings.from_env(env).replica_settings()
    assert replica.extra_args == ("--drain-delay-s", "1.5", "--drain-grace-s", "2")
    assert replica.stop_timeout_s == 3.5 + STOP_MARGIN_S
    defaults = FleetSettings(home=tmp_path).replica_settings()
    assert defaults.extra_args == ("--drain-delay-s", "0.5", "--drain-grace-s", "5")
    assert defaults.stop_timeout_s == 5.5 + STOP_MARGIN_S

    parser = build_parser(CliSettings.from_env(env))
    args = parser.parse_args(["fleet", "run", "--drain-delay-s", "0", "--", "--drain-grace-s", "7"])
    replica = fleet_cli.settings_from_args(args, env).replica_settings()
    # A replica flag after -- comes later on its command line, so it wins there and in the timeout.
    assert replica.extra_args == ("--drain-delay-s", "0", "--drain-grace-s", "2", "--drain-grace-s", "7")
    assert replica.stop_timeout_s == 7 + STOP_MARGIN_S
    with pytest.raises(ConfigurationError, match="AETHER_DRAIN_GRACE_S: expected a number >= 0"):
        FleetSettings.from_env({**env, "AETHER_DRAIN_GRACE_S": "-1"})


async def test_a_replica_killed_for_overrunning_its_stop_timeout_is_counted(plane: Plane) -> None:
    """What lets `fleet run` say so in its last line (and exit 1) instead of "every replica drained"."""
    manager = ReplicaManager(
        ReplicaSettings(
            plane.address, plane.redis_url, plane.home / "replicas", stop_timeout_s=0.5,
            extra_args=("--drain-delay-s", "20"),
        )
    )  # fmt: skip
    try:
        await manager.scale_to(1)
    finally:
        await manager.close()
    assert (manager.killed, manager.hung) == (1, 0)


def test_only_a_drain_cut_short_fails_the_stop_and_a_hung_replica_is_said_apart() -> None:
    """A hung replica is SIGKILLed too, but while the fleet runs, in place of one that had stopped
    answering (as a crashed one is replaced): its kill is no drain the stop cut short."""
    hung = "1 hung replica(s) were killed and replaced while it ran"
    assert fleet_cli.stop_report(FleetStopped()) == ("aether fleet stopped: every replica drained", 0)
    assert fleet_cli.stop_report(FleetStopped(hung=1)) == (
        f"aether fleet stopped: every replica drained; {hung}",
        0,
    )
    assert fleet_cli.stop_report(FleetStopped(killed=2, hung=1)) == (
        f"aether fleet stopped: 2 replica(s) killed for not draining in time; {hung}",
        1,
    )
    stalled = "1 stalled replica(s) killed at once (an event loop that does not run cannot drain)"
    assert fleet_cli.stop_report(FleetStopped(killed=2, stalled=1)) == (
        f"aether fleet stopped: {stalled}; 2 replica(s) killed for not draining in time",
        1,
    )


async def test_a_crashed_replicas_replacement_is_not_reported_as_a_scaling(
    plane: Plane, tmp_path: Path
) -> None:
    """Every change of the list while the loop ran was attributed to its latest decision, so a crash and
    its replacement printed "scaled to 0 replicas (queue 0, p99 n/a)" then "scaled to 1 replica ...":
    an operator read a scale-down and a scale-up the autoscaler never decided. Only a change a decision
    applies names it; any other (a replica replaced) says the replicas ready, as at the start."""
    policy = AutoscalerPolicy(min_replicas=1, max_replicas=1, interval_s=0.2)
    settings = FleetSettings(tmp_path / "home", plane.address, plane.redis_url, policy)
    changes: list[tuple[int, object]] = []
    stop = asyncio.Event()
    fleet = asyncio.create_task(
        run_fleet(settings, stop, on_change=lambda e, cause: changes.append((len(e.replicas), cause)))
    )
    try:
        path = settings.endpoints_path
        await _wait(lambda: len(_replicas(path)) == 1, 60, "the fleet starts its replica")
        await asyncio.sleep(1.0)  # a few decisions, none of which changes anything
        (crashed,) = _replicas(path)
        changes.clear()
        os.kill(crashed.pid, signal.SIGKILL)
        await _wait(
            lambda: len(_replicas(path)) == 1 and _replicas(path)[0].pid != crashed.pid, 60, "replaced"
        )
        assert [count for count, _ in changes] == [0, 1]
        assert [cause for _, cause in changes] == [None, None], "a replacement reported as a scaling"
    finally:
        stop.set()
        await asyncio.wait_for(fleet, 60)


@pytest.mark.parametrize("nohup", [False, True], ids=["terminal", "nohup"])
async def test_a_fleet_whose_terminal_closes_drains_and_empties_its_list(
    plane: Plane, tmp_path: Path, nohup: bool
) -> None:
    """SIGHUP (the terminal or SSH session of `fleet run` gone) killed the fleet on the spot: its replicas
    were stopped by their lifeline, and its endpoints file kept naming them, so clients were sent to
    replicas that no longer existed. It now stops as on SIGTERM; run under nohup, it ignores SIGHUP."""
    home = tmp_path / "fleet-home"
    path = home / "fleet" / "endpoints.json"
    env = dict(
        os.environ,
        AETHER_HOME=str(home),
        AETHER_CONTROL_PLANE_ADDR=plane.address,
        AETHER_REDIS_URL=plane.redis_url,
    )
    fleet = await asyncio.create_subprocess_exec(
        *(["nohup"] if nohup else []),
        sys.executable, "-m", "control_plane.cli.main", "fleet", "run", "--min", "1", "--max", "1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=env, cwd=REPO,
    )  # fmt: skip
    replica = 0
    try:
        await _wait(lambda: len(_replicas(path)) == 1, 60, "the fleet starts its replica")
        replica = _replicas(path)[0].pid
        fleet.send_signal(signal.SIGHUP)
        if nohup:
            await asyncio.sleep(1.0)
            assert fleet.returncode is None and _replicas(path)[0].pid == replica
            fleet.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(fleet.wait(), 30) == 0
        assert read_endpoints(path).replicas == ()
        assert fleet.stdout is not None
        assert (await fleet.stdout.read()).decode().splitlines()[
            -1
        ] == "aether fleet stopped: every replica drained"
        await _wait(lambda: not _alive(replica), 10, "the replica outlived its fleet")
    finally:
        if fleet.returncode is None:
            fleet.kill()
            await fleet.wait()
        if replica and _alive(replica):
            os.kill(replica, signal.SIGKILL)
