"""Drift benchmark: PSI + KS + JSD for every feature of a current window against a large reference.

One command (from the repository root):

    .venv/bin/python -m benchmarks.drift [--with-evidently]

Workload (defaults, issue 7): 100 float features, 1M reference rows × 100k current rows, normal data,
20 features shifted by 0.02–0.2 σ. Timed in the same run on the same arrays:

* **aether (window)**: ``drift_scores(profile, current)`` — PSI, KS (statistic + p-value), JSD and
  normalised Wasserstein for all features, against a reference profile built beforehand. This is the
  per-window cost of the monitor: the profile is built once per model version.
* **aether (profile build)**: ``build_reference_profile(reference)`` — the one-off cost (sorting 1M
  values per feature), reported separately, and the end-to-end sum. Evidently's time includes its own
  work on the reference, so the targets (``benchmarks/targets.py``) are judged end to end (of record)
  and per window, both written to the JSON.
* **scipy**: per feature ``scipy.stats.ks_2samp`` + numpy PSI (quantile edges, a bin of its own for
  each point mass, ``numpy.histogram``)
  + ``scipy.spatial.distance.jensenshannon`` — the plain way, which re-sorts the reference every time.
* **evidently** (``--with-evidently``): ``Report([DataDriftPreset()])`` run in a separate venv
  (``.venv-bench-drift``, evidently is not a project dependency) on the same data, passed as ``.npy``.

The results must agree: KS statistics identical to scipy's, p-values and PSI within 1e-9 relative. The
JSON lands in ``benchmarks/results/drift.json`` with the machine, versions and the load average before
and after (other processes share the CPU; timings are noisy).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numba
import numpy as np
import numpy.typing as npt
import scipy
import scipy.spatial.distance
import scipy.stats

from benchmarks._common import strict_json
from benchmarks.targets import drift_targets
from kernels.drift import build_reference_profile, drift_scores, rejected

FloatArray = npt.NDArray[np.float64]

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "drift.json"
EVIDENTLY_PYTHON = ROOT / ".venv-bench-drift" / "bin" / "python"
N_BINS = 10
PSI_EPS = 1e-4

EVIDENTLY_SCRIPT = """
import json, sys, time, resource
import numpy as np, pandas as pd
import evidently
from evidently import Report
from evidently.presets import DataDriftPreset
ref = np.load(sys.argv[1]); cur = np.load(sys.argv[2])
columns = [f"f{i}" for i in range(ref.shape[1])]
ref_df = pd.DataFrame(ref, columns=columns); cur_df = pd.DataFrame(cur, columns=columns)
del ref, cur
start = time.perf_counter()
snapshot = Report([DataDriftPreset()]).run(current_data=cur_df, reference_data=ref_df)
result = snapshot.dict()
seconds = time.perf_counter() - start
drifted = None
for metric in result.get("metrics", []):
    name = str(metric.get("metric_id", metric.get("metric_name", "")))
    if "DriftedColumnsCount" in name:
        drifted = metric.get("value", {}).get("count")
