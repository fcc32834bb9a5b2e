"""Table and verdict formatting shared by the sections of ``render_results.py``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from benchmarks.targets import is_quick


def _table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _verdict(met: bool | None) -> str:
    return "met" if met else ("**missed**" if met is not None else "–")


def _figure(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def _target_verdict(t: dict[str, Any]) -> str:
    """met / **missed** (with the reason when one is given, e.g. errors), or "not measured: why"."""
    if t["met"] is None:
        return f"not measured: {t.get('reason', 'no value')}"
    return _verdict(t["met"]) + (f" ({t['reason']})" if t.get("reason") else "")


def _targets_table(targets: Iterable[dict[str, Any]], header: str = "target") -> str:
    rows = [(t["target"], _figure(t["value"]), _figure(t["bound"]), _target_verdict(t)) for t in targets]
    return _table((header, "value", "bound", "verdict"), rows)


def _judged(
    d: dict[str, Any], compute: Callable[[dict[str, Any]], list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """The verdicts the run wrote, or, for a results file written before it wrote any, the same rule
    applied to its measured figures."""
    targets: list[dict[str, Any]] = d.get("targets") or compute(d)
    return targets


def _reason(result: dict[str, Any]) -> str:
    """Why a case or baseline has no figures: its skip note, or the last line of its error."""
    lines = [
        line for line in str(result.get("skipped") or result.get("error") or "").splitlines() if line.strip()
    ]
    return lines[-1].strip().replace("|", "/")[:160] if lines else "no result recorded"


def _p99(r: dict[str, Any]) -> str:
    return "no answers" if r.get("p99_ms") is None else f"{r['p99_ms']:.1f}"  # null: every call failed


def _failed(r: dict[str, Any]) -> str:
    # Failed calls are left out of throughput and latency: the cell must say they happened.
    return f", **{r['errors']:,} failed calls**" if r.get("errors") else ""


def _record_summary(targets: list[dict[str, Any]], key: str) -> str:
    record = [t for t in targets if t.get("of_record")]
    met = [t["met"] for t in record]
    state = "met" if all(m is True for m in met) else ("missed" if False in met else "not all measured")
    return f"Of record ({record[0][key]}): {state}." if record else ""


def _meta(d: dict[str, Any]) -> str:
    machine = d.get("machine") or d.get("environment", {}).get("machine") or {}
    cpu = machine.get("cpu_model") or machine.get("cpu") or "?"
    cores = machine.get("cores") or machine.get("cpus") or "?"
    when = d.get("run_at") or d.get("timestamp") or "?"
    load = d.get("load_average") or d.get("load_average_before") or d.get("load_average_1m_at_end")
    load_text = ""
    if isinstance(load, dict):
        before, after = load.get("before", ["?"])[0], load.get("after", ["?"])[0]
        load_text = f"; load average before/after {before:.1f}/{after:.1f}"
    elif isinstance(load, list):
        load_text = f"; load average {load[0]:.1f}"
    elif isinstance(load, int | float):
        load_text = f"; load average {load:.1f}"
    when_text = f" {when}" if when != "?" else ""
    measured = f"_Measured{when_text} on {cpu}, {cores} cores{load_text}._"
    if is_quick(d):
        return (
            "**QUICK RUN (smoke size): these figures show that the benchmark runs, not how fast anything is; "
            "no verdict below is of record. Re-run without `--quick`.**\n\n" + measured
        )
    return measured
