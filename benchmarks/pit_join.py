"""Point-in-time join benchmark: Aether's kernel against DuckDB ``ASOF JOIN`` and pandas ``merge_asof``.

One command (DuckDB and pandas live only in the benchmark venv, never in the project's):

    python3 -m venv .venv-bench && .venv-bench/bin/pip install numpy numba duckdb pandas pyarrow
    .venv-bench/bin/python benchmarks/pit_join.py            # full size, writes results/pit_join.json
    .venv-bench/bin/python benchmarks/pit_join.py --quick    # smoke size, prints only (or --out PATH)
    .venv/bin/python benchmarks/pit_join.py --labels 100000 --features 1000000 --entities 10000 \
        --engines aether,aether-store --layouts one --profile 15   # smaller, with a cProfile per case

Data: label rows (entity, timestamp) and feature rows (entity, event time, ingestion time, float32
values), uniform over entities and 90 days, in random order. "One view": every feature row in one view
of 50 features. "Five views": the same volume split into five views of (rows / 5) rows x 10 features,
joined in one call. Each case runs in its own subprocess, which loads the data, builds the engine's
input (not timed: Arrow tables for DuckDB, DataFrames for pandas), then times the join ``--repeats``
times. Peak memory is the process's high-water mark during the timed joins above its resident size
before them (``/proc/self/clear_refs`` resets the mark), compared with the output size
(labels x features x 4 bytes plus one validity byte per label row and view).

What each engine's timing includes: Aether, sorting the labels, the join and gathering values into
label order with a validity mask (in memory); Aether-store, the same join end to end through the offline
store: ``get_historical_features`` streaming the Parquet files (written, date-partitioned, before the
timing) in two passes and returning an Arrow table with the dataset's content hash (run with the project's
.venv interpreter, which has the control plane's imports); DuckDB, the query materialized as an Arrow table
(in whatever row order DuckDB returns); pandas, sorting both sides by time and ``merge_asof`` (result in
time order). DuckDB and pandas do not break event-time ties by ingestion time; the timestamps are µs
over 90 days, so ties are practically absent, and the cross-check (matched rows and the sum of the first
feature per view) is printed for every engine.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import importlib
import json
import os
import platform
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # the kernel is imported from the working tree

from benchmarks._common import strict_json  # noqa: E402
from benchmarks.targets import pit_join_targets  # noqa: E402

DAY_US = 86_400_000_000
SPAN_US = 90 * DAY_US
CHUNK_ROWS = 1 << 20
ENGINES = ("aether", "aether-store", "duckdb", "pandas")
# The offline-store case runs the control plane's code, whose imports (grpc, protobuf) live in the
# project's venv rather than the benchmark's; it only needs numpy, numba and pyarrow from either.
PROJECT_PYTHON = REPO_ROOT / ".venv" / "bin" / "python"
T0_US = 1_704_067_200_000_000  # 2024-01-01 UTC: feature times become real dates for the partitions
_printed_header: list[bool] = []  # the table header is printed before the first row


def generate(data_dir: Path, labels: int, features: int, entities: int, n_features: int, views: int) -> None:
    """Write the data set as .npy files, chunk by chunk, so the parent never holds it whole."""
    rng = np.random.default_rng(20240601)
    np.save(data_dir / "label_entity.npy", rng.integers(0, entities, labels, dtype=np.int64))
    np.save(data_dir / "label_ts.npy", rng.integers(0, SPAN_US, labels, dtype=np.int64))
    layouts = {"one": [(features, n_features)], "five": [(features // views, n_features // views)] * views}
    for layout, shapes in layouts.items():
        for v, (rows, width) in enumerate(shapes):
            prefix = data_dir / f"{layout}_{v}"
            event_ts = rng.integers(0, SPAN_US, rows, dtype=np.int64)
            np.save(f"{prefix}_entity.npy", rng.integers(0, entities, rows, dtype=np.int64))
            np.save(f"{prefix}_ts.npy", event_ts)
            np.save(f"{prefix}_ingest.npy", event_ts + rng.integers(0, DAY_US, rows, dtype=np.int64))
            values = np.lib.format.open_memmap(f"{prefix}_values.npy", "w+", np.float32, (rows, width))
            for start in range(0, rows, CHUNK_ROWS):
                stop = min(rows, start + CHUNK_ROWS)
                values[start:stop] = rng.random((stop - start, width), dtype=np.float32)
            values.flush()
            del values


def load_views(data_dir: Path, layout: str) -> list[dict[str, np.ndarray]]:
    views = []
    for v in range(5 if layout == "five" else 1):
        prefix = data_dir / f"{layout}_{v}"
        views.append({col: np.load(f"{prefix}_{col}.npy") for col in ("entity", "ts", "ingest", "values")})
    return views


def memory_kb() -> tuple[int, int]:
    """(current resident size, high-water mark) of this process, in KiB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def run_case(data_dir: Path, engine: str, layout: str, repeats: int, profile: int = 0) -> dict[str, Any]:
    """Runs in a subprocess: one engine on one layout. ``profile`` > 0 prints that many functions of a
    cProfile of the timed joins (by own time) to stderr; only the calling thread is profiled, and the
    profiler's overhead is in the times then."""
    label_entity = np.load(data_dir / "label_entity.npy")
    label_ts = np.load(data_dir / "label_ts.npy")
    views = load_views(data_dir, layout)
    setups = {
        "aether": setup_aether,
        "aether-store": lambda entity, ts, feature_views: setup_aether_store(
            entity, ts, feature_views, store_root=data_dir / f"offline_{layout}"
        ),
        "duckdb": setup_duckdb,
        "pandas": setup_pandas,
    }
    join = setups[engine](label_entity, label_ts, views)
    profiler = cProfile.Profile() if profile > 0 else None
    times, peaks = [], []
    checks: list[tuple[int, float]] = []
    for _ in range(repeats):
        before, _ = memory_kb()
        reset_peak()
        if profiler is not None:
            profiler.enable()
        start = time.perf_counter()
        result = join()
        times.append(time.perf_counter() - start)
        if profiler is not None:
            profiler.disable()
        peaks.append((memory_kb()[1] - before) * 1024)
        checks = result_checks(engine, result, len(views))
        del result
    if profiler is not None:
        print(f"--- cProfile of {engine}/{layout}, {repeats} run(s) ---", file=sys.stderr)
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(profile)
    output_bytes = int(label_ts.shape[0] * sum(v["values"].shape[1] * 4 + 1 for v in views))
    return {
        "engine": engine,
        "layout": layout,
        "times_s": times,
        "best_s": min(times),
        "label_rows_per_s": label_ts.shape[0] / min(times),
        "peak_extra_bytes": max(peaks),
        "output_bytes": output_bytes,
        "peak_over_output": max(peaks) / output_bytes,
        "checks": [{"matched": m, "sum_first_feature": s} for m, s in checks],
    }


