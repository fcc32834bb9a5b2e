"""The monitor loop end to end: entries written by the data plane's prediction-log writer to a real
Redis Stream, windows scored against the registered reference profile, reports queryable over gRPC,
Prometheus gauges set, alerts POSTed to a real webhook."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import grpc
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from clients.aether.v1 import monitoring_pb2 as pb
from clients.errors import FailedPrecondition
from clients.sdk.monitoring import MonitoringClient
from control_plane.api import monitoring as monitoring_api
from control_plane.monitoring.monitor import Monitor
from control_plane.monitoring.profiles import register_reference_profile
from control_plane.monitoring.reports import store_report
from control_plane.monitoring.settings import MonitoringSettings
from control_plane.server import start_server
from control_plane.settings import ControlPlaneSettings
from tests.integration.monitoring.conftest import Plane, Webhook, eventually, record

N_FEATURES = 10
NAMES = [f"x{i}" for i in range(N_FEATURES)]
SHIFTED = [1, 4, 7, 8]
T0 = 1_800_000_000_000_000


def rows_as_records(features: np.ndarray, first_id: int, ts_us: int) -> list:  # type: ignore[type-arg]
    """Two rows per request, with the model's class scores as output."""
    records = []
    for i in range(0, features.shape[0], 2):
        chunk = features[i : i + 2]
        scores = 1 / (1 + np.exp(-chunk[:, 1:2]))
        probabilities = np.hstack([1 - scores, scores]).astype(np.float32)
        records.append(record(f"req-{first_id + i}", chunk, {"probabilities": probabilities}, ts_us + i))
    return records


async def reports_of(plane: Plane, deployment: str = "churn") -> list[pb.DriftReport]:
    answer = await plane.stub.GetDriftReports(pb.GetDriftReportsRequest(deployment=deployment))
    return list(answer.reports)


async def test_reference_traffic_reports_no_drift_and_shifted_traffic_drifts_on_the_shifted_features(
    plane: Plane, webhook: Webhook
) -> None:
    version = plane.register_version("churn-model")
    plane.deploy("churn", version)
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(5000, N_FEATURES))
    reference_scores = 1 / (1 + np.exp(-reference[:, 1:2]))
    register_reference_profile(
        plane.server.context.sessions,
        plane.registry.artifacts,
        "churn-model",
        version,
        reference,
        NAMES,
        outputs=np.hstack([1 - reference_scores, reference_scores]),
        output_names=["p0", "p1"],
        actor="trainer",
    )
    config = await plane.stub.ConfigureMonitor(
        pb.ConfigureMonitorRequest(
            config=pb.MonitorConfig(deployment="churn", window_rows=600, webhook_url=webhook.url)
        )
    )
    assert config.threshold == 0.2 and config.window_rows == 600

    same = rng.normal(size=(600, N_FEATURES))
    shifted = rng.normal(size=(600, N_FEATURES))
    shifted[:, SHIFTED] += 1.0
    leftover = rng.normal(size=(10, N_FEATURES))
    await plane.log(
        rows_as_records(same, 0, T0)
        + rows_as_records(shifted, 1000, T0 + 10_000)
        + rows_as_records(leftover, 5000, T0 + 20_000)
    )

    async def two_reports() -> bool:
        return len(await reports_of(plane)) == 2

    await eventually(two_reports)
    newest, oldest = await reports_of(plane)
    assert oldest.status == pb.DRIFT_STATUS_NO_DRIFT and oldest.n_rows == 600
    assert oldest.prediction_status == pb.DRIFT_STATUS_NO_DRIFT
    assert [f.name for f in oldest.features] == NAMES and not any(f.drifted for f in oldest.features)
    assert newest.status == pb.DRIFT_STATUS_DRIFT
    assert [f.name for f in newest.features if f.drifted] == [NAMES[i] for i in SHIFTED]
    assert newest.drifted_share == pytest.approx(0.4)
    # x1 drives the output: the predictions drift too.
    assert newest.prediction_status == pb.DRIFT_STATUS_DRIFT and [o.name for o in newest.outputs] == [
        "p0",
        "p1",
    ]
    assert (newest.model_name, newest.version, newest.window_start_us) == (
        "churn-model",
        version,
        T0 + 10_000,
    )

    async def alerted() -> bool:
        return len(webhook.of_kind("data_drift")) == 1 and len(webhook.of_kind("prediction_drift")) == 1

    await eventually(alerted)
    alert = webhook.of_kind("data_drift")[0]
    assert alert["deployment"] == "churn" and alert["report_id"] == newest.id
    assert [f["name"] for f in alert["drifted_features"]] == [NAMES[i] for i in SHIFTED]

    gauges = plane.gauges
    assert gauges.get_sample_value("aether_drift_detected", {"deployment": "churn"}) == 1.0
    assert (
        gauges.get_sample_value("aether_drift_feature_drifted", {"deployment": "churn", "feature": "x4"})
        == 1.0
    )
    assert (
        gauges.get_sample_value("aether_drift_feature_drifted", {"deployment": "churn", "feature": "x0"})
        == 0.0
    )
    assert gauges.get_sample_value("aether_drift_share", {"deployment": "churn"}) == pytest.approx(0.4)

    since = await plane.stub.GetDriftReports(
        pb.GetDriftReportsRequest(deployment="churn", since_us=T0 + 5_000)
    )
    assert [r.id for r in since.reports] == [newest.id]


