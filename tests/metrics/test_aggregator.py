"""The pure aggregator, on a FakeClock, without prometheus_client."""

from __future__ import annotations

import ast
from pathlib import Path

import quotaguard.metrics
from quotaguard import Guard, Outcome
from quotaguard.metrics import ExporterConfig
from quotaguard.metrics.aggregator import Aggregator
from quotaguard.testing import FakeClock

from .conftest import PLAN, decision


def test_a_batch_counts_decisions_units_and_utilization_exactly() -> None:
    aggregator = Aggregator(ExporterConfig(sample_every=1))
    batch = [decision(f"c{i}", [i, 0, 0]) for i in range(10)]
    batch.append(decision("c9", [10, 0, 0], outcome=Outcome.DENIED, refused=("burst",)))
    aggregator.add(batch, now=0.0, sample=False)
    aggregator.settle()
    assert aggregator.decisions == {("pro", "", "allowed"): 10, ("pro", "burst", "denied"): 1}
    assert aggregator.units[("pro", "weekly")] == 10
    burst = aggregator.utilization[("pro", "burst")]
    assert burst.count == 11
    assert burst.cumulative()[0] == 6  # 0.0 .. 0.5
    # The refused customer reads full in the top-K view.
    assert ("c9", "pro", "burst", 1.0) in aggregator.top_utilization(0.0)


def test_views_follow_the_fake_clock() -> None:
    clock = FakeClock()
    config = ExporterConfig(stale_after=60)
    observed: list[object] = []
    aggregator = Aggregator(config)

    class Recorder:
        def on_decision(self, decision: object, backend: str, elapsed: float) -> None:
            observed.append(decision)

    guard = Guard([PLAN], default_plan="pro", clock=clock, observers=[Recorder()])
    for _ in range(9):
        guard.acquire("ann", 1)
    aggregator.add(observed, clock.now_us() / 1e6, sample=False)  # type: ignore[arg-type]
    now = clock.now_us() / 1e6
    assert ("ann", "pro", "burst", 0.9) in aggregator.top_utilization(now)
    assert ("pro", "burst", "0.8", 1) in aggregator.near_limit(now)
    clock.advance(61)  # stale: leaves the views
    assert aggregator.top_utilization(clock.now_us() / 1e6) == []


PURE = {"aggregator", "buckets", "config", "plans", "reasons", "spike_types", "spikes", "topk"}


def test_the_aggregator_never_imports_prometheus_client() -> None:
    """The pure layer imports neither prometheus_client nor the glue above it."""
    package = Path(quotaguard.metrics.__file__).parent
    for name in PURE:
        tree = ast.parse((package / f"{name}.py").read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            else:
                continue
            for module in modules:
                assert not module.startswith("prometheus_client"), (name, module)
                if module.startswith("quotaguard.metrics."):
                    assert module.split(".")[2] in PURE, (name, module)
