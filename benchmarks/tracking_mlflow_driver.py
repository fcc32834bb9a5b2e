"""The MLflow side of ``benchmarks/tracking.py``: runs INSIDE the separate MLflow venv
(``.venv-bench-mlflow``), imports only mlflow and the standard library, and prints one JSON line.

Same workload shape as the Aether side: RUNS runs x KEYS metrics x STEPS steps; each run is created,
its points sent with ``MlflowClient.log_batch`` (at most 1,000 metrics per call, MLflow's limit), and
terminated. Usage: python tracking_mlflow_driver.py TRACKING_URI RUNS KEYS STEPS"""

from __future__ import annotations

import json
import sys
import time


def main() -> None:
    # Only in the MLflow venv, never in the project's (so no stubs for the type checker there).
    from mlflow.entities import Metric, Param  # type: ignore[import-not-found, unused-ignore]
    from mlflow.tracking import MlflowClient  # type: ignore[import-not-found, unused-ignore]

    uri, runs, keys, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment(f"bench-{time.time_ns()}")
    started = time.perf_counter()
    for index in range(runs):
        run = client.create_run(experiment_id, run_name=f"r{index}")
        run_id = run.info.run_id
        stamp = int(time.time() * 1000)
        metrics = [
            Metric(f"m{k}", index * 0.001 + k + step * 0.01, stamp, step)
            for step in range(steps)
            for k in range(keys)
        ]
        for start in range(0, len(metrics), 1000):
            params = [Param("lr", str(index / 1000)), Param("opt", "adam")] if start == 0 else []
            client.log_batch(run_id, metrics=metrics[start : start + 1000], params=params)
        client.set_terminated(run_id, "FINISHED")
    elapsed = time.perf_counter() - started
    import mlflow  # type: ignore[import-not-found, unused-ignore]

    points = runs * keys * steps
    print(
        json.dumps(
            {
                "points": points,
                "seconds": elapsed,
                "points_per_s": points / elapsed,
                "mlflow": mlflow.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