async def test_small_windows_are_insufficient_data_and_nan_values_are_counted(
    plane: Plane, webhook: Webhook
) -> None:
    version = plane.register_version("churn-model")
    plane.deploy("churn", version)
    rng = np.random.default_rng(1)
    register_reference_profile(
        plane.server.context.sessions,
        plane.registry.artifacts,
        "churn-model",
        version,
        rng.normal(size=(2000, N_FEATURES)),
        NAMES,
        actor="trainer",
    )
    await plane.stub.ConfigureMonitor(
        pb.ConfigureMonitorRequest(
            config=pb.MonitorConfig(
                deployment="churn", window_rows=20, test=pb.DRIFT_TEST_KS, webhook_url=webhook.url
            )
        )
    )
    far_off = rng.normal(size=(20, N_FEATURES)) + 5.0  # obviously shifted, but only 20 rows
    await plane.log(rows_as_records(far_off, 0, T0))

    async def one_report() -> bool:
        return len(await reports_of(plane)) == 1

    await eventually(one_report)
    (report,) = await reports_of(plane)
    assert report.status == pb.DRIFT_STATUS_INSUFFICIENT_DATA
    assert all(f.insufficient and not f.drifted for f in report.features)
    assert report.prediction_status == pb.DRIFT_STATUS_NO_REFERENCE  # no output profile: baseline pending

    await plane.stub.ConfigureMonitor(
        pb.ConfigureMonitorRequest(
            config=pb.MonitorConfig(deployment="churn", window_rows=200, test=pb.DRIFT_TEST_KS)
        )
    )
    with_nan = rng.normal(size=(200, N_FEATURES))
    with_nan[:17, 2] = np.nan
    await plane.log(rows_as_records(with_nan, 100, T0 + 1000))

    async def two_reports() -> bool:
        return len(await reports_of(plane)) == 2

    await eventually(two_reports)
    newest = (await reports_of(plane))[0]
    assert newest.status == pb.DRIFT_STATUS_NO_DRIFT
    assert newest.features[2].missing_current == 17 and newest.features[2].n_current == 183
    assert (
        plane.gauges.get_sample_value(
            "aether_drift_feature_missing", {"deployment": "churn", "feature": "x2"}
        )
        == 17.0
    )
    assert webhook.received == []


