"""The exporter's metrics, scraped and checked by promtool."""

from __future__ import annotations

import asyncio
import logging
import urllib.request
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from quotaguard import (
    BackendUnavailable,
    Decision,
    Guard,
    MemoryBackend,
    Outcome,
    Plan,
    TokenBucket,
    __version__,
)
from quotaguard.metrics import (
    ExporterConfig,
    PrometheusExporter,
    make_metrics_app,
    start_metrics_server,
)
from quotaguard.testing import FakeClock

from .conftest import PLAN, decision, run_promtool


def value(exporter: PrometheusExporter, name: str, **labels: str) -> float | None:
    return exporter.registry.get_sample_value(name, labels)


def series(exporter: PrometheusExporter) -> list[Any]:
    text = generate_latest(exporter.registry).decode()
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


class FailingBackend(MemoryBackend):
    def decide(self, *args: Any, **kwargs: Any) -> Decision:
        raise BackendUnavailable("redis down") from TimeoutError("timed out")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def exporter(clock: FakeClock) -> PrometheusExporter:
    return PrometheusExporter(clock=clock)


def test_decisions_units_and_utilization(exporter: PrometheusExporter, clock: FakeClock) -> None:
    guard = Guard([PLAN], default_plan="pro", clock=clock, observers=[exporter])
    for _ in range(12):
        guard.acquire("alice", 1)  # burst of 10: two denied by "burst"
    assert (
        value(exporter, "quotaguard_decisions_total", plan="pro", limit="", decision="allowed")
        == 10
    )
    assert (
        value(exporter, "quotaguard_decisions_total", plan="pro", limit="burst", decision="denied")
        == 2
    )
    for limit in ("burst", "five_hour", "weekly"):
        assert value(exporter, "quotaguard_units_consumed_total", plan="pro", limit=limit) == 10
        assert value(exporter, "quotaguard_utilization_ratio_count", plan="pro", limit=limit) == 12
    # burst utilisation went 0.1, 0.2, ... 1.0, then 1.0 twice (denied, nothing consumed)
    assert (
        value(exporter, "quotaguard_utilization_ratio_bucket", plan="pro", limit="burst", le="0.5")
        == 5
    )
    assert (
        value(exporter, "quotaguard_utilization_ratio_bucket", plan="pro", limit="burst", le="0.9")
        == 9
    )
    assert value(exporter, "quotaguard_utilization_ratio_sum", plan="pro", limit="burst") == (
        pytest.approx(5.5 + 2.0)
    )
    assert value(exporter, "quotaguard_backend_latency_seconds_count", backend="memory") == 12
    assert value(exporter, "quotaguard_build_info", version=__version__) == 1


def test_bulk_histogram_matches_observe() -> None:
    import random

    from prometheus_client import Histogram

    exporter = PrometheusExporter(ExporterConfig(sample_every=1))
    rng = random.Random(5)
    used = [rng.choice([0, 5, 8, 9, 9.5, 9.9, 10, 12, rng.uniform(0, 12)]) for _ in range(700)]
    for i, u in enumerate(used):
        exporter.on_decision(decision(f"c{i}", [u, 0, 0]), "memory", 1e-5)
    exporter.flush()
    reference = Histogram("r", "r", buckets=(0.5, 0.8, 0.9, 0.95, 0.99, 1.0), registry=None)
    for u in used:
        reference.observe(u / 10)
    expected = {
        s.labels["le"]: s.value
        for s in next(iter(reference.collect())).samples
        if s.name == "r_bucket"
    }
    for le, count in expected.items():
        got = value(
            exporter, "quotaguard_utilization_ratio_bucket", plan="pro", limit="burst", le=le
        )
        assert got == count, le


def test_shadow_revoked_and_per_unit_costs(clock: FakeClock) -> None:
    exporter = PrometheusExporter(clock=clock)
    plans = [PLAN, Plan("benchmark", [TokenBucket("burst", 100, "1/second")])]
    guard = Guard(plans, default_plan="pro", clock=clock, observers=[exporter], shadow=True)
    for _ in range(11):
        guard.acquire("bob", {"requests": 1, "tokens": 50})
    guard.revoke("bob", "abuse", allow_scopes={"benchmark": "benchmark"})
    guard.acquire("bob", 1)
    guard.acquire("bob", 1, scope="benchmark")
    assert (
        value(
            exporter,
            "quotaguard_decisions_total",
            plan="pro",
            limit="burst",
            decision="shadow_denied",
        )
        == 1
    )
    assert value(exporter, "quotaguard_decisions_total", plan="", limit="", decision="revoked") == 1
    assert (
        value(
            exporter, "quotaguard_decisions_total", plan="benchmark", limit="", decision="allowed"
        )
        == 1
    )
    assert value(exporter, "quotaguard_units_consumed_total", plan="pro", limit="burst") == 10
    assert value(exporter, "quotaguard_units_consumed_total", plan="pro", limit="weekly") == 500


