"""The floor of the stack: a bare grpc.aio ``ModelInfer`` server (uvloop) that parses each request and
answers a constant tensor. Whatever a real server does beyond this costs throughput and latency.

With ``--model PATH`` it is the floor *with inference*: per request it reads the first raw input, runs
the ONNX model in ONNX Runtime on the event loop (CPU, one intra-op thread, no spinning: the data plane's
session settings) and answers its first output as raw bytes, with no validation, batching, metrics or
anything else (one row per request, as the benchmark sends). It is the least any Python gRPC server that
runs the model per request must pay: the distance from it to the data plane is what serving logic costs,
and its distance to the plain floor is what inference in the server process costs.

``python -m benchmarks.floor_server --listen 127.0.0.1:0 [--model PATH]`` prints
``floor listening on HOST:PORT``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import numpy as np
import uvloop

from clients.inference import grpc_predict_v2_pb2 as pb
from data_plane.wire import varint

_RAW_OUTPUT_TAG = b"\x32"  # ModelInferResponse.raw_output_contents = 6, length-delimited


def _constant() -> Any:
    answer = pb.ModelInferResponse(model_name="mlp", model_version="1")
    answer.outputs.add(name="output", datatype="FP32", shape=[1, 1])
    answer.raw_output_contents.append(np.zeros(1, np.float32).tobytes())

    async def model_infer(request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        return answer

    return model_infer, pb.ModelInferResponse.SerializeToString


def _with_model(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    output = session.get_outputs()[0]
    head = pb.ModelInferResponse(model_name="mlp", model_version="1")
    head.outputs.add(name=output.name, datatype="FP32", shape=[1, 1])
    prefix = head.SerializeToString()

    async def model_infer(request: pb.ModelInferRequest, context: Any) -> bytes:
        x = np.frombuffer(request.raw_input_contents[0], np.float32).reshape(tuple(request.inputs[0].shape))
        data = session.run([output.name], {input_name: x})[0].tobytes()
        return prefix + _RAW_OUTPUT_TAG + varint(len(data)) + data

    return model_infer, None  # answers bytes: no serializer


async def serve(listen: str, model: Path | None) -> None:
    handler_fn, serializer = _constant() if model is None else _with_model(model)
    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService",
        {
            "ModelInfer": grpc.unary_unary_rpc_method_handler(
                handler_fn,
                request_deserializer=pb.ModelInferRequest.FromString,
                response_serializer=serializer,
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
    parser.add_argument(
        "--model", type=Path, help="run this ONNX model per request (the floor with inference)"
    )
    args = parser.parse_args()
    uvloop.run(serve(args.listen, args.model))
    return 0


if __name__ == "__main__":
    sys.exit(main())
