#!/usr/bin/env bash
# Sets up everything Aether needs on a fresh Debian/Ubuntu machine: redis-server, PostgreSQL and openssl
# (apt) and a virtual environment in .venv with the package installed in editable mode plus the dev tools.
# `bootstrap.sh --run-only` (what scripts/demo.sh uses) installs only what running Aether needs from apt:
# redis-server. Idempotent: a second run only checks. AETHER_FRESH_VENV=1 rebuilds .venv (CI does).
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages: redis-server; Debian's PostgreSQL server (the tests start a throwaway cluster from its
# binaries under /usr/lib/postgresql/*/bin, so every database test also runs on PostgreSQL); the openssl
# command (the TLS tests generate their certificates with it).
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ "${1:-}" != "--run-only" ]; then
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
  command -v openssl >/dev/null 2>&1 || missing+=(openssl)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "bootstrap: installing ${missing[*]}"
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ "${AETHER_FRESH_VENV:-0}" = "1" ]; then rm -rf .venv; fi
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv"
  python3 -m venv .venv
fi
stamp=.venv/.aether-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "bootstrap: installing the package and its dev tools into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[dev,train]"
  touch "$stamp"
fi
