"""A host with an HTTP proxy set for the outside world (``http_proxy`` without a ``no_proxy`` naming the
loopback) still reaches its own servers: gRPC sent every channel, loopback ones too, to the proxy
(UNAVAILABLE), and the autoscaler's metrics scrape of its replicas went there as well. Each check runs in a
child process whose environment names a proxy that refuses every connection."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2_grpc

from clients.loopback import is_loopback_target
from tests.support.ports import refused_address

ROOT = Path(__file__).resolve().parents[2]


def _with_refusing_proxy(code: str) -> subprocess.CompletedProcess[str]:
    proxy = f"http://{refused_address()}"  # nothing listens there: a proxied connection is refused
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "http_proxy": proxy,
        "https_proxy": proxy,
        "grpc_proxy": proxy,
    }
    env.pop("no_proxy", None)
    env.pop("NO_PROXY", None)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def health_server() -> Iterator[int]:
    server = grpc.server(futures.ThreadPoolExecutor(2))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port
    server.stop(None)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_channel_to_this_host_bypasses_an_http_proxy(health_server: int, host: str) -> None:
    code = f"""
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from clients.sdk.auth import open_channel
target = "{host}:{health_server}"
with grpc.insecure_channel(target) as plain:  # the fault itself: gRPC's own channel goes to the proxy
    try:
        health_pb2_grpc.HealthStub(plain).Check(health_pb2.HealthCheckRequest(), timeout=5)
        print("plain reached")
    except grpc.RpcError as error:
        print("plain", error.code().name)
with open_channel(target) as channel:
    print(health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status)
"""
    done = _with_refusing_proxy(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["plain", "UNAVAILABLE", "1"]  # 1: SERVING


class _Metrics(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"aether_inference_in_flight 3\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_the_autoscalers_scrape_of_a_replica_bypasses_an_http_proxy() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Metrics)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        code = f"""
import asyncio
from control_plane.deployments.autoscale_loop import fetch_metrics
print(asyncio.run(fetch_metrics("127.0.0.1:{server.server_address[1]}")).strip())
"""
        done = _with_refusing_proxy(code)
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "aether_inference_in_flight 3"


@pytest.mark.parametrize(
    ("target", "loopback"),
    [
        ("127.0.0.1:50051", True),
        ("127.3.2.1:1", True),
        ("localhost:1", True),
        ("LOCALHOST:1", True),
        ("[::1]:50051", True),
        ("ipv4:127.0.0.1:50051", True),
        ("ipv6:[::1]:50051", True),
        ("dns:///localhost:50051", True),
        ("dns:localhost:50051", True),
        ("10.0.0.5:50051", False),
        ("[2001:db8::1]:50051", False),
        ("aether.example.com:443", False),
        ("localhost.example.com:443", False),
        ("unix:/tmp/aether.sock", False),
    ],
)
def test_which_targets_are_this_host(target: str, loopback: bool) -> None:
    assert is_loopback_target(target) is loopback
