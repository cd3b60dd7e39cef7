"""The CLI as an installed command: ``python -m quotaguard`` in a subprocess, and against
a real Redis shared with the service it inspects."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from quotaguard import Guard, PlanCatalogue
from quotaguard.backends.redis import RedisBackend
from quotaguard.cli import EXIT_CONFIG, EXIT_OK
from tests import redis_support

from .conftest import PLANS, Run

ROOT = Path(__file__).resolve().parents[2]


def quotaguard(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "quotaguard", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


def test_python_dash_m_quotaguard(plans_file: Path, tmp_path: Path) -> None:
    result = quotaguard("plans", "check", str(plans_file), "--json")
    assert result.returncode == EXIT_OK, result.stderr
    assert json.loads(result.stdout)["default_plan"] == "free"
    bad = tmp_path / "bad.toml"
    bad.write_text(PLANS.replace("1/second", "1/secnd"), encoding="utf-8")
    result = quotaguard("plans", "check", str(bad))
    assert result.returncode == EXIT_CONFIG
    assert result.stdout == ""
    assert result.stderr.startswith(
        f"quotaguard: error: {bad}: plan 'free', limit 'burst': cannot parse rate '1/secnd': "
    )
    assert result.stderr.count("\n") == 1


needs_redis = pytest.mark.skipif(not redis_support.available(), reason="redis-server not installed")
needs_audit = pytest.mark.skipif(
    not hasattr(RedisBackend, "record_audit"),
    reason="the Redis backend has no audit trail / customer listing yet "
    "(record_audit, audit, list_customers are being added)",
)


@pytest.fixture
def redis_storage() -> str:
    return f"{redis_support.standalone().url}?prefix={redis_support.fresh_prefix()}"


@needs_redis
def test_usage_reads_what_a_service_stored_in_redis(cli: Run, redis_storage: str) -> None:
    with Guard(PlanCatalogue.from_toml_string(PLANS), redis_storage) as service:
        for _ in range(4):
            service.acquire("acme", {"tokens": 2500})
    result = cli("usage", "acme", "--json", "--storage", redis_storage, shared=False)
    assert result.code == EXIT_OK, result.err
    assert result.err == ""  # no memory:// warning
    document = json.loads(result.out)
    assert [limit["used"] for limit in document["limits"]][1] == 10_000


@needs_redis
@needs_audit
def test_changes_made_by_the_cli_reach_the_service_with_an_audit_trail(
    plans_file: Path, redis_storage: str
) -> None:
    env = {"QUOTAGUARD_STORAGE": redis_storage, "QUOTAGUARD_PLANS": str(plans_file)}
    with Guard(PlanCatalogue.from_toml_string(PLANS), redis_storage) as service:
        service.acquire("acme", {"tokens": 95_000})
        result = quotaguard("assign", "acme", "pro", "--actor", "ops:ann", env=env)
        assert result.returncode == EXIT_OK, result.stderr
        assert service.acquire("acme", {"tokens": 95_000}).plan == "pro"
        result = quotaguard(
            "revoke", "acme", "--reason", "Fraud check.", "--allow-scope", "benchmark=benchmark",
            env=env,
        )  # fmt: skip
        assert result.returncode == EXIT_OK, result.stderr
        assert service.acquire("acme").revoked
        assert service.acquire("acme", scope="benchmark").allowed
        top = json.loads(quotaguard("top", "--json", env=env).stdout)
        assert top["customers"][0]["customer"] == "acme"
        audit = json.loads(quotaguard("audit", "acme", "--json", env=env).stdout)
        assert [(e["action"], e["actor"]) for e in audit["entries"]][-1] == ("assign", "ops:ann")
        assert audit["entries"][0]["reason"] == "Fraud check."
        assert quotaguard("restore", "acme", env=env).returncode == EXIT_OK
        assert service.acquire("acme").allowed
