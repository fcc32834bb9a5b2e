"""The latency path: a grpc.aio server (uvloop) serving online feature reads from Redis. It learns feature
schemas from the control plane's registry watch, keeps the last snapshot on disk, and never touches SQL."""
