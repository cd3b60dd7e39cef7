"""The README's code and the runnable examples work as documented."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), re.S)


@pytest.mark.parametrize("document", ["README.md", "docs/concepts.md"])
def test_python_blocks_in_the_documentation_run(document):
    blocks = python_blocks(ROOT / document)
    assert blocks
    namespace: dict[str, object] = {}
    for block in blocks:
        if block.lstrip().startswith('lease = guard.reserve("acme"'):
            continue  # a fragment that continues the previous block's context
        exec(compile(block, document, "exec"), namespace)


def test_the_quickstart_shows_every_step():
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    out = result.stdout
    assert "denied by burst, retry in 1s" in out
    assert "2,750 refunded" in out
    assert "denied by weekly, retry in" in out
    assert "can never fit" in out
    assert "revoked: Suspended pending a billing review." in out
    assert re.search(r"benchmark after revocation\s+\| allowed", out)


def test_the_memory_benchmark_runs():
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_memory.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert "## Targets" in result.stdout
    assert "bytes per customer, 3 limits" in result.stdout
