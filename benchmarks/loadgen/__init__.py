"""Closed-loop gRPC load generator (grpc.aio): ``python -m benchmarks.loadgen --help``."""
