"""The benchmark scripts run on a fresh install (smoke runs; figures are not checked)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_week_of_real_use_benchmark_runs() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_weekly.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert "| 10 minutes | 1,008 |" in result.stdout
    assert "MEMORY USAGE per customer" in result.stdout
    assert "## Targets (issue 16)" in result.stdout
