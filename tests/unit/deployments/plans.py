"""Plan messages for tests: the data plane's view of a deployment, with a small model per variant."""

from __future__ import annotations

from clients.aether.v1 import deployments_pb2 as pb
from clients.aether.v1 import model_registry_pb2 as mpb

ROLES = {
    "primary": pb.VARIANT_ROLE_PRIMARY,
    "canary": pb.VARIANT_ROLE_CANARY,
    "shadow": pb.VARIANT_ROLE_SHADOW,
}


def model(name: str, version: int) -> pb.ModelServingSpec:
    return pb.ModelServingSpec(
        model_name=name,
        version=version,
        artifact_sha256=f"{version:064x}",
        artifact_uri=f"/artifacts/{name}/{version}",
        inputs=[mpb.TensorSpec(name="x", dtype="float32", shape=[-1, 4])],
        outputs=[mpb.TensorSpec(name="y", dtype="float32", shape=[-1, 1])],
        feature_refs=["rider@1:trips"],
    )


def plan(
    deployment: str, *variants: tuple[str, str, float, int], revision: int = 1, salt: str = ""
) -> pb.DeploymentPlan:
    """``variants``: (name, role, traffic percent, model version) of model ``eta``."""
    return pb.DeploymentPlan(
        deployment=deployment,
        plan_revision=revision,
        routing_salt=salt,
        variants=[
            pb.PlannedVariant(
                name=name, role=ROLES[role], traffic_percent=percent, model=model("eta", version)
            )
            for name, role, percent, version in variants
        ],
    )
