"""``python -m data_plane --workers 2``: two processes serve one port (SO_REUSEPORT) from a static model
config, both answer, and SIGTERM stops them all."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from clients.sdk.inference import build_infer_request, decode_infer_response
from data_plane.models.spec import dump_model_config
from data_plane.registry_watch import save_snapshot
from tests.support import onnx_models
from tests.support.data_plane_process import start_data_plane
from tests.support.ports import refused_address
from tests.unit.data_plane.registry_builders import entity, floats, snapshot, view

pytestmark = pytest.mark.integration


def test_two_workers_share_one_port_and_stop_on_sigterm(redis_url: str, tmp_path: Path) -> None:
    spec = onnx_models.save(onnx_models.affine(), tmp_path / "affine.onnx", "affine")
    config = tmp_path / "models.json"
    dump_model_config([spec], config)
    process = subprocess.Popen(
        [
            sys.executable, "-m", "data_plane", "--workers", "2",
            "--listen", "127.0.0.1:0",
            "--redis-url", redis_url,
            "--control-plane", refused_address(),
            "--snapshot-path", str(tmp_path / "absent.pb"),
            "--model-config", str(config),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "AETHER_HOME": str(tmp_path / "home")},
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.fullmatch(r"aether data plane listening on 127\.0\.0\.1:(\d+)\n", line)
        assert match, line
        workers = subprocess.run(
            ["pgrep", "-P", str(process.pid)], capture_output=True, text=True
        ).stdout.split()
        assert len(workers) == 2
        answers = []
        for _ in range(8):  # each channel is a new connection, which the kernel spreads over the workers
            with grpc.insecure_channel(f"127.0.0.1:{match[1]}") as channel:
                stub = pb_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
                response = stub.ModelInfer(
                    build_infer_request("affine", {"x": np.ones((1, 4), np.float32)}), timeout=5
                )
                answers.append(decode_infer_response(response)["y"].tolist())
        assert answers == [[[3.0, 3.0, 3.0, 3.0]]] * 8
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
        assert all(not Path(f"/proc/{pid}").exists() for pid in workers)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _data_plane(redis_url: str, tmp_path: Path, name: str, *flags: str) -> subprocess.Popen[str]:
    return start_data_plane(redis_url, tmp_path / "home", tmp_path / f"{name}.pb", *flags)


def test_a_port_in_use_is_refused_with_one_line_with_or_without_workers(
    redis_url: str, tmp_path: Path
) -> None:
    # Port 0, then the port it names: a port picked beforehand and let go could be another's meanwhile.
    first = _data_plane(redis_url, tmp_path, "first", "--workers", "2", "--listen", "127.0.0.1:0")
    started = [first]
    try:
        assert first.stdout is not None
        line = first.stdout.readline()
        assert line.startswith("aether data plane listening on 127.0.0.1:"), line
        listen = line.split()[-1]
        # Another, independent data plane on the same port: with --workers (SO_REUSEPORT) it used to bind
        # next to the first and take half of its clients; without, it failed with a traceback.
        for flags in (("--workers", "2"), ()):
            second = _data_plane(redis_url, tmp_path, "second", *flags, "--listen", listen)
            started.append(second)
            out, err = second.communicate(timeout=30)
            assert second.returncode == 1, (flags, out, err)
            assert err.splitlines()[-1] == (
                f"python -m data_plane: error: cannot listen on {listen}: the address is already in use"
            )
            assert "Traceback" not in err and out == ""
    finally:
        for process in started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_a_worker_that_dies_stops_the_others_and_the_data_plane_exits_1(
    redis_url: str, tmp_path: Path
) -> None:
    """A worker killed (the OOM killer) was never replaced: its parent waited on the others, so the data
    plane stayed up, listed by its fleet, with less capacity and a metrics endpoint that failed every
    scrape. Now the others drain and the parent exits 1, for the replica manager to replace it whole."""
    with (tmp_path / "stderr.log").open("w") as stderr:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "data_plane", "--workers", "2", "--listen", "127.0.0.1:0",
                "--redis-url", redis_url, "--control-plane", refused_address(),
                "--snapshot-path", str(tmp_path / "absent.pb"), "--drain-delay-s", "0.1",
            ],
            stdout=subprocess.PIPE, stderr=stderr, text=True,
            env={**os.environ, "AETHER_HOME": str(tmp_path / "home")},
        )  # fmt: skip
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith("aether data plane listening on ")
        workers = [
            int(pid)
            for pid in subprocess.run(
                ["pgrep", "-P", str(process.pid)], capture_output=True, text=True
            ).stdout.split()
        ]
        assert len(workers) == 2
        os.kill(workers[0], signal.SIGKILL)
        assert process.wait(timeout=20) == 1
        assert all(not Path(f"/proc/{pid}").exists() for pid in workers)
        said = (tmp_path / "stderr.log").read_text()
        assert (
            f"a data-plane worker ended on its own (pid {workers[0]} with status -9); stopping the others, "
            "so that this data plane is replaced whole"
        ) in said
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.timeout(30)  # a missing line blocks readline: fail fast, not at the suite's 120 s
def test_the_serving_line_comes_once_every_worker_serves(redis_url: str, tmp_path: Path) -> None:
    # The replica manager listed a --workers data plane once one probe through the shared port said SERVING;
    # another worker could still be NOT_SERVING. It now waits for this line, printed once all workers serve.
    fv = view("stats", floats(3), entity="driver")
    save_snapshot(tmp_path / "snapshot.pb", snapshot(fv, entities=[entity()]).SerializeToString())
    process = subprocess.Popen(
        [
            sys.executable, "-m", "data_plane", "--workers", "2", "--listen", "127.0.0.1:0",
            "--redis-url", redis_url, "--control-plane", refused_address(),
            "--snapshot-path", str(tmp_path / "snapshot.pb"),
        ],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "AETHER_HOME": str(tmp_path / "home")},
    )  # fmt: skip
    try:
        assert process.stdout is not None
        match = re.fullmatch(
            r"aether data plane listening on 127\.0\.0\.1:(\d+)\n", process.stdout.readline()
        )
        assert match
        # Then each worker's own port (a probe through the shared one reaches one worker), then serving.
        own = re.fullmatch(r"aether data plane workers on (\S+)\n", process.stdout.readline())
        assert own and len(set(own[1].split(","))) == 2 and f"127.0.0.1:{match[1]}" not in own[1]
        # Then their pids, in the same order (a replica manager kills a hung one by it).
        pids = re.fullmatch(r"aether data plane worker pids (\d+),(\d+)\n", process.stdout.readline())
        children = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout
        assert pids and sorted(pids.groups()) == sorted(children.split())
        assert process.stdout.readline() == "aether data plane serving\n"
        for address in [*own[1].split(","), *[f"127.0.0.1:{match[1]}"] * 4]:  # each worker must say SERVING
            with grpc.insecure_channel(address) as channel:
                answer = health_pb2_grpc.HealthStub(channel).Check(  # type: ignore[no-untyped-call]
                    health_pb2.HealthCheckRequest(service=""), timeout=5
                )
                assert answer.status == health_pb2.HealthCheckResponse.SERVING
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=20)
        assert "aether data plane serving" not in rest  # once, not once per worker
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_a_hung_worker_outlives_its_killed_parent_only_for_its_drain(redis_url: str, tmp_path: Path) -> None:
    """The parent killed (SIGKILL: a supervisor's, the OOM killer), each worker's lifeline tells it to stop;
    a hung worker cannot, and its lifeline killed it only after the default 30 s, all that time on its
    ports. Now the lifeline gives a worker its drain delay + grace + a margin (here 0 + 0.5 + 3 s)."""
    process = _data_plane(
        redis_url, tmp_path, "hung", "--workers", "2", "--listen", "127.0.0.1:0",
        "--drain-delay-s", "0", "--drain-grace-s", "0.5",
    )  # fmt: skip
    try:
        assert process.stdout is not None
        while not (line := process.stdout.readline()).startswith("aether data plane worker pids "):
            assert line, "the data plane ended before naming its workers"
        hung, healthy = (int(pid) for pid in line.split()[-1].split(","))
        os.kill(hung, signal.SIGSTOP)  # a hung worker: its SIGTERM stays pending
        killed_at = time.monotonic()
        process.kill()
        process.wait()
        deadline = killed_at + 3.5 + 6  # the grace, and the watcher's polls on a loaded host
        while not (_gone(hung) and _gone(healthy)):
            assert time.monotonic() < deadline, "the workers outlived their drain"
            time.sleep(0.1)
        assert time.monotonic() - killed_at >= 3.0  # the hung one got its grace: it was not killed outright
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
