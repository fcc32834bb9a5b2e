"""The floor of the stack: a bare grpc.aio ``ModelInfer`` server (uvloop) that parses each request and
answers a constant tensor. Whatever a real server does beyond this costs throughput and latency.

``python -m benchmarks.floor_server --listen 127.0.0.1:0`` prints ``floor listening on HOST:PORT``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

import grpc
import grpc.aio
import numpy as np
import uvloop

from clients.inference import grpc_predict_v2_pb2 as pb


async def serve(listen: str) -> None:
    answer = pb.ModelInferResponse(model_name="mlp", model_version="1")
    answer.outputs.add(name="output", datatype="FP32", shape=[1, 1])
    answer.raw_output_contents.append(np.zeros(1, np.float32).tobytes())

    async def model_infer(request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        return answer

    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService",
        {
            "ModelInfer": grpc.unary_unary_rpc_method_handler(
                model_infer,
                request_deserializer=pb.ModelInferRequest.FromString,
                response_serializer=pb.ModelInferResponse.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(listen)
    await server.start()
    print(f"floor listening on {listen.rsplit(':', 1)[0]}:{port}", flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:0")
    uvloop.run(serve(parser.parse_args().listen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