async def test_a_version_without_a_reference_reports_no_reference_and_never_drift(plane: Plane) -> None:
    plane.deploy("other")
    await plane.stub.ConfigureMonitor(
        pb.ConfigureMonitorRequest(config=pb.MonitorConfig(deployment="other", window_rows=40))
    )
    features = np.random.default_rng(2).normal(size=(40, 3))
    await plane.log(
        [record(f"o-{i}", features[i : i + 1], {}, T0 + i, deployment="other", model="m") for i in range(40)]
    )

    async def one_report() -> bool:
        return len(await reports_of(plane, "other")) == 1

    await eventually(one_report)
    (report,) = await reports_of(plane, "other")
    assert report.status == pb.DRIFT_STATUS_NO_REFERENCE and report.n_rows == 40


async def test_configure_monitor_refuses_enum_values_the_enums_do_not_define(plane: Plane) -> None:
    """Stored, correction 999 made every drift window of the deployment fail (KeyError, then
    MultipleTestingCorrection.Name) and be dropped after five tries: the config call was the last OK."""
    plane.deploy("enums")
    for field, allowed in [
        ("test", "DRIFT_TEST_WASSERSTEIN"),
        ("correction", "MULTIPLE_TESTING_CORRECTION_BONFERRONI"),
        ("window_kind", "WINDOW_KIND_TIME"),
        ("task", "TASK_TYPE_REGRESSION"),
    ]:
        config = pb.MonitorConfig(deployment="enums", window_rows=10, **{field: 999})
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await plane.stub.ConfigureMonitor(pb.ConfigureMonitorRequest(config=config))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        details = refused.value.details() or ""
        assert f"{field} 999 is not a value of" in details and allowed in details
    stored = await plane.stub.GetMonitorConfig(pb.GetMonitorConfigRequest(deployment="enums"))
    assert stored.window_rows == 1000  # nothing stored: the defaults


async def test_configure_monitor_refuses_a_time_window_no_report_can_hold(plane: Plane) -> None:
    """Accepted (finite and positive), 1e13 s windows ended past the int64 µs of a report: every report of
    the deployment failed and its windows were dropped after MAX_REPORT_ATTEMPTS."""
    plane.deploy("churn")
    config = pb.MonitorConfig(deployment="churn", window_kind=pb.WINDOW_KIND_TIME, window_seconds=1e13)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await plane.stub.ConfigureMonitor(pb.ConfigureMonitorRequest(config=config))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "window_seconds must lie in (0, 31622400]" in (refused.value.details() or "")
    config.window_seconds = 366 * 86400  # the longest accepted
    await plane.stub.ConfigureMonitor(pb.ConfigureMonitorRequest(config=config))


async def test_configure_monitor_refuses_a_jsd_threshold_no_score_reaches(plane: Plane) -> None:
    """The Jensen-Shannon divergence lies in [0, 1]: a threshold above 1 (a percentage, 10) was stored,
    and no feature of the deployment could drift again, with nothing said."""
    plane.deploy("churn")
    config = pb.MonitorConfig(deployment="churn", test=pb.DRIFT_TEST_JSD, threshold=10.0)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await plane.stub.ConfigureMonitor(pb.ConfigureMonitorRequest(config=config))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "a JSD threshold lies in (0, 1]" in (refused.value.details() or "")
    config.threshold = 1.0  # two samples with no bin in common reach it
    await plane.stub.ConfigureMonitor(pb.ConfigureMonitorRequest(config=config))


async def test_register_reference_profile_answers_not_found_then_invalid_argument(plane: Plane) -> None:
    """An artifact that is not a profile was DATA_LOSS (with numpy's allow_pickle advice), checked before
    the version, so an unknown model was DATA_LOSS too."""
    version = plane.register_version("ref-model")
    text = plane.registry.artifacts.put_bytes(b"hello, not a profile\n").sha256
    for model, number, code in [
        ("nosuchmodel", 7, grpc.StatusCode.NOT_FOUND),
        ("ref-model", version, grpc.StatusCode.INVALID_ARGUMENT),
    ]:
        request = pb.RegisterReferenceProfileRequest(model_name=model, version=number, artifact_sha256=text)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await plane.stub.RegisterReferenceProfile(request)
        assert refused.value.code() == code and "pickle" not in (refused.value.details() or "")
    assert "is not a reference profile" in (refused.value.details() or "")