def setup_aether(label_entity: np.ndarray, label_ts: np.ndarray, views: list[dict[str, np.ndarray]]) -> Any:
    from kernels.asof_join import asof_finalize, asof_update, gather_rows, index_labels, new_state

    def join() -> list[tuple[np.ndarray, np.ndarray]]:
        labels = index_labels(label_entity, label_ts)  # sorted once, shared by every view
        out = []
        for view in views:
            state = new_state(labels)
            asof_update(state, view["entity"], view["ts"], view["ingest"])
            out.append(gather_rows(view["values"], asof_finalize(state, ttl_us=0)))
        return out

    # Compile (or load the numba cache) outside the timing, on a tiny slice of the same dtypes.
    warm = new_state(index_labels(label_entity[:10], label_ts[:10]))
    asof_update(warm, views[0]["entity"][:10], views[0]["ts"][:10], views[0]["ingest"][:10])
    gather_rows(views[0]["values"][:10], asof_finalize(warm))
    return join


def setup_aether_store(
    label_entity: np.ndarray, label_ts: np.ndarray, views: list[dict[str, np.ndarray]], store_root: Path
) -> Any:
    """End to end through the offline store: the views are written as Parquet (date-partitioned, not
    timed), then ``get_historical_features`` streams them back file by file: label indexing, both passes
    over the files, the Arrow result table (labels + one column per feature) and its content hash."""
    import pyarrow as pa

    from clients.aether.v1 import feature_registry_pb2 as pb
    from clients.aether.v1 import types_pb2
    from control_plane.offline.historical import get_historical_features
    from control_plane.offline.store import OfflineStore

    store = OfflineStore(str(store_root))
    ts_type = pa.timestamp("us", tz="UTC")
    catalog_views = {}
    for v, view in enumerate(views):
        width = view["values"].shape[1]
        for start in range(0, view["ts"].shape[0], CHUNK_ROWS):
            stop = min(view["ts"].shape[0], start + CHUNK_ROWS)
            columns = {
                "entity": pa.array(view["entity"][start:stop]),
                "event_ts": pa.array(view["ts"][start:stop] + T0_US, ts_type),
                "ingested_ts": pa.array(view["ingest"][start:stop] + T0_US, ts_type),
            }
            columns |= {f"f{c}": pa.array(view["values"][start:stop, c]) for c in range(width)}
            store.write(f"view{v}", 1, pa.table(columns))
        spec = pb.FeatureViewSpec(
            name=f"view{v}",
            entity="entity",
            features=[pb.Feature(name=f"f{c}", value_type=types_pb2.FLOAT32) for c in range(width)],
        )
        catalog_views[f"view{v}"] = pb.FeatureView(spec=spec, version=1)

    class StaticCatalog:
        """The views just written, as the registry would describe them (the benchmark has no database)."""

        def get_feature_view(self, name: str, version: int = 0) -> Any:
            return catalog_views[name]

        def get_entity(self, name: str) -> Any:
            return pb.Entity(name=name, join_keys=[pb.JoinKey(name="entity", value_type=types_pb2.INT64)])

    catalog = StaticCatalog()
    labels = pa.table({"entity": label_entity, "event_ts": pa.array(label_ts + T0_US, ts_type)})
    refs = list(catalog_views)

    def join() -> Any:
        return get_historical_features(store, catalog, labels, refs, record=False).table

    get_historical_features(store, catalog, labels.slice(0, 10), refs, record=False)  # compiles numba
    return join


