"""Client of the retraining service (``aether.v1.Retraining``): configure a deployment's retraining
triggers, trigger a retraining by hand, read the trigger decisions and the challenger evaluations.

    with RetrainingClient("127.0.0.1:50051", actor="alice") as retraining:
        retraining.configure("churn", enabled=True, schedule="0 3 * * 1", drift=True,
                             performance_threshold=0.8)
        decision = retraining.trigger_now("churn", reason="new labelling campaign")
        for evaluation in retraining.evaluations("churn"):
            ...

One method per RPC, plain Python arguments in, proto messages out; a failed call raises the matching
:mod:`clients.errors` exception."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from clients.aether.v1 import retraining_pb2 as pb
from clients.aether.v1 import retraining_pb2_grpc as pb_grpc
from clients.errors import InvalidArgument
from clients.sdk.arguments import check_field, checked_request
from clients.sdk.pages import first_items
from clients.sdk.service_client import ServiceClient


class RetrainingClient(ServiceClient):
    """Client of one control plane at ``target`` (``host:port``); ``timeout`` bounds each call (a manual
    trigger validates the data window before it answers, so it may take a while)."""

    DEFAULT_TIMEOUT_S = 60.0

    def _open_stubs(self) -> None:
        self._stub = pb_grpc.RetrainingStub(self._channel)  # type: ignore[no-untyped-call]

    def configure(
        self,
        deployment: str,
        config: pb.TriggerConfig | None = None,
        *,
        expected_revision: int | None = None,
        **fields: Any,
    ) -> pb.TriggerConfig:
        """Creates or replaces the trigger config of ``deployment`` from ``config`` and/or ``TriggerConfig``
        ``fields`` (unset ones take their defaults). Returns the effective config. With
        ``expected_revision`` (the ``revision`` of the config read), ``Aborted`` when another writer has
        replaced that config since: nothing is changed."""
        message = pb.TriggerConfig()
        if config is not None:
            message.CopyFrom(config)
        for name, value in fields.items():
            if isinstance(value, (pb.EvaluationGates, pb.PromotionPolicy)):
                getattr(message, name).CopyFrom(value)
            else:  # checked first: a bare setattr raised protobuf's ValueError naming no field
                field = message.DESCRIPTOR.fields_by_name.get(name)
                if field is None:
                    raise InvalidArgument(f"TriggerConfig has no field {name!r}")
                check_field(field, value, name)
                try:
                    setattr(message, name, value)
                except (TypeError, ValueError) as error:
                    raise InvalidArgument(f"{name}: {error}") from None
        message.deployment = deployment
        request = checked_request(
            pb.ConfigureTriggersRequest, config=message, expected_revision=expected_revision
        )
        return self._call(self._stub.ConfigureTriggers, request, pb.TriggerConfig)

    def get_config(self, deployment: str) -> pb.TriggerConfig:
        request = pb.GetTriggerConfigRequest(deployment=deployment)
        return self._call(self._stub.GetTriggerConfig, request, pb.TriggerConfig)

    def trigger_now(self, deployment: str, reason: str = "") -> pb.TriggerDecision:
        request = pb.TriggerNowRequest(deployment=deployment, reason=reason)
        return self._call(self._stub.TriggerNow, request, pb.TriggerDecision)

    def decisions_page(
        self, deployment: str, *, triggered_only: bool = False, limit: int = 0, page_token: str = ""
    ) -> tuple[list[pb.TriggerDecision], str]:
        """One page of the decisions :meth:`decisions` lists: at most ``limit`` (0 = 100, at most 1000;
        fewer where they fill the page's bytes), and the next page's token ("" on the last: the server reads
        one past a page, so a page that ends at the last decision says so)."""
        request = checked_request(
            pb.ListDecisionsRequest,
            deployment=deployment,
            triggered_only=triggered_only,
            limit=limit,
            page_token=page_token,
        )
        response = self._call(self._stub.ListDecisions, request, pb.ListDecisionsResponse)
        return list(response.decisions), response.next_page_token

    def decisions(
        self, deployment: str, *, triggered_only: bool = False, limit: int = 0
    ) -> list[pb.TriggerDecision]:
        """The newest ``limit`` trigger decisions of ``deployment`` (0 = 100), newest first, over as many
        pages as that takes (a page is also bounded in bytes, so it may hold fewer)."""

        def page(size: int, token: str) -> tuple[Sequence[pb.TriggerDecision], str]:
            return self.decisions_page(
                deployment, triggered_only=triggered_only, limit=size, page_token=token
            )

        checked_request(pb.ListDecisionsRequest, limit=limit)  # as the field holds it: pages ask for less
        return first_items(limit, page)

    def evaluations_page(
        self, deployment: str, *, limit: int = 0, page_token: str = ""
    ) -> tuple[list[pb.Evaluation], str]:
        """One page of the evaluations :meth:`evaluations` lists: at most ``limit`` (0 = 100, at most 1000;
        fewer where they fill the page's bytes), and the next page's token ("" on the last)."""
        request = checked_request(
            pb.ListEvaluationsRequest, deployment=deployment, limit=limit, page_token=page_token
        )
        response = self._call(self._stub.ListEvaluations, request, pb.ListEvaluationsResponse)
        return list(response.evaluations), response.next_page_token

    def evaluations(self, deployment: str, *, limit: int = 0) -> list[pb.Evaluation]:
        """The newest ``limit`` challenger/champion evaluations of ``deployment`` (0 = 100) with their
        promotion state, newest first, over as many pages as that takes."""

        def page(size: int, token: str) -> tuple[Sequence[pb.Evaluation], str]:
            return self.evaluations_page(deployment, limit=size, page_token=token)

        checked_request(pb.ListEvaluationsRequest, limit=limit)  # as the field holds it: pages ask for less
        return first_items(limit, page)
