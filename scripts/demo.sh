#!/usr/bin/env bash
# Set up quotaguard in a virtual environment and run the in-memory demo.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e .
.venv/bin/python examples/quickstart.py
