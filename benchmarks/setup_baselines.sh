#!/usr/bin/env bash
# Creates the benchmark-only virtual environments that hold the baselines (never Aether's .venv):
#   .venv-bench          numpy, numba, pyarrow, DuckDB, pandas   (benchmarks/pit_join.py)
#   .venv-bench-mlserver Seldon MLServer + ONNX Runtime           (benchmarks/serving.py)
#   .venv-bench-drift    Evidently                               (benchmarks/drift.py --with-evidently)
#   .venv-bench-mlflow   MLflow                                  (benchmarks/tracking.py)
# Versions are those RESULTS.md was measured with. Usage: bash benchmarks/setup_baselines.sh [NAME ...]
set -euo pipefail
cd "$(dirname "$0")/.."
declare -A PACKAGES=(
  [.venv-bench]="numpy numba pyarrow duckdb==2.0.1 pandas==3.1.1"
  [.venv-bench-mlserver]="mlserver==1.7.1 onnxruntime numpy"
  [.venv-bench-drift]="evidently==0.7.23 numpy"
  [.venv-bench-mlflow]="mlflow==3.17.2"
)
names=("$@")
[ "${#names[@]}" -gt 0 ] || names=("${!PACKAGES[@]}")
for name in "${names[@]}"; do
  [ -n "${PACKAGES[$name]:-}" ] || { echo "unknown baseline environment $name" >&2; exit 2; }
  [ -x "$name/bin/python" ] || python3 -m venv "$name"
  # shellcheck disable=SC2086  # the package list is meant to split into words
  "$name/bin/python" -m pip install -q ${PACKAGES[$name]}
  echo "ready: $name"
done
