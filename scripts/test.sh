#!/usr/bin/env bash
# Set up everything the tests need on a fresh machine, then run lint, types and tests.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'

# promtool (from Debian's prometheus package) checks the metrics output and alert rules.
# Only the promtool binary is taken out of the package, into .venv/bin: no Prometheus
# daemon is installed or started, and no process this script did not start is touched.
if ! command -v promtool >/dev/null 2>&1 && [ ! -x .venv/bin/promtool ] \
  && command -v apt-get >/dev/null 2>&1 && command -v dpkg-deb >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then apt-get update -qq >/dev/null || true; fi
  deb_dir=$(mktemp -d)
  if (cd "$deb_dir" && apt-get download -qq prometheus >/dev/null 2>&1); then
    dpkg-deb -x "$deb_dir"/prometheus_*.deb "$deb_dir/root"
    cp "$deb_dir/root/usr/bin/promtool" .venv/bin/promtool
  fi
  rm -rf "$deb_dir"
fi
export PATH="$PWD/.venv/bin:$PATH"

.venv/bin/ruff check quotaguard tests benchmarks examples
.venv/bin/ruff format --check quotaguard tests benchmarks examples
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