def wide_report(window: int) -> pb.DriftReport:
    """A report of a model with 400 features (about 60 KB): a hundred such made one response over 4 MiB."""
    features = [
        pb.FeatureDrift(
            name=f"feature_{k:03d}_" + "n" * 60,
            score=0.1 + k,
            psi=0.1 + k,
            jensen_shannon=0.2 + k,
            ks_statistic=0.3 + k,
            ks_pvalue=0.4 + k,
            wasserstein=0.5 + k,
            n_current=600,
            missing_current=3,
        )
        for k in range(400)
    ]
    start = T0 + window * 1000
    return pb.DriftReport(
        deployment="wide", model_name="wide-model", version=1, window_start_us=start,
        window_end_us=start + 999, n_rows=600, status=pb.DRIFT_STATUS_NO_DRIFT, features=features,
    )  # fmt: skip


async def test_drift_reports_of_a_wide_model_are_read_page_by_page(plane: Plane) -> None:
    """GetDriftReports returned up to 100 reports in one response, each with every feature's statistics:
    for a model with hundreds of features that was over gRPC's 4 MiB, and `aetherctl drift report` and
    the SDK failed RESOURCE_EXHAUSTED for good. Pages are cut by size and resume by (window end, id)."""
    plane.deploy("wide")
    sessions = plane.server.context.sessions
    stored = [store_report(sessions, wide_report(window)).id for window in range(110)]
    first = await plane.stub.GetDriftReports(pb.GetDriftReportsRequest(deployment="wide"))
    assert first.ByteSize() < 4 * 1024 * 1024 and first.next_page_token
    # Stored while the client pages: a newer window (ahead of the cursor), and one whose window ends
    # where a listed one does (its larger id sorts it ahead too).
    newer = store_report(sessions, wide_report(110)).id
    tied = store_report(sessions, wide_report(100)).id
    seen, token = [r.id for r in first.reports], first.next_page_token
    while token:
        request = pb.GetDriftReportsRequest(deployment="wide", page_token=token)
        page = await plane.stub.GetDriftReports(request)
        seen, token = seen + [r.id for r in page.reports], page.next_page_token
    assert seen == stored[::-1]  # each once, newest first

    with MonitoringClient(plane.server.address) as client:
        everything = await asyncio.to_thread(client.drift_reports, "wide", limit=1000)
        assert [r.id for r in everything][:12] == [newer, *stored[109:100:-1], tied, stored[100]]
        assert sorted(r.id for r in everything) == sorted([*stored, newer, tied])
        assert len(everything[0].features) == 400
        since = T0 + 100 * 1000  # windows 100 to 110: the page token is bound to the window bounds
        assert len(await asyncio.to_thread(client.drift_reports, "wide", since_us=since)) == 12
        assert len(await asyncio.to_thread(client.drift_reports, "wide")) == 100


async def test_a_monitor_metrics_port_in_use_stops_the_start_before_the_loop_runs(
    tmp_path: Path, db_url: str, redis_url: str
) -> None:
    """The gauges' server was bound after the monitor loop started, and a port in use was an OSError
    traceback (status 1 with 30 lines) with the loop left running; now it is the FailedPrecondition
    ``python -m control_plane`` prints as one line, as for a --listen port in use, and no loop runs."""
    settings = ControlPlaneSettings(
        home=tmp_path, db_url=db_url, redis_url=redis_url, listen_addr="127.0.0.1:0"
    )
    monitors: list[Monitor] = []
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = f"127.0.0.1:{holder.getsockname()[1]}"
        module = monitoring_api.services(
            MonitoringSettings(metrics_addr=busy), registry=CollectorRegistry(), on_monitor=monitors.append
        )
        with pytest.raises(FailedPrecondition) as refused:
            await start_server(settings, services=[module])
    assert refused.value.message == (
        f"cannot serve the monitor's metrics on {busy}: the address is already in use"
    )
    assert [monitor._background._task for monitor in monitors] == [None]  # the loop never started
