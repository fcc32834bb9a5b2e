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
# Four worker processes by default (pytest-xdist): most tests wait on subprocesses, sockets and timers, so
# more workers than this 2-core machine's cores still gain (the suite took ~17 min in one process, ~10 in
# two at stop 24; grown since, 15-17.5 min in two and 14.6 min in three on the same host; at stop 33,
# pytest took 1,007 s in three workers and 912 s in four, clean clones on the same idle host). Each worker
# starts its own redis-server and PostgreSQL cluster on free ports (tests/conftest.py), so workers share
# nothing. AETHER_TEST_WORKERS=0 runs everything in this one process (easiest to debug).
workers="${AETHER_TEST_WORKERS:-4}"
# -rs: every skipped test says why; the slowest 15 (the CI budget is 20 min)
python -m pytest -q -rs --durations=15 -p no:cacheprovider -n "$workers" "$@"
