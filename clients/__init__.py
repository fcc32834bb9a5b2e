"""Aether clients: the generated gRPC stubs (``clients.aether.v1``), the error tree
(``clients.errors``) and the Python SDK users call."""
