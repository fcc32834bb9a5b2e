"""Thin gRPC servicers over the data plane's transport-free cores."""
