"""Client of deployments (``aether.v1.Deployments``): create a deployment from approved model versions,
split its traffic, run a canary (started here, advanced, promoted or rolled back by the control plane's
canary controller, or by hand), and watch the plans the data plane serves.

One method per RPC, plain Python arguments in, proto messages out; a failed call raises the matching
:mod:`clients.errors` exception."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from clients.aether.v1 import deployments_pb2 as pb
from clients.aether.v1 import deployments_pb2_grpc as pb_grpc
from clients.sdk.arguments import checked_request, choice
from clients.sdk.service_client import ServiceClient

ROLES = {
    "primary": pb.VARIANT_ROLE_PRIMARY,
    "canary": pb.VARIANT_ROLE_CANARY,
    "shadow": pb.VARIANT_ROLE_SHADOW,
}


def variant(
    model_name: str, version: int, role: str = "primary", traffic_percent: float = 0.0, name: str = ""
) -> pb.Variant:
    """A variant; ``role`` is primary, canary or shadow. The name defaults to ``<model>-v<version>``."""
    return checked_request(
        pb.Variant,
        name=name,
        model_name=model_name,
        version=version,
        role=choice(role, "role", ROLES),
        traffic_percent=traffic_percent,
    )


class DeploymentsClient(ServiceClient):
    """Client of one control plane at ``target`` (``host:port``); ``actor`` names the caller in the audit
    log when auth is off; ``timeout`` bounds each call (not the watch stream)."""

    def _open_stubs(self) -> None:
        self._stub = pb_grpc.DeploymentsStub(self._channel)  # type: ignore[no-untyped-call]

    def create(
        self,
        name: str,
        variants: Sequence[pb.Variant],
        *,
        description: str = "",
        serving: pb.ServingConfig | None = None,
        canary_policy: pb.CanaryPolicy | None = None,
        routing_salt: str = "",
    ) -> pb.Deployment:
        request = pb.CreateDeploymentRequest(
            name=name,
            description=description,
            variants=list(variants),
            serving=serving,
            canary_policy=canary_policy,
            routing_salt=routing_salt,
        )
        return self._call(self._stub.CreateDeployment, request, pb.Deployment)

    def update(self, request: pb.UpdateDeploymentRequest) -> pb.Deployment:
        return self._call(self._stub.UpdateDeployment, request, pb.Deployment)

    def get(self, name: str) -> pb.Deployment:
        return self._call(self._stub.GetDeployment, pb.GetDeploymentRequest(name=name), pb.Deployment)

    def list_page(
        self, *, name_prefix: str = "", page_size: int = 0, page_token: str = ""
    ) -> pb.ListDeploymentsResponse:
        request = checked_request(
            pb.ListDeploymentsRequest, name_prefix=name_prefix, page_size=page_size, page_token=page_token
        )
        return self._call(self._stub.ListDeployments, request, pb.ListDeploymentsResponse)

    def list(self, *, name_prefix: str = "") -> Iterator[pb.Deployment]:
        """Every deployment whose name starts with ``name_prefix``, fetching pages as needed."""
        token = ""
        while True:
            page = self.list_page(name_prefix=name_prefix, page_token=token)
            yield from page.deployments
            token = page.next_page_token
            if not token:
                return

    def delete(self, name: str) -> None:
        self._call(
            self._stub.DeleteDeployment, pb.DeleteDeploymentRequest(name=name), pb.DeleteDeploymentResponse
        )

    def set_traffic(self, name: str, variant_name: str, traffic_percent: float) -> pb.Deployment:
        request = checked_request(
            pb.SetTrafficRequest, name=name, variant=variant_name, traffic_percent=traffic_percent
        )
        return self._call(self._stub.SetTraffic, request, pb.Deployment)

    def start_canary(
        self,
        name: str,
        model_name: str,
        version: int,
        *,
        variant_name: str = "",
        policy: pb.CanaryPolicy | None = None,
        expected_plan_revision: int | None = None,
    ) -> pb.Deployment:
        """Starts a canary of ``model_name`` v``version``; ``policy`` replaces the deployment's. With
        ``expected_plan_revision`` (the ``plan_revision`` the policy was built from), ``Aborted`` when the
        deployment changed since: nothing is started."""
        request = checked_request(
            pb.StartCanaryRequest,
            name=name,
            model_name=model_name,
            version=version,
            variant=variant_name,
            policy=policy,
            expected_plan_revision=expected_plan_revision,
        )
        return self._call(self._stub.StartCanary, request, pb.Deployment)

    def promote(self, name: str, variant_name: str = "") -> pb.Deployment:
        return self._call(
            self._stub.Promote, pb.PromoteRequest(name=name, variant=variant_name), pb.Deployment
        )

    def rollback(self, name: str, variant_name: str = "", reason: str = "") -> pb.Deployment:
        request = pb.RollbackRequest(name=name, variant=variant_name, reason=reason)
        return self._call(self._stub.Rollback, request, pb.Deployment)

    def watch_plans(self, known_revision: int = 0) -> Iterator[pb.DeploymentPlanSnapshot]:
        """Plan snapshots as they change (blocking; cancel by closing the client)."""
        request = checked_request(pb.WatchDeploymentPlansRequest, known_revision=known_revision)
        yield from self._stream(self._stub.WatchDeploymentPlans, request, None)
