"""One data plane is one pinned set of view versions, also with ``--workers N``: a static model naming a view
without a version reads the version the data plane pinned when it first served the model, whichever of its
worker processes a request reaches. Each worker pinned on its own, so a worker first asked after a new
version was applied read that one (here: empty, every entity NOT_FOUND) while its sibling read the old.
Real parts: the control plane's registry, Redis, and ``python -m data_plane --workers 2`` processes."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import grpc
import grpc.aio
import numpy as np
import pytest

from clients.aether.v1 import online_features_pb2 as ofpb
from clients.aether.v1 import online_features_pb2_grpc as of_grpc
from data_plane.models.spec import dump_model_config
from data_plane.workers import SERVING_LINE, WORKERS_LINE
from tests.integration.closed_loop.conftest import FEATURE_VIEW, Stack
from tests.integration.closed_loop.test_view_versions import _new_empty_version, _predict
from tests.support import onnx_models

pytestmark = pytest.mark.integration


async def _line(stream: asyncio.StreamReader) -> str:
    line = await asyncio.wait_for(stream.readline(), 60)
    assert line, "the data plane ended before saying it serves"
    return line.decode().strip()


async def _serves_view_version(address: str, version: int, timeout_s: float = 20.0) -> None:
    """Returns once the worker at ``address`` has the view's ``version`` in its catalog (a read of it is
    no longer NOT_FOUND)."""
    deadline = time.monotonic() + timeout_s
    async with grpc.aio.insecure_channel(address) as channel:
        stub = of_grpc.OnlineFeaturesStub(channel)  # type: ignore[no-untyped-call]
        request = ofpb.GetOnlineFeaturesRequest(
            features=[f"{FEATURE_VIEW}@{version}:f0"], rows=[ofpb.EntityRow(keys={"driver_id": "7"})]
        )
        while True:
            try:
                await stub.GetOnlineFeatures(request, timeout=5)
                return
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.NOT_FOUND, error
            assert time.monotonic() < deadline, f"{address} never saw {FEATURE_VIEW} version {version}"
            await asyncio.sleep(0.05)


async def test_the_workers_of_one_data_plane_read_the_version_it_pinned(stack: Stack, tmp_path: Path) -> None:
    spec = onnx_models.save(
        onnx_models.affine(), tmp_path / "scorer.onnx", "scorer", feature_refs=(FEATURE_VIEW,)
    )
    config = tmp_path / "models.json"
    dump_model_config([spec], config)
    log = tmp_path / "stderr.log"
    with log.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "data_plane", "--workers", "2", "--listen", "127.0.0.1:0",
            "--redis-url", stack.redis_url, "--control-plane", stack.control_plane.address,
            "--snapshot-path", str(tmp_path / "registry_snapshot.pb"), "--model-config", str(config),
            "--drain-delay-s", "0",
            stdout=asyncio.subprocess.PIPE, stderr=stderr,
            env={**os.environ, "AETHER_HOME": str(tmp_path / "home")},
            start_new_session=True,
        )  # fmt: skip
    try:
        assert process.stdout is not None
        workers: list[str] = []
        while (line := await _line(process.stdout)) != SERVING_LINE:
            if line.startswith(WORKERS_LINE):
                workers = line.removeprefix(WORKERS_LINE).split(",")
        assert len(workers) == 2
        first, second = workers

        before = await _predict(first, "scorer", 7)  # the first worker serves the model first: pinned at v1
        assert await _new_empty_version(stack) == 2
        await _serves_view_version(second, 2)
        # Pinned on its own, the second worker took version 2, where nothing is stored: NOT_FOUND.
        np.testing.assert_array_equal(await _predict(second, "scorer", 7), before)
        np.testing.assert_array_equal(await _predict(first, "scorer", 7), before)

        said = log.read_text()
        assert said.count(f"'{FEATURE_VIEW}' -> '{FEATURE_VIEW}@1'") == 2, said  # each worker says its pin
        assert "pinned to the newest servable versions (registry revision" in said
        assert "pinned as another worker of this data plane pinned them" in said
        assert f"write the version into the model config's feature_refs ('{FEATURE_VIEW}@1')" in said
    finally:
        if process.returncode is None:
            process.terminate()
        assert await asyncio.wait_for(process.wait(), 30) == 0
