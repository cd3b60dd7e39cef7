"""The shipped alert rules pass promtool check rules and their unit tests."""

from __future__ import annotations

import json
from pathlib import Path

from .conftest import run_promtool

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_rules_check(promtool: str) -> None:
    output = run_promtool(promtool, "check", "rules", str(DEPLOY / "prometheus" / "rules.yml"))
    assert "SUCCESS: 4 rules found" in output


def test_rules_unit_tests(promtool: str) -> None:
    output = run_promtool(promtool, "test", "rules", str(DEPLOY / "prometheus" / "rules_test.yml"))
    assert "SUCCESS" in output


def test_dashboard_queries_known_metrics() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboard.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert exprs
    known = (
        "quotaguard_decisions_total",
        "quotaguard_top_customer_utilization_ratio",
        "quotaguard_top_customer_spike_ratio",
        "quotaguard_backend_latency_seconds_bucket",
        "quotaguard_near_limit_customers",
        "quotaguard_backend_errors_total",
        "quotaguard_utilization_ratio_bucket",
        "quotaguard_units_consumed_total",
    )
    for expr in exprs:
        assert any(name in expr for name in known), expr
