"""Client of the monitoring service (``aether.v1.Monitoring``): configure a deployment's monitor, read
drift reports and quality windows, send labels, link a reference profile.

    with MonitoringClient("127.0.0.1:50051") as monitoring:
        monitoring.configure("churn", task=pb.TASK_TYPE_CLASSIFICATION, alert_threshold=0.8)
        monitoring.record_feedback([("req-1", 1.0), ("req-2", 0.0)])   # (request id, label[, row])
        for report in monitoring.drift_reports("churn"):
            ...

One method per RPC, plain Python arguments in, proto messages out; a failed call raises the matching
:mod:`clients.errors` exception."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from clients.aether.v1 import monitoring_pb2 as pb
from clients.aether.v1 import monitoring_pb2_grpc as pb_grpc
from clients.errors import InvalidArgument
from clients.sdk.arguments import checked_request
from clients.sdk.artifacts import ArtifactClient
from clients.sdk.pages import first_items
from clients.sdk.service_client import ServiceClient

#: Labels per RecordFeedback call when a long list is sent.
FEEDBACK_BATCH = 10_000

FeedbackItem = pb.Feedback | tuple[str, float] | tuple[str, float, int]


def feedback_message(item: FeedbackItem) -> pb.Feedback:
    """A ``Feedback`` from a message or a ``(request_id, label[, row])`` tuple."""
    if isinstance(item, pb.Feedback):
        return item
    request_id: object = None
    try:  # converted as before ("1" and 1.0 are taken), but a value that is none is INVALID_ARGUMENT
        if isinstance(item, (str, bytes)):  # unpacked, "r1" was request "r" labelled 1
            raise TypeError("a string is not a (request_id, label) pair")
        request_id, label, *rest = item  # inside: ("req-1",) raised a bare ValueError
        if len(rest) > 1:
            raise ValueError("more than three items")
        number = float(label)
        row = None if not rest else _whole_row(rest[0])
    except (TypeError, ValueError, OverflowError):
        which = f"feedback {request_id!r}" if request_id is not None else "feedback"
        raise InvalidArgument(
            f"{which}: expected (request_id, label[, row]) with a number label and a whole"
            f" number row, got {item!r:.120}"
        ) from None
    return checked_request(pb.Feedback, request_id=request_id, label=number, row=row)


def _whole_row(value: Any) -> int:
    """A row index as ``aetherctl feedback record`` takes it: a whole number (3.0 is row 3); ``int()``
    turned 2.9 into row 2, silently labelling another output."""
    if isinstance(value, bool):
        raise TypeError("a row is not a boolean")
    row = int(value)
    if row != value and not (isinstance(value, str) and value.strip().isdigit()):
        raise ValueError(f"row {value!r} is not a whole number")
    return row


class MonitoringClient(ServiceClient):
    """Client of one control plane at ``target`` (``host:port``); ``timeout`` bounds each call."""

    def _open_stubs(self) -> None:
        self._stub = pb_grpc.MonitoringStub(self._channel)  # type: ignore[no-untyped-call]

    def configure(
        self, deployment: str, *, expected_revision: int | None = None, **fields: Any
    ) -> pb.MonitorConfig:
        """Creates or replaces the monitor of ``deployment``; ``fields`` are ``MonitorConfig`` fields
        (unset ones take their defaults). Returns the effective config. With ``expected_revision`` (the
        ``revision`` of the config read), ``Aborted`` when another writer has replaced that config since:
        nothing is changed."""
        config = checked_request(pb.MonitorConfig, deployment=deployment, **fields)
        request = checked_request(
            pb.ConfigureMonitorRequest, config=config, expected_revision=expected_revision
        )
        return self._call(self._stub.ConfigureMonitor, request, pb.MonitorConfig)

    def get_config(self, deployment: str) -> pb.MonitorConfig:
        return self._call(
            self._stub.GetMonitorConfig, pb.GetMonitorConfigRequest(deployment=deployment), pb.MonitorConfig
        )

    def drift_reports_page(
        self, deployment: str, *, since_us: int = 0, until_us: int = 0, limit: int = 0, page_token: str = ""
    ) -> tuple[list[pb.DriftReport], str]:
        """One page of the reports :meth:`drift_reports` lists: at most ``limit`` (0 = 100, at most 1000;
        fewer where they fill the page's bytes), and the next page's token ("" on the last: the server reads
        one past a page, so a page that ends at the last report says so)."""
        request = checked_request(
            pb.GetDriftReportsRequest,
            deployment=deployment,
            since_us=since_us,
            until_us=until_us,
            limit=limit,
            page_token=page_token,
        )
        response = self._call(self._stub.GetDriftReports, request, pb.GetDriftReportsResponse)
        return list(response.reports), response.next_page_token

    def drift_reports(
        self, deployment: str, *, since_us: int = 0, until_us: int = 0, limit: int = 0
    ) -> list[pb.DriftReport]:
        """The newest ``limit`` stored reports of ``deployment`` (0 = 100) whose window ends in
        ``[since_us, until_us)`` (0 = unbounded), newest first, over as many pages as that takes (a page is
        also bounded in bytes: a report carries every feature's statistics)."""

        def page(size: int, token: str) -> tuple[Sequence[pb.DriftReport], str]:
            return self.drift_reports_page(
                deployment, since_us=since_us, until_us=until_us, limit=size, page_token=token
            )

        checked_request(pb.GetDriftReportsRequest, limit=limit)  # as the field holds it: pages ask for less
        return first_items(limit, page)

    def record_feedback(self, items: Iterable[FeedbackItem]) -> pb.RecordFeedbackResponse:
        """Sends labels in batches of :data:`FEEDBACK_BATCH`; returns the summed counts (the orphaned
        total is the last batch's)."""
        messages = [feedback_message(item) for item in items]
        total = pb.RecordFeedbackResponse()
        for start in range(0, max(len(messages), 1), FEEDBACK_BATCH):
            batch = pb.RecordFeedbackRequest(feedback=messages[start : start + FEEDBACK_BATCH])
            answer = self._call(self._stub.RecordFeedback, batch, pb.RecordFeedbackResponse)
            total.recorded += answer.recorded
            total.joined += answer.joined
            total.orphaned += answer.orphaned
            total.orphaned_total = answer.orphaned_total
        return total

    def performance(
        self, deployment: str, *, since_us: int = 0, until_us: int = 0
    ) -> pb.GetPerformanceResponse:
        request = checked_request(
            pb.GetPerformanceRequest, deployment=deployment, since_us=since_us, until_us=until_us
        )
        return self._call(self._stub.GetPerformance, request, pb.GetPerformanceResponse)

    def register_reference_profile(
        self, model_name: str, version: int, artifact_sha256: str, output_artifact_sha256: str = ""
    ) -> pb.ReferenceProfileInfo:
        """Links uploaded profile blobs to a model version."""
        request = checked_request(
            pb.RegisterReferenceProfileRequest,
            model_name=model_name,
            version=version,
            artifact_sha256=artifact_sha256,
            output_artifact_sha256=output_artifact_sha256,
        )
        return self._call(self._stub.RegisterReferenceProfile, request, pb.ReferenceProfileInfo)

    def upload_reference_profile(
        self, model_name: str, version: int, profile: bytes, output_profile: bytes | None = None
    ) -> pb.ReferenceProfileInfo:
        """Uploads profile file bytes (``control_plane.monitoring.profiles.profile_blob``) to the artifact
        store of the same control plane, then links them to the version."""
        artifacts = self.sharing(ArtifactClient)
        sha = artifacts.upload_bytes(profile).sha256
        output_sha = artifacts.upload_bytes(output_profile).sha256 if output_profile is not None else ""
        return self.register_reference_profile(model_name, version, sha, output_sha)
