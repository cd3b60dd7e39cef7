#!/usr/bin/env bash
# Set up quotaguard in a virtual environment and run the demo: the example LLM API
# (examples/llm_api.py) on the in-memory backend, driven by simulated customers
# (examples/demo.py; no Redis needed, under a minute).
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[demo]'
.venv/bin/quotaguard demo "$@"
