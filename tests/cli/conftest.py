"""Fixtures for driving the CLI in-process."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest

from quotaguard import MemoryBackend
from quotaguard.cli import main
from quotaguard.testing import FakeClock

PLANS = """\
default_plan = "free"

[plans.free]
burst = { kind = "token_bucket", capacity = 10, refill = "1/second" }
weekly = { rate = "100000/week", unit = "tokens" }

[plans.pro]
burst = { kind = "token_bucket", capacity = 60, refill = "1/second" }
weekly = { rate = "5000000/week", unit = "tokens" }

[plans.benchmark]
bench_daily = "20/day"
"""


@attrs.define
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


Run = Callable[..., Result]


@pytest.fixture
def plans_file(tmp_path: Path) -> Path:
    path = tmp_path / "plans.toml"
    path.write_text(PLANS, encoding="utf-8")
    return path


@pytest.fixture
def backend() -> MemoryBackend:
    return MemoryBackend(clock=FakeClock())


@pytest.fixture
def cli(plans_file: Path, backend: MemoryBackend, monkeypatch: pytest.MonkeyPatch) -> Run:
    """Run ``quotaguard ARGS`` in-process on one shared memory backend."""
    monkeypatch.setenv("QUOTAGUARD_PLANS", str(plans_file))
    monkeypatch.delenv("QUOTAGUARD_STORAGE", raising=False)

    def run(*argv: str, shared: bool = True) -> Result:
        out, err = io.StringIO(), io.StringIO()
        code = main(list(argv), stdout=out, stderr=err, backend=backend if shared else None)
        return Result(code, out.getvalue(), err.getvalue())

    return run
