"""SDK arguments a proto field cannot hold are INVALID_ARGUMENT naming the argument and what it takes,
raised before any request is built or sent. They escaped as protobuf's bare ValueError ("Value out of
range: -3", 'unknown enum label "METRIC_AGGREGATE_AVG"'), naming neither. No server is needed: nothing
is sent (the clients dial a port nobody listens on, and a call that got that far would be UNAVAILABLE)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from clients.aether.v1 import feature_registry_pb2 as fpb
from clients.aether.v1 import jobs_pb2 as jpb
from clients.errors import InvalidArgument
from clients.sdk.arguments import checked_request
from clients.sdk.audit import AuditClient, audit_filter
from clients.sdk.deployments import DeploymentsClient, variant
from clients.sdk.inference import build_infer_request, build_predict_request
from clients.sdk.ingestion import IngestionClient, header
from clients.sdk.jobs import JobsClient
from clients.sdk.models import ModelRegistryClient, signature
from clients.sdk.monitoring import MonitoringClient, feedback_message
from clients.sdk.offline import OfflineFeaturesClient
from clients.sdk.online import OnlineFeaturesClient
from clients.sdk.registry import FeatureRegistryClient
from clients.sdk.retraining import RetrainingClient
from clients.sdk.tracking import TrackingClient

NOBODY = "127.0.0.1:1"
U32 = "expected a whole number from 0 to 4294967295"


def _first(items: Iterator[Any]) -> Any:
    return next(iter(items))


CASES: list[tuple[str, Callable[[], Any], str]] = [
    (
        "registry version",
        lambda: FeatureRegistryClient(NOBODY).get_feature_view("v", -3),
        f"^version: {U32}, got -3$",
    ),
    ("registry retire", lambda: FeatureRegistryClient(NOBODY).retire_version("v", 2**32), f"^version: {U32}"),
    (
        "models page size",
        lambda: ModelRegistryClient(NOBODY).list_models_page(page_size=2**31),
        "^page_size: ",
    ),
    (
        "models status",
        lambda: ModelRegistryClient(NOBODY).list_versions_page("m", status="OK"),  # type: ignore[arg-type]
        "^status: expected one of APPROVAL_STATUS_UNSPECIFIED",
    ),
    ("models version", lambda: ModelRegistryClient(NOBODY).get_version("m", 2**63), "^version: "),
    ("signature shape", lambda: signature([("x", "float32", (1, 2**63))], []), r"^shape\[1\]: "),
    ("audit page size", lambda: AuditClient(NOBODY).query(page_size=2**31), "^page_size: "),
    ("audit since", lambda: audit_filter(since_us=2**63), "^since_us: "),
    (
        "variant role",
        lambda: variant("m", 1, role="blue"),
        "^role: expected one of primary, canary, shadow, got 'blue'$",
    ),
    ("variant version", lambda: variant("m", 2**63), "^version: "),
    ("canary version", lambda: DeploymentsClient(NOBODY).start_canary("d", "m", 2**64), "^version: "),
    ("watch revision", lambda: _first(DeploymentsClient(NOBODY).watch_plans(2**63)), "^known_revision: "),
    (
        "job states",
        lambda: JobsClient(NOBODY).list_page(states=["DONE"]),  # type: ignore[list-item]
        r"^states\[0\]: expected one of JOB_STATE_",
    ),
    ("job log offset", lambda: _first(JobsClient(NOBODY).logs("j", offset=-1)), "^offset: "),
    (
        "monitor task",
        lambda: MonitoringClient(NOBODY).configure("d", task="regression"),
        "^task: expected one of TASK_",
    ),
    (
        "monitor field",
        lambda: MonitoringClient(NOBODY).configure("d", windw_rows=5),
        "has no field 'windw_rows'",
    ),
    ("monitor limit", lambda: MonitoringClient(NOBODY).drift_reports("d", limit=2**31), "^limit: "),
    (
        "profile version",
        lambda: MonitoringClient(NOBODY).register_reference_profile("m", 2**63, ""),
        "^version: ",
    ),
    (
        "feedback label",
        lambda: feedback_message(("req-1", "yes")),  # type: ignore[arg-type]
        "feedback 'req-1': expected",
    ),
    ("feedback row", lambda: feedback_message(("req-1", 1.0, -1)), "^row: "),
    # A str was unpacked by character ("r1": request "r" labelled 1); one item raised a bare ValueError.
    ("feedback str", lambda: feedback_message("r1"), "^feedback: expected"),  # type: ignore[arg-type]
    ("feedback bytes", lambda: feedback_message(b"r1"), "^feedback: expected"),  # type: ignore[arg-type]
    ("feedback one item", lambda: feedback_message(("req-1",)), "^feedback: expected"),  # type: ignore[arg-type]
    # int() made row 2.9 row 2, and a fourth item was dropped: another output labelled, silently.
    (
        "feedback fractional row",
        lambda: feedback_message(("req-1", 1.0, 2.9)),  # type: ignore[arg-type]
        "feedback 'req-1': expected",
    ),
    ("feedback boolean row", lambda: feedback_message(("req-1", 1.0, True)), "feedback 'req-1': expected"),
    (
        "feedback extra item",
        lambda: feedback_message(("req-1", 1.0, 2, "x")),  # type: ignore[arg-type]
        "feedback 'req-1': expected",
    ),
    ("retraining field", lambda: RetrainingClient(NOBODY).configure("d", min_rows=-1), "^min_rows: "),
    ("retraining limit", lambda: RetrainingClient(NOBODY).decisions("d", limit=-1), "^limit: "),
    (
        "retraining expected revision",
        lambda: RetrainingClient(NOBODY).configure("d", expected_revision="3"),  # type: ignore[arg-type]
        "^expected_revision: ",
    ),
    (
        "monitoring expected revision",
        lambda: MonitoringClient(NOBODY).configure("d", expected_revision=2**64),
        "^expected_revision: ",
    ),
    ("ingest version", lambda: header("v", version=-1), "^version: "),
    ("quarantine id", lambda: IngestionClient(NOBODY).get_quarantined(-1), "^id: "),
    ("discard ids", lambda: IngestionClient(NOBODY).discard([1, -2]), r"^ids\[1\]: "),
    ("ingestion runs", lambda: IngestionClient(NOBODY).list_runs(limit=-1), "^limit: "),
    # A str or complex array was a KeyError ('str32'), a plain list an AttributeError (no .dtype).
    (
        "infer str array",
        lambda: build_infer_request("m", {"x": np.array(["a"])}),
        r"^inputs\['x'\]: dtype str32 cannot be sent; expected one of bool, uint8, ",
    ),
    (
        "infer complex array",
        lambda: build_infer_request("m", {"x": np.zeros(2, np.complex64)}),
        r"^inputs\['x'\]: dtype complex64 cannot be sent",
    ),
    (
        "infer ragged list",
        lambda: build_infer_request("m", {"x": [[1.0], [1.0, 2.0]]}),  # type: ignore[dict-item]
        r"^inputs\['x'\]: not an array",
    ),
    # protobuf's bare TypeError; one row as a dict was iterated as its keys (AttributeError).
    (
        "predict feature value",
        lambda: build_predict_request("d", [{"a": 1}], request_features=[{"f": "x"}]),  # type: ignore[dict-item]
        r"^request_features\[0\]\['f'\]: expected a number, got 'x'$",
    ),
    (
        "predict rows dict",
        lambda: build_predict_request("d", {"zone_id": "17"}),  # type: ignore[arg-type]
        r"^rows: expected a list of mappings, got one mapping",
    ),
    (
        "predict features dict",
        lambda: build_predict_request("d", [{"a": 1}], request_features={"f": 1.0}),  # type: ignore[arg-type]
        r"^request_features: expected a list of mappings, got one mapping",
    ),
    # A negative limit returned [] without a call, as if nothing were quarantined.
    ("quarantine limit", lambda: IngestionClient(NOBODY).list_quarantined(limit=-1), "^limit: "),
    # A lone str was iterated: one reference per character sent ("zone_weather" as 12 features).
    (
        "online features str",
        lambda: OnlineFeaturesClient(NOBODY).get_online_features("zone_weather", [{"zone_id": "17"}]),
        "^features: expected a list of strings, got str$",
    ),
    (
        "online features item",
        lambda: OnlineFeaturesClient(NOBODY).get_online_features([b"v:f"], [{"zone_id": "17"}]),  # type: ignore[list-item]
        r"^features\[0\]: expected a string, got b'v:f'$",
    ),
    # One row as a dict was iterated as its keys: AttributeError 'str' object has no attribute 'items'.
    (
        "online rows dict",
        lambda: OnlineFeaturesClient(NOBODY).get_online_features(["v:f"], {"zone_id": "17"}),  # type: ignore[arg-type]
        r"^rows: expected a list of mappings, got one mapping \(wrap it in a list\)$",
    ),
    (
        "offline features str",
        lambda: OfflineFeaturesClient(NOBODY).historical_features("rows.parquet", "v:f"),
        "^features: expected a list of strings, got str$",
    ),
    # Anything else was streamed as a table: UNKNOWN "Exception iterating requests!".
    (
        "offline entity rows",
        lambda: OfflineFeaturesClient(NOBODY).historical_features({"zone_id": ["17"]}, ["v:f"]),  # type: ignore[arg-type]
        "^entity_rows: expected a pyarrow Table or a path the server reads, got dict$",
    ),
    (
        "model feature refs",
        lambda: ModelRegistryClient(NOBODY).register_version("m", feature_refs="v:f"),
        "^feature_refs: expected a list of strings, got str$",
    ),
    # Bare TypeErrors, "bad argument type for built-in operation", naming neither argument nor key.
    (
        "model tags",
        lambda: ModelRegistryClient(NOBODY).create_model("m", tags={"team": 1}),  # type: ignore[dict-item]
        r"^tags\['team'\]: 1 is not a string$",
    ),
    (
        "models list tags",
        lambda: ModelRegistryClient(NOBODY).list_models_page(tags={"team": 1}),  # type: ignore[dict-item]
        r"^tags\['team'\]: 1 is not a string$",
    ),
    (
        "model metric key",
        lambda: ModelRegistryClient(NOBODY).register_version("m", metrics={1: 0.5}),  # type: ignore[dict-item]
        r"^metrics: the key 1 is not a string$",
    ),
    ("model name", lambda: ModelRegistryClient(NOBODY).get_model(3), "^name: expected a string, got 3$"),  # type: ignore[arg-type]
    ("model delete", lambda: ModelRegistryClient(NOBODY).delete_model(3), "^name: expected a string, got 3$"),  # type: ignore[arg-type]
    (
        "alias delete",
        lambda: ModelRegistryClient(NOBODY).delete_alias("m", 3),  # type: ignore[arg-type]
        "^alias: expected a string, got 3$",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("case", "call", "message"), CASES, ids=[case for case, _, _ in CASES])
def test_an_argument_no_proto_field_can_hold_is_an_invalid_argument_naming_it(
    case: str, call: Callable[[], Any], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        call()


def test_tracking_arguments_are_checked_before_anything_is_sent() -> None:
    with TrackingClient(NOBODY, timeout=1, close_timeout_s=1) as tracking:
        aggregate = r"^metrics\[1\] \('loss'\) aggregate: expected one of latest, min, max, got 'avg'$"
        with pytest.raises(InvalidArgument, match=aggregate):
            tracking.compare_runs("1", metrics=["acc", ("loss", "avg")])
        with pytest.raises(InvalidArgument, match=r"^page_size: "):
            tracking.list_runs("1", page_size=2**31)
        # A lone str was split into one-character parameter and ordering columns.
        with pytest.raises(InvalidArgument, match=r"^params: expected a list of strings, got str$"):
            tracking.compare_runs("1", params="lr")
        with pytest.raises(InvalidArgument, match=r"^order_by: expected a list of strings, got str$"):
            tracking.compare_runs("1", order_by="metrics.loss")


def test_valid_values_build_the_same_request() -> None:
    assert checked_request(fpb.GetFeatureViewRequest, name="v", version=3) == fpb.GetFeatureViewRequest(
        name="v", version=3
    )
    assert variant("m", 2, role="canary").role == variant("m", 2, role="canary").role != 0
    assert audit_filter(since_us=0).HasField("since_us") and not audit_filter().HasField("since_us")
    assert feedback_message(("r", 1, 3)).row == 3
    assert feedback_message(("r", 1, 3.0)).row == 3  # type: ignore[arg-type]  # as pandas writes rows
    # A plain list is an array: float64, as numpy reads it (it raised AttributeError: no .dtype).
    assert build_infer_request("m", {"x": [[1.0, 2.0]]}).inputs[0].datatype == "FP64"  # type: ignore[dict-item]
    assert build_predict_request("d", [{"a": 1}], request_features=[{"f": np.float32(2)}]).request_features[
        0
    ].values == {"f": 2.0}
    # Enums are open: a number these stubs do not know is the server's to judge (a newer proto's value).
    assert list(checked_request(jpb.ListJobsRequest, states=[99]).states) == [99]