def test_settlements_adjust_units_and_never_decrement(
    exporter: PrometheusExporter, clock: FakeClock
) -> None:
    guard = Guard([PLAN], default_plan="pro", clock=clock, observers=[exporter])
    over = guard.reserve("frank", 4)
    assert over.lease_id is not None
    guard.settle(over.lease_id, 6, customer="frank")  # 2 more than reserved
    guard.settle(over.lease_id, 9, customer="frank")  # already settled: no change
    under = guard.reserve("frank", 4)
    assert under.lease_id is not None
    guard.settle(under.lease_id, 1, customer="")  # a refund of 3; the only plan seen
    for limit in ("burst", "five_hour", "weekly"):
        assert value(exporter, "quotaguard_units_consumed_total", plan="pro", limit=limit) == 10
        assert value(exporter, "quotaguard_units_refunded_total", plan="pro", limit=limit) == 3
    assert value(exporter, "quotaguard_settlements_unattributed_total") == 0


def test_settlements_with_an_unknown_plan_are_counted_apart(clock: FakeClock) -> None:
    exporter = PrometheusExporter(clock=clock)
    plans = [PLAN, Plan("free", [TokenBucket("burst", 100, "1/second")])]
    guard = Guard(plans, default_plan="pro", clock=clock, observers=[exporter])
    guard.acquire("gina", 1, plan="free")
    first = guard.reserve("hal", 4).lease_id
    second = guard.reserve("hal", 4).lease_id
    assert first is not None and second is not None
    exporter.flush()
    guard.settle(first, 8)  # no customer, two plans seen: unattributed
    guard.settle(second, 2, customer="hal")  # hal's plan is known from its decisions
    assert value(exporter, "quotaguard_settlements_unattributed_total") == 1
    assert value(exporter, "quotaguard_units_consumed_total", plan="pro", limit="weekly") == 8
    assert value(exporter, "quotaguard_units_refunded_total", plan="pro", limit="weekly") == 2


def test_fail_open_and_backend_errors(exporter: PrometheusExporter, clock: FakeClock) -> None:
    guard = Guard([PLAN], FailingBackend(clock=clock), default_plan="pro", observers=[exporter])
    assert guard.acquire("carol", 1).outcome is Outcome.FAIL_OPEN
    closed = Guard(
        [PLAN],
        FailingBackend(clock=clock),
        default_plan="pro",
        observers=[exporter],
        failure="closed",
    )
    assert closed.acquire("carol", 1).outcome is Outcome.FAIL_CLOSED
    assert (
        value(exporter, "quotaguard_decisions_total", plan="", limit="", decision="fail_open") == 1
    )
    assert (
        value(exporter, "quotaguard_decisions_total", plan="", limit="", decision="fail_closed")
        == 1
    )
    assert (
        value(exporter, "quotaguard_backend_errors_total", backend="memory", reason="timeout") == 2
    )


def test_error_reasons_are_capped() -> None:
    exporter = PrometheusExporter(ExporterConfig(max_reasons=2))
    for i in range(5):
        cause = type(f"Weird{i}Error", (Exception,), {})("x")
        error = BackendUnavailable("down")
        error.__cause__ = cause
        exporter.on_backend_error("redis", error)
    reasons = {
        s.labels["reason"] for s in series(exporter) if s.name == "quotaguard_backend_errors_total"
    }
    assert reasons == {"weird0_error", "weird1_error", "other"}


def test_refusing_limit_is_the_longest_wait(exporter: PrometheusExporter) -> None:
    exporter.on_decision(
        decision(
            "dan",
            [10, 1000, 10000],
            outcome=Outcome.DENIED,
            refused=("burst", "weekly"),
            retry_after=[1.0, 0.0, 3600.0],
        ),
        "memory",
        1e-5,
    )
    assert (
        value(exporter, "quotaguard_decisions_total", plan="pro", limit="weekly", decision="denied")
        == 1
    )


def test_scrape_passes_promtool_check_metrics(
    exporter: PrometheusExporter, clock: FakeClock, promtool: str
) -> None:
    guard = Guard([PLAN], default_plan="pro", clock=clock, observers=[exporter])
    for i in range(40):
        guard.acquire(f"customer-{i % 4}", 30)
    guard.acquire("x", 1)
    text = generate_latest(exporter.registry).decode()
    assert "quotaguard_top_customer_utilization_ratio{" in text
    output = run_promtool(promtool, "check", "metrics", stdin=text)
    assert output.strip() == "", output


def test_dedicated_registries_do_not_collide(clock: FakeClock) -> None:
    first, second = PrometheusExporter(clock=clock), PrometheusExporter(clock=clock)
    first.on_decision(decision("a", [1, 1, 1]), "memory", 1e-5)
    assert value(first, "quotaguard_decisions_total", plan="pro", limit="", decision="allowed") == 1
    assert (
        value(second, "quotaguard_decisions_total", plan="pro", limit="", decision="allowed")
        is None
    )
    shared = CollectorRegistry()
    PrometheusExporter(registry=shared)
    assert shared.get_sample_value("quotaguard_build_info", {"version": __version__}) == 1


