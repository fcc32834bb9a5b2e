"""``aetherctl deploy …`` end to end against the real stack: the command line (``control_plane.cli.main``)
creates a deployment of an approved version, starts a canary, shows its status and rolls it back; after
each step the data plane, following the plans, serves Predict traffic accordingly."""

from __future__ import annotations

import json

import grpc
import pytest

from control_plane.cli.main import main as aetherctl
from tests.integration.closed_loop.conftest import Stack, call
from tests.integration.closed_loop.load import closed_loop
from tests.support import onnx_models

pytestmark = pytest.mark.integration


async def _run(stack: Stack, capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code = await call(aetherctl, ["--control-plane", stack.control_plane.address, "--timeout", "20", *argv])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


async def _served_by(stack: Stack, tag: str) -> dict[str, int]:
    """Which variants answer, once the data plane serves the deployment's current plan."""
    deployment = await call(stack.deployments.get, "eta-prod")
    await stack.plans_at(deployment.plan_revision)
    load = await closed_loop(stack.data_plane_address, "eta-prod", clients=2, max_requests=80, tag=tag)
    assert load.codes() == {grpc.StatusCode.OK}
    return load.served_by()


async def test_deploy_canary_status_and_rollback_drive_the_data_plane(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    blue = await stack.register("eta", onnx_models.affine(), "blue.onnx")
    green = await stack.register("eta", onnx_models.mlp(input_size=4, hidden=(8,)), "green.onnx")

    out = await _run(
        stack, capsys,
        "deploy", "create", "eta-prod", "--model", "eta", "--version", str(blue),
        "--steps", "50,100", "--bake-seconds", "600", "--warmup-requests", "2",
    )  # fmt: skip
    assert "eta-v1   primary  eta:1  100.00%" in out
    assert await _served_by(stack, "created") == {"eta-v1": 80}

    out = await _run(
        stack, capsys, "deploy", "canary", "start", "eta-prod", "--model", "eta", "--version", str(green)
    )
    assert "canary eta-v2 (eta:2): progressing at 50% (steps 50, 100)" in out
    shown = json.loads(await _run(stack, capsys, "deploy", "get", "eta-prod", "--json"))
    assert shown["canary"]["status"] == "CANARY_STATUS_PROGRESSING"
    assert sorted((v["name"], v["traffic_percent"]) for v in shown["variants"]) == [
        ("eta-v1", 50.0),
        ("eta-v2", 50.0),
    ]
    assert set(await _served_by(stack, "canary")) == {"eta-v1", "eta-v2"}  # the split reaches the data plane

    out = await _run(stack, capsys, "deploy", "rollback", "eta-prod", "--reason", "checked by hand")
    assert "rolled back" in out and "checked by hand" in out
    out = await _run(stack, capsys, "deploy", "list")
    assert "eta-prod" in out and "rolled back" in out
    assert await _served_by(stack, "rolled-back") == {"eta-v1": 80}