def setup_duckdb(label_entity: np.ndarray, label_ts: np.ndarray, views: list[dict[str, np.ndarray]]) -> Any:
    import duckdb  # type: ignore[import-not-found]
    import pyarrow as pa

    con = duckdb.connect()
    labels = pa.table({"row_id": np.arange(label_ts.shape[0]), "entity": label_entity, "ts": label_ts})
    con.register("labels", labels)
    select, joins = ["l.row_id"], []
    for v, view in enumerate(views):
        columns = {"entity": view["entity"], "ts": view["ts"], "ingest": view["ingest"]}
        width = view["values"].shape[1]
        columns |= {f"v{v}_f{c}": np.ascontiguousarray(view["values"][:, c]) for c in range(width)}
        con.register(f"view{v}", pa.table(columns))
        select += [f"f{v}.v{v}_f{c}" for c in range(width)]
        joins.append(f"ASOF LEFT JOIN view{v} f{v} ON l.entity = f{v}.entity AND l.ts >= f{v}.ts")
    sql = f"SELECT {', '.join(select)} FROM labels l {' '.join(joins)}"

    def join() -> Any:
        return con.execute(sql).to_arrow_table()

    return join


def setup_pandas(label_entity: np.ndarray, label_ts: np.ndarray, views: list[dict[str, np.ndarray]]) -> Any:
    import pandas as pd  # type: ignore[import-untyped]

    labels = pd.DataFrame({"row_id": np.arange(label_ts.shape[0]), "entity": label_entity, "ts": label_ts})
    frames = []
    for v, view in enumerate(views):
        values = pd.DataFrame(view["values"], columns=[f"v{v}_f{c}" for c in range(view["values"].shape[1])])
        keys = pd.DataFrame({"entity": view["entity"], "ts": view["ts"]})
        frames.append(pd.concat([keys, values], axis=1))

    def join() -> Any:
        result = labels.sort_values("ts", kind="stable")
        for frame in frames:
            result = pd.merge_asof(
                result,
                frame.sort_values("ts"),
                on="ts",
                by="entity",
                direction="backward",
                allow_exact_matches=True,
            )
        return result

    return join


def result_checks(engine: str, result: Any, n_views: int) -> list[tuple[int, float]]:
    """Per view: how many label rows matched, and the sum of the view's first feature over them."""
    checks = []
    for v in range(n_views):
        if engine == "aether":
            values, valid = result[v]
            checks.append((int(valid.sum()), float(values[valid, 0].sum(dtype=np.float64))))
        elif engine == "aether-store":
            column = result.column(f"view{v}:f0")
            present = column.drop_null().to_numpy()
            checks.append((len(present), float(present.sum(dtype=np.float64))))
        else:
            column = result[f"v{v}_f0"]
            array = column.to_numpy(zero_copy_only=False) if engine == "duckdb" else column.to_numpy()
            present = ~np.isnan(array.astype(np.float64))
            checks.append((int(present.sum()), float(array[present].sum(dtype=np.float64))))
    return checks


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "cpu": cpu,
        "cpus": len(os.sched_getaffinity(0)),
        "memory_gib": round(mem_kb / 2**20, 1),
        "os": platform.platform(),
    }


