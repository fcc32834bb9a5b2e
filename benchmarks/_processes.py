"""Servers the benchmarks start as processes: start one and read the address it announces, stop it, wait
until a model it serves is ready."""

from __future__ import annotations

import signal
import subprocess
import time

import grpc

from clients.inference import grpc_predict_v2_pb2 as oip
from clients.inference import grpc_predict_v2_pb2_grpc as oip_grpc


def start(
    args: list[str], pattern: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], int]:
    """Starts ``args`` and returns the process and the port its first line (which holds ``pattern`` and
    ends ``:PORT``) announces."""
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    assert process.stdout is not None
    line = process.stdout.readline()
    if pattern not in line:
        process.kill()
        raise RuntimeError(f"{args[:3]} did not start: {line!r}")
    return process, int(line.strip().rsplit(":", 1)[1].split()[0])


def stop(process: subprocess.Popen[str] | subprocess.Popen[bytes], signum: int = signal.SIGTERM) -> None:
    """Asks ``process`` to stop with ``signum``; kills it if it has not within 15 s."""
    if process.poll() is None:
        process.send_signal(signum)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_ready(port: int, model: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = oip_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
        while time.monotonic() < deadline:
            try:
                if stub.ModelReady(oip.ModelReadyRequest(name=model), timeout=1).ready:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise RuntimeError(f"model {model} on port {port} did not become ready")
