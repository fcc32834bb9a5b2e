"""Delayed labels end to end: feedback over gRPC joined to predictions the monitor read from the log,
orphans counted and joined when their prediction arrives, quality windows over gRPC equal to a
brute-force count, a degradation alert POSTed once; and the aetherctl commands."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import re
import time
from pathlib import Path

import grpc.aio
import numpy as np
import pytest

from clients.aether.v1 import monitoring_pb2 as pb
from clients.errors import InvalidArgument
from control_plane.cli import monitoring as monitoring_cli
from tests.integration.monitoring.conftest import Plane, Webhook, eventually, record

SECOND = 1_000_000
WINDOW_S = 10


def predictions(base_us: int) -> tuple[list[str], list[int], list[float]]:
    """80 one-row requests over two 10 s windows: ids, prediction times, positive-class scores."""
    ids = [f"r-{i}" for i in range(78)] + ["late-1", "late-2"]
    times = [base_us + i * SECOND // 4 for i in range(80)]
    scores = [float(s) for s in np.random.default_rng(0).uniform(size=80)]
    return ids, times, scores


async def test_feedback_is_joined_orphans_are_counted_and_degradation_alerts_once(
    plane: Plane, webhook: Webhook
) -> None:
    base = (time.time_ns() // 1000 // (WINDOW_S * SECOND) - 5) * WINDOW_S * SECOND  # two closed windows
    ids, times, scores = predictions(base)
    plane.deploy("churn")
    await plane.stub.ConfigureMonitor(
        pb.ConfigureMonitorRequest(
            config=pb.MonitorConfig(
                deployment="churn",
                task=pb.TASK_TYPE_CLASSIFICATION,
                performance_window_seconds=WINDOW_S,
                min_labels=20,
                alert_threshold=0.8,
                webhook_url=webhook.url,
            )
        )
    )
    early = await plane.stub.RecordFeedback(
        pb.RecordFeedbackRequest(
            feedback=[pb.Feedback(request_id="late-1", label=1), pb.Feedback(request_id="late-2", label=0)]
        )
    )
    assert (early.recorded, early.joined, early.orphaned, early.orphaned_total) == (2, 0, 2, 2)

    records = [
        record(rid, np.zeros((1, 3)), {"probabilities": np.array([[1 - s, s]], dtype=np.float32)}, ts)
        for rid, ts, s in zip(ids, times, scores, strict=True)
    ]
    await plane.log(records)
    request = pb.GetPerformanceRequest(
        deployment="churn", since_us=base, until_us=base + 2 * WINDOW_S * SECOND
    )

    async def indexed() -> bool:
        answer: pb.GetPerformanceResponse = await plane.stub.GetPerformance(request)
        return sum(w.n_predictions for w in answer.windows) == 80 and answer.orphaned_feedback == 0

    await eventually(indexed)  # the two early labels joined once their predictions were read

    # Labels: right in the first window, right for every other request in the second.
    predicted = [1 if s >= 0.5 else 0 for s in scores]
    labels = {
        rid: (p if i < 40 or i % 2 == 0 else 1 - p)
        for i, (rid, p) in enumerate(zip(ids, predicted, strict=True))
    }
    labels["late-1"], labels["late-2"] = 1, 0  # already sent
    feedback = [
        pb.Feedback(request_id=rid, label=label)
        for rid, label in labels.items()
        if not rid.startswith("late")
    ]
    feedback += [pb.Feedback(request_id=f"unknown-{i}", label=1) for i in range(3)]
    answer = await plane.stub.RecordFeedback(pb.RecordFeedbackRequest(feedback=feedback))
    assert (answer.recorded, answer.joined, answer.orphaned, answer.orphaned_total) == (81, 78, 3, 3)

    performance = await plane.stub.GetPerformance(request)
    assert performance.task == pb.TASK_TYPE_CLASSIFICATION and performance.orphaned_feedback == 3
    first, second = performance.windows
    for window, rows in ((first, range(40)), (second, range(40, 80))):
        truth = [labels[ids[i]] for i in rows]
        guess = [predicted[i] for i in rows]
        assert window.n_predictions == window.n_labels == 40
        assert window.metrics["accuracy"] == pytest.approx(np.mean(np.array(truth) == np.array(guess)))
        tp = sum(t == 1 and g == 1 for t, g in zip(truth, guess, strict=True))
        assert window.metrics["precision"] == pytest.approx(tp / sum(guess))
        assert window.metrics["recall"] == pytest.approx(tp / sum(truth))
    assert first.status == pb.PERFORMANCE_STATUS_OK and first.metrics["accuracy"] == 1.0
    assert second.status == pb.PERFORMANCE_STATUS_DEGRADED

    async def alerted() -> bool:
        return len(webhook.of_kind("performance_degradation")) >= 1

    await eventually(alerted)
    await asyncio.sleep(0.5)  # several more checks: still one alert for that window
    (alert,) = webhook.of_kind("performance_degradation")
    assert alert["window_start_us"] == second.start_us and alert["metric"] == "accuracy"
    assert alert["value"] == pytest.approx(second.metrics["accuracy"])
    assert plane.gauges.get_sample_value("aether_feedback_orphaned") == 3.0


def cli(plane: Plane, *argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="aetherctl")
    parser.add_argument("--control-plane", default=plane.server.address)
    parser.add_argument("--timeout", type=float, default=10.0)
    monitoring_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = args.handler(args)
    return code, out.getvalue()


async def test_aetherctl_records_feedback_and_prints_reports_and_performance(
    plane: Plane, tmp_path: Path
) -> None:
    plane.deploy("churn")
    await plane.stub.ConfigureMonitor(
        pb.ConfigureMonitorRequest(
            config=pb.MonitorConfig(
                deployment="churn", window_rows=40, task=pb.TASK_TYPE_REGRESSION, min_labels=1
            )
        )
    )
    now = time.time_ns() // 1000
    await plane.log(
        [
            record(
                f"q-{i}",
                np.full((1, 2), float(i)),
                {"y": np.array([[2.0]], dtype=np.float32)},
                now - 1000 + i,
            )
            for i in range(40)
        ]
    )

    async def reported() -> bool:
        answer = await plane.stub.GetDriftReports(pb.GetDriftReportsRequest(deployment="churn"))
        return len(answer.reports) == 1

    await eventually(reported)
    lines = [json.dumps({"request_id": f"q-{i}", "label": 3.0}) for i in range(40)] + [
        '{"request_id": "nope", "label": 1}'
    ]
    path = tmp_path / "labels.jsonl"
    path.write_text("\n".join(lines) + "\n")
    code, text = await asyncio.to_thread(cli, plane, "feedback", "record", str(path))
    assert code == 0 and "recorded 41 labels: 40 joined, 1 orphaned" in text

    code, text = await asyncio.to_thread(cli, plane, "drift", "report", "churn", "--since", "1d", "--json")
    reports = json.loads(text)
    assert code == 0 and len(reports) == 1 and reports[0]["status"] == "DRIFT_STATUS_NO_REFERENCE"

    code, text = await asyncio.to_thread(cli, plane, "performance", "churn", "--since", "2h")
    assert code == 0 and "MAE" in text and "orphaned feedback (all deployments" in text
    assert text.rstrip().endswith(": 1")
    (row,) = [line for line in text.splitlines() if " ok " in line]
    assert row.split()[4:8] == ["40", "40", "ok", "1"]  # (two-word times) predictions, labels, status, mae

    code, text = await asyncio.to_thread(cli, plane, "drift", "report", "churn", "--features")
    assert code == 0 and "no_reference" in text and "MISSING" not in text  # no reference: no features


async def test_a_sliding_quality_config_accepted_by_configure_monitor_can_be_read(plane: Plane) -> None:
    # An hour's accuracy every 30 s: accepted, yet the plain request (the last 24 hours, as `aetherctl
    # performance churn` sends it: 2,999 windows, the cap 2,000) was INVALID_ARGUMENT.
    plane.deploy("churn")
    config = pb.MonitorConfig(
        deployment="churn",
        task=pb.TASK_TYPE_CLASSIFICATION,
        performance_window_seconds=3600,
        performance_step_seconds=30,
    )
    await plane.stub.ConfigureMonitor(pb.ConfigureMonitorRequest(config=config))
    answer = await plane.stub.GetPerformance(pb.GetPerformanceRequest(deployment="churn"))
    assert answer.range_cut and 0 < len(answer.windows) <= 2000
    assert answer.until_us - answer.since_us < 24 * 3600 * 1_000_000
    code, text = await asyncio.to_thread(cli, plane, "performance", "churn")
    assert code == 0 and "range cut to the most recent" in text
    # What cannot be computed is refused when configured, naming the limit, not on every read after.
    config.performance_step_seconds = 1
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await plane.stub.ConfigureMonitor(pb.ConfigureMonitorRequest(config=config))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "at most 1000 performance_step_seconds" in (refused.value.details() or "")


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (
            '{"request_id": "q-1", "label": 1, "row": 2.9}',
            "row must be a whole number from 0 to 4294967295, got 2.9",
        ),
        (
            '{"request_id": "q-1", "label": 1, "row": -1}',
            "row must be a whole number from 0 to 4294967295, got -1",
        ),
        ('{"request_id": "q-1", "label": 1, "row": true}', "row must be a whole number"),
        ('{"request_id": null, "label": 1}', "request_id must be a string, got null"),
        ('{"request_id": 17, "label": 1}', "request_id must be a string, got 17"),
        ('{"request_id": "q-1", "label": "3.5"}', 'label must be a number, got "3.5"'),
        ('["q-1", 1]', 'a JSON object, not ["q-1", 1]'),
        ('{"request_id": "q-1", "label": 1' + "0" * 400 + "}", "int too large to convert to float"),
    ],
)
async def test_feedback_values_are_taken_as_they_are_not_coerced(
    plane: Plane, tmp_path: Path, line: str, problem: str
) -> None:
    # "row": 2.9 was recorded as row 2, and "request_id": null as the request id "None" (then orphaned).
    path = tmp_path / "labels.jsonl"
    path.write_text('{"request_id": "q-0", "label": 1, "row": 1.0}\n' + line + "\n")
    with pytest.raises(InvalidArgument, match=re.escape(f"{path}:2: expected ") + ".*" + re.escape(problem)):
        await asyncio.to_thread(cli, plane, "feedback", "record", str(path))


async def test_feedback_naming_a_deployment_that_does_not_exist_is_refused(plane: Plane) -> None:
    # A misspelt deployment's labels were stored as orphans that could never join.
    plane.deploy("churn")
    request = pb.RecordFeedbackRequest(
        feedback=[
            pb.Feedback(request_id="r-1", label=1, deployment="churn"),
            pb.Feedback(request_id="r-2", label=0, deployment="chrun"),
        ]
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await plane.stub.RecordFeedback(request)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    assert "'chrun' not found" in (refused.value.details() or "")
    del request.feedback[1]
    answer = await plane.stub.RecordFeedback(request)
    assert (answer.recorded, answer.orphaned_total) == (1, 1)  # nothing of the refused call was stored
