"""``python -m data_plane --workers 2``: two processes serve one port (SO_REUSEPORT) from a static model
config, both answer, and SIGTERM stops them all."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest

from clients.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from clients.sdk.inference import build_infer_request, decode_infer_response
from data_plane.models.spec import dump_model_config
from tests.support import onnx_models
from tests.support.redis_server import free_port

pytestmark = pytest.mark.integration


def test_two_workers_share_one_port_and_stop_on_sigterm(redis_url: str, tmp_path: Path) -> None:
    spec = onnx_models.save(onnx_models.affine(), tmp_path / "affine.onnx", "affine")
    config = tmp_path / "models.json"
    dump_model_config([spec], config)
    process = subprocess.Popen(
        [
            sys.executable, "-m", "data_plane", "--workers", "2",
            "--listen", "127.0.0.1:0",
            "--redis-url", redis_url,
            "--control-plane", f"127.0.0.1:{free_port()}",
            "--snapshot-path", str(tmp_path / "absent.pb"),
            "--model-config", str(config),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "AETHER_HOME": str(tmp_path / "home")},
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.fullmatch(r"aether data plane listening on 127\.0\.0\.1:(\d+)\n", line)
        assert match, line
        workers = subprocess.run(
            ["pgrep", "-P", str(process.pid)], capture_output=True, text=True
        ).stdout.split()
        assert len(workers) == 2
        answers = []
        for _ in range(8):  # each channel is a new connection, which the kernel spreads over the workers
            with grpc.insecure_channel(f"127.0.0.1:{match[1]}") as channel:
                stub = pb_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
                response = stub.ModelInfer(
                    build_infer_request("affine", {"x": np.ones((1, 4), np.float32)}), timeout=5
                )
                answers.append(decode_infer_response(response)["y"].tolist())
        assert answers == [[[3.0, 3.0, 3.0, 3.0]]] * 8
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
        assert all(not Path(f"/proc/{pid}").exists() for pid in workers)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
