#!/usr/bin/env bash
# Set up everything the tests need on a fresh machine, then run lint, types and tests.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'

# promtool (Debian's prometheus package) checks the metrics output and alert rules.
if ! command -v promtool >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  pkill -x prometheus >/dev/null 2>&1 || true  # only promtool is wanted, not the daemon
fi

.venv/bin/ruff check quotaguard tests benchmarks examples
.venv/bin/ruff format --check quotaguard tests benchmarks examples
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
