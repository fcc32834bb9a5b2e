"""Serving's verdicts: a baseline that did not run is "not measured", never a measured miss with a NaN
value; results files hold standard JSON (no NaN); the report names the MLServer version the run used."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest

from benchmarks import render_results
from benchmarks._common import strict_json
from benchmarks.loadgen.core import RunSamples
from benchmarks.targets import serving_targets

RESULTS = Path(render_results.__file__).with_name("results")


def committed() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((RESULTS / "serving.json").read_text())
    return data


def refuse(constant: str) -> None:
    raise ValueError(f"not JSON: {constant}")


def test_committed_serving_verdicts_are_reproduced() -> None:
    d = committed()
    assert [t["met"] for t in serving_targets(d["results"])] == [t["met"] for t in d["targets"]]


def test_without_mlserver_its_ratio_is_not_measured() -> None:
    d = committed()
    d["results"] = {k: v for k, v in d["results"].items() if not k.startswith("mlserver")}
    d["targets"] = serving_targets(d["results"])
    first = d["targets"][0]
    assert first["met"] is None and first["value"] is None
    assert first["reason"] == "baseline not measured: MLServer did not run"
    assert all(t["met"] is not None for t in d["targets"][1:])
    text = render_results.serving(json.loads(strict_json(d), parse_constant=refuse))
    assert (
        "| ModelInfer c=32 throughput / MLServer fastest | – | 2 | not measured: baseline not measured"
        in text
    )


def test_results_are_strict_json() -> None:
    no_answers = RunSamples(4, 1.0, [], 3, "UNAVAILABLE: down").result().summary()
    document = {"a": float("nan"), "b": [float("inf"), 1.5], "c": {"run": no_answers}}
    parsed = json.loads(strict_json(document), parse_constant=refuse)
    assert parsed["a"] is None and parsed["b"] == [None, 1.5]
    assert parsed["c"]["run"]["p99_ms"] is None and parsed["c"]["run"]["errors"] == 3
    with pytest.raises(ValueError):
        json.loads('{"a": NaN}', parse_constant=refuse)
    assert math.isnan(no_answers["p99_ms"])  # what strict_json converted


def test_the_mlserver_version_comes_from_the_results() -> None:
    d = copy.deepcopy(committed())
    d["versions"]["mlserver"] = "9.9.9"
    text = render_results.serving(d)
    assert "| MLServer 9.9.9, batching off |" in text and "1.7.1" not in text


def test_failed_calls_are_counted_and_no_target_over_them_is_met() -> None:
    d = copy.deepcopy(committed())
    d["results"]["model_infer"]["8"]["errors"] = 120  # ModelInfer c=8 is met on the answered calls alone
    d["results"]["floor"]["32"]["errors"] = 5
    d["targets"] = serving_targets(d["results"])
    by_name = {t["target"]: t for t in d["targets"]}
    ours = by_name["ModelInfer c=8 throughput / floor"]
    assert ours["met"] is False and ours["reason"] == "120 failed calls on Aether's side"
    theirs = by_name["ModelInfer c=32 throughput / floor"]
    assert theirs["met"] is None and theirs["reason"] == "baseline had 5 failed calls"
    text = render_results.serving(d)
    # The figures are the committed run's, whatever they are: only what the failed calls add is checked.
    row = next(line for line in text.splitlines() if line.startswith("| ModelInfer c=8 throughput / floor |"))
    assert row.endswith("| **missed** (120 failed calls on Aether's side) |"), row
    assert ", **120 failed calls**" in text