print(json.dumps({"seconds": seconds, "drifted_columns": drifted, "version": evidently.__version__,
                  "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def make_data(
    n_ref: int, n_cur: int, n_features: int, n_shifted: int, seed: int
) -> tuple[FloatArray, FloatArray, FloatArray]:
    rng = np.random.default_rng(seed)
    reference = rng.standard_normal((n_ref, n_features))
    current = rng.standard_normal((n_cur, n_features))
    shifts = np.zeros(n_features)
    shifts[:n_shifted] = np.linspace(0.02, 0.2, n_shifted)
    current += shifts
    return reference, current, shifts


def scipy_baseline(reference: FloatArray, current: FloatArray) -> dict[str, FloatArray]:
    n_features = reference.shape[1]
    ks_d = np.empty(n_features)
    ks_p = np.empty(n_features)
    psi = np.empty(n_features)
    jsd = np.empty(n_features)
    for f in range(n_features):
        ref = reference[:, f]
        cur = current[:, f]
        result = scipy.stats.ks_2samp(ref, cur)
        ks_d[f] = result.statistic
        ks_p[f] = result.pvalue
        quantiles = np.quantile(ref, np.linspace(0, 1, N_BINS + 1))
        inner = quantiles[1:-1]
        # Our binning: a value two neighbouring quantiles share (a point mass) gets a bin of its own.
        masses = inner[(inner == quantiles[:-2]) | (inner == quantiles[2:])]
        edges = np.unique(np.concatenate((inner, np.nextafter(masses, np.inf))))
        bins = np.concatenate(([-np.inf], edges, [np.inf]))
        # numpy.histogram's bins are [a, b) except the last: the same left-closed bins as ours here.
        p_ref = np.histogram(ref, bins)[0] / ref.size
        p_cur = np.histogram(cur, bins)[0] / cur.size
        psi_ref = np.maximum(p_ref, PSI_EPS)
        psi_cur = np.maximum(p_cur, PSI_EPS)
        psi[f] = np.sum((psi_cur - psi_ref) * np.log(psi_cur / psi_ref))
        jsd[f] = scipy.spatial.distance.jensenshannon(p_ref, p_cur, base=2) ** 2
    return {"ks_statistic": ks_d, "ks_pvalue": ks_p, "psi": psi, "jensen_shannon": jsd}


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def run_evidently(reference: FloatArray, current: FloatArray) -> dict[str, Any]:
    if not EVIDENTLY_PYTHON.exists():
        return {"error": f"{EVIDENTLY_PYTHON} not found (create it and pip install evidently)"}
    with tempfile.TemporaryDirectory() as folder:
        ref_path = Path(folder) / "reference.npy"
        cur_path = Path(folder) / "current.npy"
        np.save(ref_path, reference)
        np.save(cur_path, current)
        done = subprocess.run(
            [str(EVIDENTLY_PYTHON), "-c", EVIDENTLY_SCRIPT, str(ref_path), str(cur_path)],
            capture_output=True,
            text=True,
            check=False,
        )
    if done.returncode != 0:
        return {"error": done.stderr.strip()[-2000:]}
    outcome: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return outcome


def max_relative(a: FloatArray, b: FloatArray, floor: float) -> float:
    scale = np.maximum(np.abs(b), floor)
    return float(np.max(np.abs(a - b) / scale))


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "scipy": scipy.__version__,
        "numba_threads": numba.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--features", type=int, default=100)
    parser.add_argument("--reference-rows", type=int, default=1_000_000)
    parser.add_argument("--current-rows", type=int, default=100_000)
    parser.add_argument("--shifted", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats of the aether window scoring")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--with-evidently", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    load_before = os.getloadavg()
    reference, current, shifts = make_data(
        args.reference_rows, args.current_rows, args.features, args.shifted, args.seed
    )
    # Compile (or load the numba cache) on a small slice so that no timing includes compilation.
    drift_scores(reference[:2_000], current[:500])

    profile_seconds, profile = timed(lambda: build_reference_profile(reference, n_bins=N_BINS))
    window_runs = []
    scores = None
    for _ in range(args.repeats):
        seconds, scores = timed(lambda: drift_scores(profile, current, psi_eps=PSI_EPS))
        window_runs.append(seconds)
    assert scores is not None
    scipy_seconds, baseline = timed(lambda: scipy_baseline(reference, current))

    unshifted = shifts == 0
    agreement = {
        "ks_statistic_identical": bool(np.array_equal(scores.ks_statistic, baseline["ks_statistic"])),
        "ks_pvalue_max_rel_diff": max_relative(scores.ks_pvalue, baseline["ks_pvalue"], 1e-300),
        "psi_max_rel_diff": max_relative(scores.psi, baseline["psi"], 1e-15),
        "jsd_max_rel_diff": max_relative(scores.jensen_shannon, baseline["jensen_shannon"], 1e-15),
    }
    detection = {
        "shifted_features": int(args.shifted),
        "ks_p_below_0.05_unshifted": int(np.sum(scores.ks_pvalue[unshifted] < 0.05)),
        "ks_bh_flagged_unshifted": int(np.sum(rejected(scores.ks_pvalue, 0.05)[unshifted])),
        "ks_bh_flagged_shifted": int(np.sum(rejected(scores.ks_pvalue, 0.05)[~unshifted])),
        "psi_ge_0.2": int(np.sum(scores.psi >= 0.2)),
    }
    evidently = (
        run_evidently(reference, current)
        if args.with_evidently
        else {"skipped": "--with-evidently not given"}
    )

    window_best = min(window_runs)
    evidently_seconds = evidently.get("seconds")
    figures: dict[str, Any] = {
        "workload": {
            "features": args.features,
            "reference_rows": args.reference_rows,
            "current_rows": args.current_rows,
            "shifted": args.shifted,
            "n_bins": N_BINS,
        },
        "seconds": {
            "aether_window_best": window_best,
            "aether_window_runs": window_runs,
            "aether_profile_build": profile_seconds,
            "aether_end_to_end": profile_seconds + window_runs[0],
            "scipy": scipy_seconds,
            "evidently": evidently.get("seconds"),
        },
        "speedup": {
            "scipy_over_aether_window": scipy_seconds / window_best,
            "scipy_over_aether_end_to_end": scipy_seconds / (profile_seconds + window_runs[0]),
            "evidently_over_aether_window": (
                evidently_seconds / window_best if isinstance(evidently_seconds, float) else None
            ),
            # Evidently's time includes its own pass over the reference: this is the like-for-like ratio.
            "evidently_over_aether_end_to_end": (
                evidently_seconds / (profile_seconds + window_runs[0])
                if isinstance(evidently_seconds, float)
                else None
            ),
        },
        "agreement": agreement,
        "detection": detection,
        "evidently": evidently,
        "machine": machine(),
        "load_average_before": list(load_before),
        "load_average_after": list(os.getloadavg()),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    figures["targets"] = drift_targets(figures)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(strict_json(figures))

    rows = [
        ("aether window (PSI+KS+JSD+W, all features)", window_best),
        ("aether profile build (once per model version)", profile_seconds),
        ("aether end to end (build + one window)", profile_seconds + window_runs[0]),
        ("scipy ks_2samp + numpy PSI + scipy JSD", scipy_seconds),
    ]
    if isinstance(evidently_seconds, float):
        rows.append(("evidently DataDriftPreset", evidently_seconds))
    print(f"{args.features} features, {args.reference_rows:,} reference x {args.current_rows:,} current rows")
    print(f"{'method':<50} {'seconds':>10} {'vs aether window':>18}")
    for name, seconds in rows:
        print(f"{name:<50} {seconds:>10.3f} {seconds / window_best:>17.1f}x")
    print(f"agreement with scipy: {json.dumps(agreement)}")
    print(f"detection: {json.dumps(detection)}")
    if "error" in evidently:
        print(f"evidently: {evidently['error'][-300:]}")
    for t in figures["targets"]:
        state = {True: "MET ", False: "MISS", None: "N/A "}[t["met"]]
        print(f"{state} {t['target']}: {t['value']} (bound {t['bound']}) {t.get('reason', '')}".rstrip())
    print(f"load average before {load_before}, after {os.getloadavg()}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
