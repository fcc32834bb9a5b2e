#!/usr/bin/env bash
# Sets up everything Aether needs on a fresh Debian/Ubuntu machine: redis-server, PostgreSQL and openssl
# (apt) and a virtual environment in .venv with the package installed in editable mode plus the dev tools.
# `bootstrap.sh --run-only` (what scripts/demo.sh uses) installs only what running Aether needs from apt:
# redis-server. Idempotent: a second run only checks. AETHER_FRESH_VENV=1 rebuilds .venv (CI does).
set -euo pipefail
cd "$(dirname "$0")/.."

# Python: Aether needs 3.11 or newer (Ubuntu 22.04's python3 is 3.10). Said first, in one line, rather than
# as pip's "requires a different Python" after a virtual environment was made with the wrong one.
if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "bootstrap: Aether needs Python 3.11 or newer; python3 is $(python3 --version 2>&1 || echo missing)." >&2
  echo "bootstrap: install python3.11 (or newer) and make it python3 on PATH, then run this again." >&2
  exit 1
fi

# System packages: redis-server; Debian's PostgreSQL server (the tests start a throwaway cluster from its
# binaries under /usr/lib/postgresql/*/bin, so every database test also runs on PostgreSQL); the openssl
# command (the TLS tests generate their certificates with it); capsh (libcap2-bin: the job-user tests
# make a control plane that is not root but holds capabilities with it).
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
# Debian and Ubuntu ship venv's pip bootstrap (ensurepip) in a package of its own; without it `python3 -m venv`
# fails half-way and leaves a .venv with no pip.
python3 -c 'import ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
if [ "${1:-}" != "--run-only" ]; then
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
  command -v openssl >/dev/null 2>&1 || missing+=(openssl)
  command -v capsh >/dev/null 2>&1 || missing+=(libcap2-bin)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "bootstrap: installing ${missing[*]}"
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ "${AETHER_FRESH_VENV:-0}" = "1" ]; then rm -rf .venv; fi
# A .venv made by a Python older than 3.11, or one left without pip by a failed creation, is made again:
# checking only that .venv/bin/python exists kept such a .venv, and every later run failed the same way.
if [ -x .venv/bin/python ] && ! .venv/bin/python -c 'import sys, pip; sys.exit(sys.version_info < (3, 11))' \
  >/dev/null 2>&1; then
  echo "bootstrap: .venv was made by an unusable Python (older than 3.11, or without pip); making it again"
  rm -rf .venv
fi
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv"
  # Made in place (a virtual environment records its own path: one made aside and renamed has a broken
  # bin/activate), and removed when its creation fails, so that no half-made .venv is left behind.
  if ! python3 -m venv .venv; then
    rm -rf .venv
    echo "bootstrap: could not create .venv with $(python3 --version 2>&1)" >&2
    exit 1
  fi
fi
stamp=.venv/.aether-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "bootstrap: installing the package and its dev tools into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[dev,train]"
  touch "$stamp"
fi
