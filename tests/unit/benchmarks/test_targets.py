"""Target verdicts are computed from the measured figures (benchmarks/targets.py), not typed: a run that
misses shows as missed, one whose baseline was not measured shows as not measured, never as met."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks import render_results
from benchmarks.targets import (
    QUICK_RUN,
    drift_targets,
    online_features_targets,
    pit_join_targets,
    serving_targets,
    streaming_targets,
    tracking_targets,
)

RESULTS = Path(render_results.__file__).with_name("results")


def committed(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((RESULTS / f"{name}.json").read_text())
    return data


def drift_figures(window: float, build: float, evidently: float | None) -> dict[str, Any]:
    return {
        "workload": {"features": 100, "reference_rows": 1_000_000, "current_rows": 100_000, "shifted": 20},
        "seconds": {
            "aether_window_best": window,
            "aether_profile_build": build,
            "aether_end_to_end": build + window,
            "evidently": evidently,
        },
        "evidently": {"seconds": evidently} if evidently else {"skipped": "--with-evidently not given"},
    }


def by_name(targets: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {t["target"]: t for t in targets}


def test_drift_is_judged_end_to_end_and_per_window() -> None:
    targets = by_name(drift_targets(drift_figures(window=0.5, build=7.0, evidently=231.0)))
    assert targets["≤ 1 s (end to end)"]["met"] is False
    assert targets["≥ 50× faster than Evidently (end to end)"]["met"] is False  # 231 / 7.5 = 30.8
    assert targets["≥ 50× faster than Evidently (end to end)"]["value"] == round(231.0 / 7.5, 4)
    assert targets["≤ 1 s (per window)"]["met"] is True
    assert targets["≥ 50× faster than Evidently (per window)"]["met"] is True
    assert [t["target"] for t in drift_targets(drift_figures(0.5, 7.0, 231.0)) if t["of_record"]] == [
        "≤ 1 s (per window)",
        "≥ 50× faster than Evidently (per window)",
    ]


def test_drift_without_evidently_or_on_another_workload_is_not_measured() -> None:
    targets = by_name(drift_targets(drift_figures(window=0.5, build=0.1, evidently=None)))
    speed = targets["≥ 50× faster than Evidently (end to end)"]
    assert speed["met"] is None and speed["value"] is None
    assert speed["reason"].startswith("baseline not measured")
    smaller = drift_figures(window=0.01, build=0.01, evidently=231.0)
    smaller["workload"]["reference_rows"] = 10_000
    assert all(t["met"] is None and "workload differs" in t["reason"] for t in drift_targets(smaller))


def test_committed_drift_json_renders_computed_verdicts() -> None:
    d = committed("drift")
    assert "targets" not in d or d["targets"] == drift_targets(d)
    text = render_results.drift(d)
    assert "meets both" not in text
    assert "| ≥ 50× faster than Evidently (end to end) | 30.6 | 50 | **missed** |" in text
    assert "| ≤ 1 s (per window) | 0.463 | 1 | met |" in text


def test_drift_rendering_follows_the_figures() -> None:
    slow = copy.deepcopy(committed("drift"))
    slow.pop("targets", None)
    slow["seconds"]["aether_window_best"] = 2.5
    slow["seconds"]["evidently"] = 10.0
    text = render_results.drift(slow)
    assert "| ≤ 1 s (per window) | 2.5 | 1 | **missed** |" in text
    assert "| ≥ 50× faster than Evidently (per window) | 4 | 50 | **missed** |" in text


def test_pit_join_is_judged_on_the_users_path_and_the_kernel() -> None:
    # Figures set here, on the committed run's shape: the verdicts follow them, whatever a re-run measured
    # (the committed figures change with every run and every host).
    d = copy.deepcopy(committed("pit_join"))
    d.pop("targets", None)
    figures = {
        "aether": {"best_s": 0.4, "label_rows_per_s": 2.5e6, "peak_over_output": 1.4},
        "aether-store": {"best_s": 2.5, "label_rows_per_s": 4e5, "peak_over_output": 2.0},
        "duckdb": {"best_s": 4.0, "label_rows_per_s": 2.5e5, "peak_over_output": 15.0},
    }
    for case in d["cases"]:
        if case["layout"] == "one" and case["engine"] in figures:
            case.update(figures[case["engine"]])
    targets = by_name(pit_join_targets(d))
    store = targets["≥ 2M label rows/s, one view (get_historical_features)"]
    assert store["met"] is False and store["of_record"] is True
    assert targets["≥ 2M label rows/s, one view (in-memory kernel)"]["met"] is True
    assert targets["≥ 2M label rows/s, one view (in-memory kernel)"]["of_record"] is False
    assert targets["DuckDB time / Aether time ≥ 1, one view (get_historical_features)"]["met"] is True
    assert targets["peak ≤ 3× output, one view (in-memory kernel)"]["met"] is True
    text = render_results.pit_join(d)
    assert (
        "| ≥ 2M label rows/s, one view (get_historical_features) | 400,000 | 2,000,000 | **missed** |" in text
    )
    assert "| ≥ 2M label rows/s, one view (in-memory kernel) | 2,500,000 | 2,000,000 | met |" in text
    assert "Of record (get_historical_features): missed." in text


def test_pit_join_follows_the_figures_and_failed_cases() -> None:
    d = copy.deepcopy(committed("pit_join"))
    d.pop("targets", None)
    for case in d["cases"]:
        if case["engine"] == "aether" and case["layout"] == "one":
            case.update(best_s=100.0, label_rows_per_s=1e4, peak_over_output=9.0)
        if case["engine"] == "duckdb":
            case.clear()
            case.update(engine="duckdb", layout="one", error="ModuleNotFoundError: No module named 'duckdb'")
    targets = by_name(pit_join_targets(d))
    kernel = targets["≥ 2M label rows/s, one view (in-memory kernel)"]
    assert kernel["met"] is False and kernel["value"] == 1e4
    assert targets["peak ≤ 3× output, one view (in-memory kernel)"]["met"] is False
    duck = targets["DuckDB time / Aether time ≥ 1, one view (in-memory kernel)"]
    assert duck["met"] is None and "No module named 'duckdb'" in duck["reason"]
    d["cases"] = [c for c in d["cases"] if c["engine"] != "aether-store"] + [
        {"engine": "aether-store", "layout": "one", "error": "Traceback ...\nRuntimeError: boom\n"}
    ]
    store = by_name(pit_join_targets(d))["≥ 2M label rows/s, one view (get_historical_features)"]
    assert store["met"] is False and store["reason"] == "failed: RuntimeError: boom"


def test_tracking_targets() -> None:
    d = committed("tracking")
    targets = by_name(tracking_targets(d))
    assert targets["logging ≥ 100× MLflow log_batch"]["met"] is True
    assert targets["compare over 10,000 runs p99 ≤ 200 ms"]["met"] is True
    slow = copy.deepcopy(d)
    slow.pop("targets", None)
    slow["aether_compare"]["p99_ms"] = 500.0
    slow["speedup_vs_mlflow"] = 20.0
    text = render_results.tracking(slow)
    assert "| logging ≥ 100× MLflow log_batch | 20 | 100 | **missed** |" in text
    assert "| compare over 10,000 runs p99 ≤ 200 ms | 500 | 200 | **missed** |" in text
    lost = copy.deepcopy(d)
    lost["aether_logging_pipelined"]["dropped_points"] = 7
    logging = by_name(tracking_targets(lost))["logging ≥ 100× MLflow log_batch"]
    assert logging["met"] is False and "7 points dropped" in logging["reason"]
    skipped = copy.deepcopy(d)
    skipped["mlflow_logging"], skipped["speedup_vs_mlflow"] = {"skipped": "--skip-mlflow"}, None
    logging = by_name(tracking_targets(skipped))["logging ≥ 100× MLflow log_batch"]
    assert logging["met"] is None and logging["reason"].startswith("baseline not measured")


def test_failed_or_skipped_baselines_render_as_not_run() -> None:
    d = copy.deepcopy(committed("pit_join"))
    d.pop("targets", None)
    d["cases"] = [c for c in d["cases"] if c["engine"] != "duckdb"] + [
        {
            "engine": "duckdb",
            "layout": "one",
            "error": "Traceback ...\nModuleNotFoundError: No module named 'duckdb'\n",
        }
    ]
    text = render_results.pit_join(d)
    assert "| one | duckdb | not run: ModuleNotFoundError: No module named 'duckdb' | – | – |" in text
    t = copy.deepcopy(committed("tracking"))
    t.pop("targets", None)
    t["mlflow_logging"], t["speedup_vs_mlflow"] = {"skipped": "--skip-mlflow"}, None
    text = render_results.tracking(t)
    assert "| MLflow `log_batch`, local server | – | not run: --skip-mlflow |" in text
    assert "not measured: baseline not measured: MLflow skipped (--skip-mlflow)" in text


def test_pit_join_exits_non_zero_when_an_engine_fails(tmp_path: Path) -> None:
    # An engine that does not exist fails in its subprocess like one whose library is missing.
    script = Path(render_results.__file__).with_name("pit_join.py")
    out = tmp_path / "pit_join.json"
    done = subprocess.run(
        [
            sys.executable,
            str(script),
            "--quick",
            "--engines",
            "no-such-engine",
            "--layouts",
            "one",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    assert "failed: no-such-engine/one" in done.stderr
    written = json.loads(out.read_text())
    assert "error" in written["cases"][0]
    assert "not run: " in render_results.pit_join(written)


def test_quoted_feast_figures_are_labelled_as_not_measured() -> None:
    text = render_results.online_features(committed("online_features"))
    feast = [paragraph for paragraph in text.split("\n\n") if "Feast" in paragraph]
    assert len(feast) == 1
    assert "Not measured here" in feast[0] and "quotes" in feast[0] and "not installed" in feast[0]
    assert "quoted" in render_results.HEADER and "not measured" in render_results.HEADER


def test_a_quick_or_smaller_run_is_shown_but_not_judged() -> None:
    """Quick runs were judged met or missed like full ones (the online-features and serving targets, and
    streaming's for any ``--events``), though a smoke size measures nothing of record."""
    online = committed("online_features")
    full = online_features_targets(online | {"quick": False})
    assert [t["met"] for t in full] == [t["met"] for t in full if t["met"] is not None]  # all judged
    quick = online_features_targets(online | {"quick": True})
    assert {t["met"] for t in quick} == {None} and {t["reason"] for t in quick} == {QUICK_RUN}
    assert [t["value"] for t in quick] == [t["value"] for t in full]  # the figures are still shown

    serving = committed("serving")["results"]
    assert None not in {t["met"] for t in serving_targets(serving) if "reason" not in t}
    assert {t["met"] for t in serving_targets(serving, quick=True)} == {None}

    stream = committed("streaming")
    assert streaming_targets(stream)[0]["met"] is (stream["end_to_end_events_per_s"] >= 50_000)
    for smaller in (
        {"events": 20_000},
        {"quick": True},
        {"command": "python benchmarks/streaming.py --quick"},
    ):
        (verdict,) = streaming_targets(stream | smaller)
        assert verdict["met"] is None and verdict["value"] is not None, smaller


def test_render_writes_where_it_is_told_and_help_writes_nothing(tmp_path: Path) -> None:
    report = render_results.OUT
    before = report.read_bytes()
    render_results.main(["--output", str(tmp_path / "R.md")])
    assert (tmp_path / "R.md").read_text().startswith("# Benchmark results")
    try:
        render_results.main(["--help"])
    except SystemExit as exit_:
        assert exit_.code == 0
    assert report.read_bytes() == before
