"""Fixtures for the exporter tests: promtool, plans and synthetic decisions."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence

import pytest

from quotaguard import Decision, LimitStatus, Outcome, Plan, RollingWindow, TokenBucket
from quotaguard.core.policy import Limit

PLAN = Plan(
    "pro",
    [
        TokenBucket("burst", 10, "1/second"),
        RollingWindow.from_rate("five_hour", "1000/5hour", unit="tokens"),
        RollingWindow.from_rate("weekly", "10000/week", unit="tokens"),
    ],
)


@pytest.fixture(scope="session")
def promtool() -> str:
    """The promtool binary; skipped locally when missing, a failure under CI."""
    path = shutil.which("promtool")
    if path is None:
        message = (
            "promtool not found: install Debian's 'prometheus' package "
            "(apt-get install -y prometheus) to run the promtool checks"
        )
        if os.environ.get("CI"):
            pytest.fail(message + " (CI is set: promtool is required)")
        pytest.skip(message)
    return path


def run_promtool(promtool: str, *args: str, stdin: str | None = None) -> str:
    """Run promtool; fail the test with its output unless it exits 0."""
    result = subprocess.run(
        [promtool, *args], input=stdin, capture_output=True, text=True, timeout=60, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


def decision(
    customer: str,
    used: Sequence[float],
    *,
    plan: Plan = PLAN,
    outcome: Outcome = Outcome.ALLOWED,
    cost: float = 1,
    refused: Sequence[str] = (),
    retry_after: Sequence[float] | None = None,
) -> Decision:
    """A synthetic decision with ``used`` units per limit of ``plan``."""
    limits: tuple[Limit, ...] = plan.limits
    waits = retry_after or [1.0 if limit.name in refused else 0.0 for limit in limits]
    statuses = tuple(
        LimitStatus(
            limit,
            limit.name not in refused,
            max(0, int(limit.quota - u)),
            u,
            wait,
            0.0,
            0.0,
        )
        for limit, u, wait in zip(limits, used, waits, strict=True)
    )
    allowed = outcome in (Outcome.ALLOWED, Outcome.SHADOW_DENIED, Outcome.FAIL_OPEN)
    return Decision(allowed, outcome, customer, plan.name, None, cost, statuses, max(waits))
