"""gRPC servicers of the control plane: thin adapters from grpc.aio to the transport-free cores."""
