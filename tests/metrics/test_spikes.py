"""Spike detection against each customer's own baseline, in bounded memory."""

from __future__ import annotations

import pytest

from quotaguard.metrics import ExporterConfig, PrometheusExporter, SpikeConfig, SpikeEvent
from quotaguard.metrics.spikes import SpikeDetector
from quotaguard.testing import FakeClock

from .conftest import decision

FOLD = 10.0


def feed(detector: SpikeDetector, now: float, rates: dict[str, float]) -> list[SpikeEvent]:
    """One fold interval of traffic at ``rates`` (units per second per customer)."""
    events = []
    for customer, rate in rates.items():
        events += detector.record([customer], [rate * FOLD], "pro", now)
    return events + detector.fold(now)


def test_steady_customer_reads_about_one_then_spikes() -> None:
    detector = SpikeDetector(SpikeConfig(ratio=10, min_history=3600, fold_interval=FOLD))
    now = 0.0
    for _ in range(int(86400 / FOLD)):
        now += FOLD
        assert feed(detector, now, {"steady": 1.0}) == []
    ratio = detector.ratio("steady", now)
    assert ratio == pytest.approx(1.0, rel=0.05)
    events: list[SpikeEvent] = []
    for _ in range(int(600 / FOLD)):
        now += FOLD
        events += feed(detector, now, {"steady": 30.0})
    assert [e.customer for e in events] == ["steady"]  # fired once, not every fold
    assert events[0].ratio >= 10
    assert events[0].baseline == pytest.approx(events[0].rate / events[0].ratio)
    assert detector.top(5, now)[0][0] == "steady"


def test_new_and_sparse_customers_do_not_spike() -> None:
    detector = SpikeDetector(SpikeConfig(ratio=5, min_history=3600, min_volume=20))
    assert feed(detector, 10.0, {"new": 1000.0}) == []
    assert detector.ratio("new", 10.0) is None  # no history yet
    now = 10.0
    for _ in range(400):
        now += FOLD
        feed(detector, now, {"sparse": 0.001})
    assert detector.ratio("sparse", now) is None  # below min_volume


def test_junk_flood_does_not_displace_steady_customers() -> None:
    detector = SpikeDetector(SpikeConfig(capacity=64, fold_interval=FOLD))
    now = 0.0
    steady = {f"real-{i}": 1.0 for i in range(32)}
    for _ in range(100):
        now += FOLD
        feed(detector, now, steady)
    for batch in range(200):
        junk = [f"junk-{batch}-{i}" for i in range(1000)]
        detector.record(junk, [1.0] * len(junk), "pro", now)
        assert len(detector) <= 64
        assert detector.pending <= 4 * 64
    detector.fold(now)
    assert all(detector.ratio(c, now + 3600) is not None or c in detector._entries for c in steady)
    assert set(steady) <= set(detector._entries)


def test_exporter_hook_and_gauge() -> None:
    clock = FakeClock(0)
    events: list[SpikeEvent] = []
    config = ExporterConfig(spikes=SpikeConfig(ratio=10, fold_interval=FOLD))
    exporter = PrometheusExporter(config, clock=clock, on_spike=events.append)
    template = decision("x", [1, 1, 1])
    day = int(86400 / FOLD)
    for step in range(day + int(600 / FOLD)):
        cost = 10 if step < day else 300  # 1 unit/s for a day, then 30/s
        clock.advance(FOLD)
        exporter.on_decision(template._replace(customer="acme", cost=cost), "memory", 1e-5)
        exporter.on_decision(template._replace(customer="calm", cost=10), "memory", 1e-5)
        exporter.flush()
    assert [(e.customer, e.plan) for e in events] == [("acme", "pro")]
    value = exporter.registry.get_sample_value(
        "quotaguard_top_customer_spike_ratio", {"customer": "acme", "plan": "pro"}
    )
    assert value is not None and value >= 10


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        SpikeConfig(short_window=600, long_window=300)
    with pytest.raises(ValueError):
        SpikeConfig(capacity=0)


def test_full_table_admits_only_newcomers_above_twice_the_floor() -> None:
    detector = SpikeDetector(SpikeConfig(capacity=8, fold_interval=FOLD))
    now = FOLD
    feed(detector, now, {f"steady-{i}": 1.0 + i for i in range(8)})  # full; floor: 1 u/s
    now += FOLD
    # 1.5x the lightest: rejected (the cheap lower bound decides); 3x: admitted.
    feed(detector, now, {"light": 1.5})
    assert "light" not in detector._entries
    feed(detector, now, {"heavy": 3.0})
    assert "heavy" in detector._entries
    assert len(detector) == 8
