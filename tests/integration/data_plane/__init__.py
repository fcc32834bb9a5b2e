"""Data-plane tests against a real redis-server and real loopback gRPC servers."""