def test_exporter_never_raises_into_the_guard(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    def boom(event: object) -> None:
        raise RuntimeError("hook failed")

    exporter = PrometheusExporter(ExporterConfig(batch_size=1), clock=clock, on_spike=boom)
    exporter.on_decision("not a decision", "memory", 1e-5)  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR):
        exporter.flush()
    guard = Guard([PLAN], default_plan="pro", clock=clock, observers=[exporter])
    assert guard.acquire("eve", 1).allowed


def test_near_limit_counts(exporter: PrometheusExporter) -> None:
    for i, used in enumerate([7, 8, 8.5, 9, 9.5, 10, 11]):
        exporter.on_decision(decision(f"n{i}", [used, 0, 0]), "memory", 1e-5)
    got = {
        s.labels["threshold"]: s.value
        for s in series(exporter)
        if s.name == "quotaguard_near_limit_customers" and s.labels["limit"] == "burst"
    }
    assert got == {"0.8": 6, "0.9": 4, "1": 2}


def test_asgi_app_serves_metrics(exporter: PrometheusExporter) -> None:
    exporter.on_decision(decision("a", [1, 1, 1]), "memory", 1e-5)

    async def fetch() -> httpx.Response:
        transport = httpx.ASGITransport(app=make_metrics_app(exporter))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get("/")

    response = asyncio.run(fetch())
    assert response.status_code == 200
    assert 'quotaguard_decisions_total{decision="allowed",limit="",plan="pro"} 1.0' in response.text


def test_standalone_http_server(exporter: PrometheusExporter) -> None:
    exporter.on_decision(decision("a", [1, 1, 1]), "memory", 1e-5)
    server, thread = start_metrics_server(exporter, port=0, addr="127.0.0.1")
    try:
        port = server.server_port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            body = response.read().decode()
    finally:
        server.shutdown()
        thread.join(5)
    assert "quotaguard_build_info" in body


def test_config_is_validated() -> None:
    with pytest.raises(ValueError):
        ExporterConfig(top_k=0)
    with pytest.raises(ValueError):
        ExporterConfig(utilization_buckets=(0.9, 0.5))
    with pytest.raises(ValueError):
        ExporterConfig(min_utilization=2)


def test_allowed_decisions_never_build_statuses(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from quotaguard.core.engine import EvaluatedStatuses

    built: list[object] = []
    original = EvaluatedStatuses.build

    def counting(payload: Any) -> Any:
        built.append(payload)
        return original(payload)

    monkeypatch.setattr(EvaluatedStatuses, "build", staticmethod(counting))
    exporter = PrometheusExporter(ExporterConfig(batch_size=16, sample_every=4), clock=clock)
    plan = Plan("wide", [TokenBucket("burst", 10**6, "1000/second")])
    guard = Guard([plan], default_plan="wide", clock=clock, observers=[exporter])
    for i in range(500):  # full batches (sampled) and a partial one (read in full)
        guard.acquire(f"c{i % 7}", 1)
    exporter.flush()
    series(exporter)  # a scrape
    assert built == []
    assert value(exporter, "quotaguard_utilization_ratio_count", plan="wide", limit="burst") == 500


def test_under_load_utilization_and_latency_are_sampled_with_weights() -> None:
    config = ExporterConfig(batch_size=32, sample_every=8)
    exporter = PrometheusExporter(config)
    for i in range(32 * 20):  # 20 full batches: one reading in 8, each counted 8 times
        exporter.on_decision(decision(f"c{i}", [5, 0, 0]), "memory", 2e-5)
    exporter.flush()
    assert value(exporter, "quotaguard_utilization_ratio_count", plan="pro", limit="burst") == 640
    assert value(
        exporter, "quotaguard_utilization_ratio_sum", plan="pro", limit="burst"
    ) == pytest.approx(640 * 0.5)
    assert (
        value(exporter, "quotaguard_utilization_ratio_bucket", plan="pro", limit="burst", le="0.5")
        == 640
    )
    assert value(exporter, "quotaguard_backend_latency_seconds_count", backend="memory") == 640
    assert value(
        exporter, "quotaguard_backend_latency_seconds_sum", backend="memory"
    ) == pytest.approx(640 * 2e-5)


def test_refused_and_tracked_decisions_are_always_read() -> None:
    config = ExporterConfig(batch_size=32, sample_every=32, min_utilization=0.5)
    exporter = PrometheusExporter(config)
    # "hot" enters the top-K view from a refused decision, then is refreshed from its
    # latest decision of every batch although sampling reads one decision in 32.
    exporter.on_decision(
        decision("hot", [10, 0, 0], outcome=Outcome.DENIED, refused=("burst",)), "memory", 1e-5
    )
    for _ in range(4):
        for i in range(31):
            exporter.on_decision(decision(f"cold{i}", [1, 0, 0]), "memory", 1e-5)
        exporter.on_decision(decision("hot", [9, 0, 0]), "memory", 1e-5)
    assert ("hot", "pro", "burst", 0.9) in exporter.top_utilization()
    exporter.on_decision(decision("hot", [2, 0, 0]), "memory", 1e-5)  # fell below 0.5
    assert [row for row in exporter.top_utilization() if row[2] == "burst"] == []
