"""``python -m clients.healthcheck HOST:PORT [SERVICE]``: exit 0 when the gRPC health service at the
address reports SERVING (for the service, or the whole server when none is named), 1 otherwise.

Used as the container health check of both planes (Dockerfile.gpu), so no extra probe binary is needed."""

from __future__ import annotations

import argparse
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients.sdk.auth import open_channel


def check(address: str, service: str = "", timeout_s: float = 3.0) -> bool:
    with open_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            answer = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError:
            return False
        return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("address", help="HOST:PORT")
    parser.add_argument("service", nargs="?", default="", help="service name (default: the whole server)")
    parser.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args(argv)
    serving = check(args.address, args.service, args.timeout)
    print("SERVING" if serving else "NOT SERVING")
    return 0 if serving else 1


if __name__ == "__main__":
    sys.exit(main())
