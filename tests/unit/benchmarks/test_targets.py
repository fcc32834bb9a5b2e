"""Target verdicts are computed from the measured figures (benchmarks/targets.py), not typed: a run that
misses shows as missed, one whose baseline was not measured shows as not measured, never as met."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from benchmarks import render_results
from benchmarks.targets import drift_targets

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
        "≤ 1 s (end to end)",
        "≥ 50× faster than Evidently (end to end)",
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