def versions() -> dict[str, str]:
    """Versions of the libraries that ran; one that is not installed (its engine was not asked for) is
    left out."""
    found = {"python": platform.python_version(), "numpy": np.__version__}
    for name in ("numba", "duckdb", "pandas", "pyarrow"):
        try:
            found[name] = importlib.import_module(name).__version__
        except ImportError:
            continue
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke size: 20k labels, 200k feature rows")
    parser.add_argument("--labels", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=10_000_000, help="feature rows (all views together)")
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--width", type=int, default=50, help="features in total (split over five views)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case (pandas: at most 2)")
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--layouts", default="one,five", help="one, five or both (comma-separated)")
    parser.add_argument(
        "--profile", type=int, default=0, metavar="N", help="print a cProfile (top N functions) per case"
    )
    parser.add_argument(
        "--out", type=Path, help="JSON results (default: results/pit_join.json, none if --quick)"
    )
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: engine/layout in a subprocess
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.case:
        engine, layout = args.case.split("/")
        print(json.dumps(run_case(args.data, engine, layout, args.repeats, args.profile)))
        return
    if args.quick:
        args.labels, args.features, args.entities = 20_000, 200_000, 2_000
    out = args.out or (None if args.quick else Path(__file__).parent / "results" / "pit_join.json")

    with tempfile.TemporaryDirectory(prefix="pit_join_") as tmp:
        data_dir = Path(tmp)
        start = time.perf_counter()
        generate(data_dir, args.labels, args.features, args.entities, args.width, views=5)
        print(f"generated data in {time.perf_counter() - start:.1f}s", flush=True)
        cases = []
        for layout in args.layouts.split(","):
            for engine in args.engines.split(","):
                repeats = min(args.repeats, 2) if engine == "pandas" else args.repeats
                in_project = engine == "aether-store" and PROJECT_PYTHON.exists()
                python = PROJECT_PYTHON if in_project else sys.executable
                command = [str(python), __file__, "--case", f"{engine}/{layout}", "--data", str(data_dir)]
                command += ["--repeats", str(repeats), "--profile", str(args.profile)]
                done = subprocess.run(command, capture_output=True, text=True, check=False)
                if args.profile and done.returncode == 0:
                    print(done.stderr, file=sys.stderr)
                if done.returncode != 0:
                    print(f"{engine}/{layout} failed:\n{done.stderr}", file=sys.stderr)
                    cases.append({"engine": engine, "layout": layout, "error": done.stderr[-2000:]})
                    continue
                cases.append(json.loads(done.stdout.strip().splitlines()[-1]))
                print_row(cases[-1])

    report = {
        "benchmark": "point-in-time join",
        "labels": args.labels,
        "feature_rows": args.features,
        "entities": args.entities,
        "features": args.width,
        "layouts": {"one": "1 view x all rows x all features", "five": "5 views x rows/5 x features/5"},
        "run_at": datetime.datetime.now(datetime.UTC).isoformat(),
        "command": " ".join([Path(sys.executable).name, "benchmarks/pit_join.py", *sys.argv[1:]]),
        "quick": args.quick,
        "machine": machine(),
        "versions": versions(),
        "cases": cases,
    }
    report["targets"] = pit_join_targets(report)
    for t in report["targets"]:
        state = {True: "MET ", False: "MISS", None: "N/A "}[t["met"]]
        print(f"{state} {t['target']}: {t['value']} (bound {t['bound']:g}) {t.get('reason', '')}".rstrip())
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(strict_json(report))
        print(f"wrote {out}")
    failed = [f"{c['engine']}/{c['layout']}" for c in cases if "error" in c]
    if failed:
        # A run with a failed engine has no baseline to compare with: a script or CI must not take it as good.
        sys.exit(f"failed: {', '.join(failed)} (see above; recorded in the results as errors)")


def print_row(case: dict[str, Any]) -> None:
    if not _printed_header:
        print(
            f"{'layout':6} {'engine':12} {'best s':>8} {'labels/s':>12} {'peak MiB':>9} {'peak/out':>8} "
            "checks"
        )
        _printed_header.append(True)
    checks = "; ".join(f"{c['matched']} / {c['sum_first_feature']:.1f}" for c in case["checks"])
    print(
        f"{case['layout']:6} {case['engine']:12} {case['best_s']:8.3f} {case['label_rows_per_s']:12,.0f} "
        f"{case['peak_extra_bytes'] / 2**20:9.0f} {case['peak_over_output']:8.2f} {checks}",
        flush=True,
    )


if __name__ == "__main__":
    main()
