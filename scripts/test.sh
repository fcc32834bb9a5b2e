#!/usr/bin/env bash
# The test command: sets up what is missing (scripts/bootstrap.sh), checks that the generated stubs
# match proto/, lints, type-checks, then runs the whole test suite against a real redis-server.
# Extra arguments go to pytest (e.g. scripts/test.sh tests/unit -x).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"

echo "== generated stubs"
python proto/generate.py --check
echo "== ruff"
ruff check .
ruff format --check .
echo "== mypy (strict)"
mypy
echo "== pytest"
python -m pytest -q -rs --durations=15 -p no:cacheprovider "$@"  # -rs: every skipped test says why; the slowest 15 (the CI budget is 20 min)
