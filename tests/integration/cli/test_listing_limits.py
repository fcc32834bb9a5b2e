"""``quarantine list``, ``drift report`` and ``retrain history`` cut at ``--limit`` say so on stderr, as
``audit list``, ``runs list`` and ``jobs list`` do (cli/paging.py), and stay silent when nothing was left
out: they printed the newest ``--limit`` items and nothing else, as if that were all there was. Run
in-process against a real control plane; what no RPC writes (drift reports, retraining decisions and
evaluations) is stored through the server's own database sessions."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

from clients.aether.v1 import monitoring_pb2 as monpb
from clients.sdk.ingestion import IngestionClient
from control_plane.monitoring.reports import store_report
from control_plane.retraining import evaluation_records, records
from control_plane.retraining.evaluation import EvaluationResult, ModelScore
from tests.integration.cli.conftest import ThreadedControlPlane
from tests.integration.cli.in_process import DRIVER_STATS, Capture, aetherctl


def notice(what: str) -> str:
    return f"aetherctl: {what}\n"


def test_quarantine_list_says_when_the_limit_left_records_out(
    control_plane: str, tmp_path: Path, capsys: Capture
) -> None:
    definitions = tmp_path / "features.yaml"
    definitions.write_text(DRIVER_STATS)
    assert aetherctl(capsys, control_plane, "features", "apply", str(definitions))[0] == 0
    rows = pa.table(
        {
            "driver_id": pa.array([1, 2, 3], pa.int64()),
            "event_ts": pa.array([datetime(2024, 1, 1, 12, tzinfo=UTC)] * 3),
            "trips": pa.array([-1, -2, -3], pa.int64()),  # below the minimum of 0: each quarantined
        }
    )
    with IngestionClient(control_plane) as client:
        assert client.ingest("stats", rows).quarantined == 3

    code, out, err = aetherctl(capsys, control_plane, "quarantine", "list", "--limit", "2", "--json")
    assert code == 0 and len(json.loads(out)) == 2
    assert err == notice(
        "more quarantined records match: these are the newest 2 (--limit); raise --limit for older ones,"
        " or narrow the selection with --view, --status or --reason-contains"
    )
    # The last page ends at the limit: no notice where nothing was left out.
    code, out, err = aetherctl(capsys, control_plane, "quarantine", "list", "--limit", "3")
    assert (code, len(out.splitlines()), err) == (0, 4, "")


def _report(window_end_us: int) -> monpb.DriftReport:
    return monpb.DriftReport(
        deployment="eta",
        model_name="eta",
        version=1,
        window_start_us=window_end_us - 60_000_000,
        window_end_us=window_end_us,
        n_rows=10,
        status=monpb.DRIFT_STATUS_NO_DRIFT,
        test=monpb.DRIFT_TEST_PSI,
    )


def test_drift_report_says_when_the_limit_left_reports_out(
    control_plane_server: ThreadedControlPlane, capsys: Capture
) -> None:
    for minute in range(1, 4):
        store_report(control_plane_server.sessions, _report(minute * 60_000_000))
    address = control_plane_server.address

    code, out, err = aetherctl(capsys, address, "drift", "report", "eta", "--limit", "2")
    assert code == 0 and len(out.splitlines()) == 3  # a header and two reports
    assert err == notice(
        "more drift reports exist: these are the newest 2 (--limit); raise --limit for older ones"
    )
    code, out, err = aetherctl(capsys, address, "drift", "report", "eta", "--limit", "3", "--json")
    assert (code, len(json.loads(out)), err) == (0, 3, "")


def _evaluated_decision(control_plane_server: ThreadedControlPlane, item: int) -> None:
    """A decision that submitted a retraining job, and its challenger's evaluation."""
    sessions = control_plane_server.sessions
    draft = records.Draft("eta", item, True, ("manual",), "alice", model_name="eta", champion_version=1)
    records.add_decision(sessions, draft, ["retrain"], records.SUBMITTED, job_id=f"job-{item}")
    [decision] = records.submitted(sessions, "eta")
    scores = ModelScore({"mae": 1.0}, 2.0), ModelScore({"mae": 2.0}, 3.0)
    result = EvaluationResult(False, ("worse",), *scores, 200, "production_feedback")
    evaluation_records.add_evaluation(sessions, "eta", decision, item + 1, "mae", result, actor="alice")


DECISIONS = "more retraining decisions exist: these are the newest 2 (--limit); raise --limit for older ones"
EVALUATIONS = "more evaluations exist: these are the newest 2 (--limit); raise --limit for older ones"


def test_retrain_history_says_which_of_its_listings_the_limit_cut(
    control_plane_server: ThreadedControlPlane, capsys: Capture
) -> None:
    address = control_plane_server.address
    for item in range(1, 3):
        _evaluated_decision(control_plane_server, item)
    code, out, err = aetherctl(capsys, address, "retrain", "history", "eta", "--limit", "2", "--json")
    assert code == 0 and [len(v) for v in json.loads(out).values()] == [2, 2]
    assert err == ""

    # A third decision that did not retrain: cut from the listing with --all, not from the default one
    # (decisions that triggered).
    draft = records.Draft("eta", 3, False, ("labels",), "retraining")
    records.add_decision(control_plane_server.sessions, draft, ["too few labels"], records.NOT_TRIGGERED)
    assert aetherctl(capsys, address, "retrain", "history", "eta", "--limit", "2")[::2] == (0, "")
    code, _, err = aetherctl(capsys, address, "retrain", "history", "eta", "--limit", "2", "--all")
    assert (code, err) == (0, notice(DECISIONS))

    _evaluated_decision(control_plane_server, 4)
    code, out, err = aetherctl(capsys, address, "retrain", "history", "eta", "--limit", "2", "--json")
    assert code == 0 and [len(v) for v in json.loads(out).values()] == [2, 2]
    assert err == notice(DECISIONS) + notice(EVALUATIONS)
