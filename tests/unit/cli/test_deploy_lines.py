"""How `aetherctl deploy` prints a deployment whose canary status this client does not know (a newer
control plane's): by its number, not a KeyError traceback."""

from __future__ import annotations

import argparse
import io

from clients.aether.v1 import deployments_pb2 as pb
from control_plane.cli.deploy import _show, canary_name


def test_an_unknown_canary_status_is_printed_by_its_number() -> None:
    deployment = pb.Deployment(name="eta", plan_revision=3)
    deployment.variants.add(name="eta-v1", role=pb.VARIANT_ROLE_PRIMARY, model_name="eta", version=1)
    deployment.canary.status = 99  # type: ignore[assignment]  # a status added after this client
    deployment.canary.variant = "eta-v2"
    out = io.StringIO()
    assert _show(deployment, argparse.Namespace(json=False), out) == 0
    assert "canary eta-v2 (:0): status 99" in out.getvalue()
    assert canary_name(pb.CANARY_STATUS_ROLLED_BACK) == "rolled back"
