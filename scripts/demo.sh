#!/usr/bin/env bash
# The main job: sets up what is missing (scripts/bootstrap.sh), then runs `aetherctl demo`, the
# end-to-end scenario on a local stack (redis-server, control plane, data plane) that it starts and stops.
# Arguments go to `aetherctl demo` (e.g. --size medium, --home DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh --run-only
exec .venv/bin/aetherctl demo "$@"
