"""Top-K views stay bounded: customers leave, junk ids do not grow memory or series."""

from __future__ import annotations

import random
import time

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from quotaguard.metrics import ExporterConfig, PrometheusExporter, SpikeConfig, UtilizationTable
from quotaguard.testing import FakeClock

from .conftest import PLAN, decision


def top_series(exporter: PrometheusExporter) -> dict[tuple[str, str], float]:
    text = generate_latest(exporter.registry).decode()
    return {
        (s.labels["customer"], s.labels["limit"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "quotaguard_top_customer_utilization_ratio"
    }


def test_customers_leaving_the_top_k_are_removed() -> None:
    clock = FakeClock()
    exporter = PrometheusExporter(ExporterConfig(top_k=2), clock=clock)
    for name, used in (("a", 9), ("b", 8), ("c", 7)):
        exporter.on_decision(decision(name, [used, 0, 0]), "memory", 1e-5)
    assert set(top_series(exporter)) == {("a", "burst"), ("b", "burst")}
    # "a" refills (its bucket drains); "c" climbs: "a" leaves the view.
    exporter.on_decision(decision("a", [0, 0, 0]), "memory", 1e-5)
    exporter.on_decision(decision("c", [10, 0, 0]), "memory", 1e-5)
    assert top_series(exporter) == {("c", "burst"): 1.0, ("b", "burst"): 0.8}


def test_stale_customers_leave_the_view() -> None:
    clock = FakeClock()
    exporter = PrometheusExporter(ExporterConfig(stale_after=60), clock=clock)
    exporter.on_decision(decision("a", [9, 0, 0]), "memory", 1e-5)
    assert ("a", "burst") in top_series(exporter)
    clock.advance(61)
    assert top_series(exporter) == {}


def test_table_keeps_the_highest_within_capacity() -> None:
    table = UtilizationTable(capacity=10, min_utilization=0.1, stale_after=3600)
    rng = random.Random(1)
    values = [rng.random() for _ in range(5000)]
    for i, v in enumerate(values):
        table.offer([(f"c{i}", v)], 0.0)
        assert len(table) <= 10 + 16
    top = table.top(10, 0.0)
    assert [v for _, v in top] == sorted(values, reverse=True)[:10]


def test_a_million_junk_ids_stay_bounded() -> None:
    config = ExporterConfig(top_k=20, max_tracked=512, spikes=SpikeConfig(capacity=256))
    clock = FakeClock()
    exporter = PrometheusExporter(config, clock=clock)
    rng = random.Random(7)
    # Half the junk ids exhaust their burst (utilisation 1.0) to fight for the views.
    templates = [decision("x", [1, 1, 1]), decision("x", [10, 100, 100])]
    started = time.perf_counter()
    on_decision = exporter.on_decision
    for i in range(1_000_000):
        junk = f"{rng.getrandbits(64):016x}"
        on_decision(templates[i & 1]._replace(customer=junk), "memory", 1e-5)
        if i % 100_000 == 0:
            clock.advance(1)
    exporter.flush()
    elapsed = time.perf_counter() - started
    text = generate_latest(exporter.registry).decode()
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
    per_customer = [s for s in samples if "customer" in s.labels]
    limits = len(PLAN.limits)
    assert len(per_customer) <= config.top_k * limits + config.top_k  # utilisation + spikes
    # A fixed bound on every series: nothing grows with the number of customers.
    assert len(samples) < 200
    assert all(len(t) <= config.max_tracked * 5 // 4 for t in exporter.aggregator.tables.values())
    assert exporter.spikes is not None
    assert len(exporter.spikes) <= config.spikes.capacity
    assert exporter.spikes.pending <= 4 * config.spikes.capacity
    assert elapsed < 60  # generous: the machine is shared; benchmarks measure speed
