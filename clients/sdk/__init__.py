"""The Python SDK users call: thin, typed wrappers over the generated gRPC stubs."""
