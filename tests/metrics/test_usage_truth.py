"""The unit counters, near-limit counts and dashboard agree with what the guard stored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from quotaguard import Guard, Plan, RollingWindow, TokenBucket
from quotaguard.metrics import PrometheusExporter
from quotaguard.testing import FakeClock

from .conftest import run_promtool

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"

LLM = Plan(
    "pro",
    [
        TokenBucket("burst", 10, "1/second"),  # requests
        RollingWindow.from_rate("five_hour", "100000/5hour", unit="tokens"),
        RollingWindow.from_rate("weekly", "1000000/week", unit="tokens"),
    ],
)


def units(exporter: PrometheusExporter, name: str, limit: str) -> float:
    got = exporter.registry.get_sample_value(name, {"plan": "pro", "limit": limit})
    assert got is not None
    return got


def net_units(exporter: PrometheusExporter, limit: str) -> float:
    consumed = units(exporter, "quotaguard_units_consumed_total", limit)
    return consumed - units(exporter, "quotaguard_units_refunded_total", limit)


def test_reserve_then_settle_counts_what_usage_shows() -> None:
    clock = FakeClock()
    exporter = PrometheusExporter(clock=clock)
    guard = Guard([LLM], default_plan="pro", clock=clock, observers=[exporter])
    for estimate, actual in ((1000, 9), (500, 700), (2000, 2000), (300, 0)):
        lease = guard.reserve("lin", {"tokens": estimate})
        assert lease.lease_id is not None
        guard.settle(lease.lease_id, {"tokens": actual}, customer="lin")
        clock.advance(1)
    usage = guard.usage("lin")
    # One request per call, whatever the settlement: a tokens delta charges no request.
    assert units(exporter, "quotaguard_units_consumed_total", "burst") == 4
    assert units(exporter, "quotaguard_units_refunded_total", "burst") == 0
    for limit in ("five_hour", "weekly"):
        assert net_units(exporter, limit) == usage.limit(limit).used == 9 + 700 + 2000
    assert units(exporter, "quotaguard_units_consumed_total", "weekly") == 1000 + 700 + 2000 + 300


def test_a_single_reserve_and_settle_reads_one_request() -> None:
    exporter = PrometheusExporter(clock=FakeClock())
    guard = Guard([LLM], default_plan="pro", clock=exporter.clock, observers=[exporter])
    lease = guard.reserve("kim", {"tokens": 1000})
    assert lease.lease_id is not None
    guard.settle(lease.lease_id, {"tokens": 9}, customer="kim", plan="pro")
    assert net_units(exporter, "burst") == 1 == guard.usage("kim").limit("burst").used // 1


def near_limit(exporter: PrometheusExporter, limit: str) -> dict[str, float]:
    return {
        threshold: exporter.registry.get_sample_value(
            "quotaguard_near_limit_customers",
            {"plan": "pro", "limit": limit, "threshold": threshold},
        )
        or 0.0
        for threshold in ("0.8", "0.9", "1")
    }


def test_refused_customers_count_as_at_the_limit() -> None:
    clock = FakeClock()
    exporter = PrometheusExporter(clock=clock)
    guard = Guard([LLM], default_plan="pro", clock=clock, observers=[exporter])
    for _ in range(10):
        assert guard.acquire("max", {"tokens": 1}).allowed
    clock.advance(0.001)  # the bucket refills a little: used reads under the quota
    refused = guard.acquire("max", {"tokens": 1})
    assert not refused.allowed and refused.limits[0].utilization < 1
    assert near_limit(exporter, "burst") == {"0.8": 1, "0.9": 1, "1": 1}
    clock.advance(5)  # refilled by 5: the next decision is allowed, no longer at the limit
    assert guard.acquire("max", {"tokens": 1}).allowed
    assert near_limit(exporter, "burst")["1"] == 0


def test_dashboard_units_panel_is_net_of_refunds(tmp_path: Path, promtool: str) -> None:
    """The panel's query, evaluated by promtool: 2,000 units estimated, 70 used."""
    dashboard = json.loads((DEPLOY / "grafana" / "dashboard.json").read_text())
    exprs = [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "quotaguard_units_consumed_total" in target["expr"]
    ]
    assert exprs
    rules = {"groups": [{"name": "panels", "rules": []}]}
    for i, expr in enumerate(exprs):
        query = expr.replace("$plan", ".*").replace("$__rate_interval", "5m")
        rules["groups"][0]["rules"].append({"record": f"panel_{i}", "expr": query})
    (tmp_path / "rules.yml").write_text(json.dumps(rules))
    # Over 10 minutes: 20 reservations of 100 tokens each, settled at 3.5 tokens each.
    tests = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {
                        "series": 'quotaguard_units_consumed_total{plan="pro",limit="weekly"}',
                        "values": "0+200x10",
                    },
                    {
                        "series": 'quotaguard_units_refunded_total{plan="pro",limit="weekly"}',
                        "values": "0+193x10",
                    },
                ],
                "promql_expr_test": [
                    {
                        "expr": f"round(panel_{i} * 600, 0.001)",  # per s -> per 10 min
                        "eval_time": "10m",
                        "exp_samples": [{"labels": '{plan="pro",limit="weekly"}', "value": 70}],
                    }
                    for i in range(len(exprs))
                ],
            }
        ],
    }
    (tmp_path / "tests.yml").write_text(json.dumps(tests))
    run_promtool(promtool, "test", "rules", str(tmp_path / "tests.yml"))


@pytest.mark.parametrize("limit", ["five_hour", "weekly"])
def test_units_counters_never_decrease_on_refunds(limit: str) -> None:
    exporter = PrometheusExporter(clock=FakeClock())
    guard = Guard([LLM], default_plan="pro", clock=exporter.clock, observers=[exporter])
    lease = guard.reserve("ned", {"tokens": 50})
    exporter.flush()
    before = units(exporter, "quotaguard_units_consumed_total", limit)
    assert lease.lease_id is not None
    guard.settle(lease.lease_id, {"tokens": 0}, customer="ned")
    assert units(exporter, "quotaguard_units_consumed_total", limit) == before == 50
    assert units(exporter, "quotaguard_units_refunded_total", limit) == 50
