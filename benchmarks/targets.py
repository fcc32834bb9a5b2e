"""Target verdicts, computed from the figures a benchmark measured, never typed into the report.

Each benchmark writes its verdicts (``targets`` in its results JSON) with the functions here, and
``render_results.py`` applies the same functions to a results file written before a benchmark recorded
its verdicts, so a committed JSON needs no re-run to be judged. Pure functions of the JSON's figures (no
imports beyond the standard library), so the report renders, and the rules are tested, without the
benchmarks' dependencies.

A verdict is ``{"target", "value", "bound", "met", "reason"?}``: ``met`` is True or False only when both
sides were measured on the issue's workload; otherwise it is None and ``reason`` says why (a baseline not
measured, a smaller workload than the issue's, a quick run). A failed or dropped measurement on Aether's
side is a miss (``met`` False, with the reason), never left out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

Verdict = dict[str, Any]

# The workload: a verdict is only given for a run of that size (issue 7).
DRIFT_WORKLOAD = {"features": 100, "reference_rows": 1_000_000, "current_rows": 100_000}


def verdict(
    target: str,
    value: float | None,
    bound: float,
    *,
    at_most: bool = False,
    unmeasured: str | None = None,
    failed: str | None = None,
    **extra: Any,
) -> Verdict:
    """One target. ``unmeasured`` (a reason) or a missing or non-finite value gives ``met`` None;
    ``failed`` (a reason: errors or lost data on the measured side) gives ``met`` False whatever the value.
    The value is rounded for the report and never NaN (JSON has no NaN)."""
    shown = round(value, 4) if value is not None and math.isfinite(value) else None
    out: Verdict = {"target": target, "value": shown, "bound": bound}
    if failed is not None:
        out |= {"met": False, "reason": failed}
    elif unmeasured is not None or shown is None or value is None:
        out |= {"met": None, "reason": unmeasured or "not measured"}
    else:
        out["met"] = bool(value <= bound if at_most else value >= bound)
    return out | extra


def _workload_differs(actual: Mapping[str, Any], expected: Mapping[str, int]) -> str | None:
    different = {k: actual.get(k) for k, v in expected.items() if actual.get(k) != v}
    if not different:
        return None
    wanted = ", ".join(f"{k} {v:,}" for k, v in expected.items())
    return f"workload differs from the issue's ({wanted}): {different}"


def drift_targets(d: Mapping[str, Any]) -> list[Verdict]:
    """Issue 7: "≤ 1 s for that workload, ≥ 50× faster than Evidently in the same run", the workload being
    PSI + KS + JSD for 100 features against 1M reference rows. Two readings, both judged: per window (the
    reference profile built beforehand, once per model version) and end to end (profile build + one
    window). Evidently's time includes its own pass over the reference, so only the end-to-end ratio
    compares like with like; the stricter reading, end to end, is the one of record."""
    s, w = d["seconds"], d["workload"]
    differs = _workload_differs(w, DRIFT_WORKLOAD)
    evidently = s.get("evidently")
    ev_error = d.get("evidently", {})
    no_baseline = (
        None
        if isinstance(evidently, int | float)
        else "baseline not measured: "
        + str(ev_error.get("error") or ev_error.get("skipped") or "no Evidently time")[-200:]
    )
    window, end_to_end = s["aether_window_best"], s["aether_end_to_end"]
    out = []
    for reading, seconds, of_record in (("end to end", end_to_end, True), ("per window", window, False)):
        out.append(
            verdict(
                f"≤ 1 s ({reading})", seconds, 1.0, at_most=True, unmeasured=differs,
                reading=reading, of_record=of_record,
            )
        )  # fmt: skip
        ratio = evidently / seconds if no_baseline is None else None
        out.append(
            verdict(
                f"≥ 50× faster than Evidently ({reading})", ratio, 50.0, unmeasured=differs or no_baseline,
                reading=reading, of_record=of_record,
            )
        )  # fmt: skip
    return out
