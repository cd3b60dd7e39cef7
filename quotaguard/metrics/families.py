"""The exporter's metric families, built from the aggregator's totals at scrape time.

Single-process mode exposes these directly (no prometheus_client metric objects: the
histograms come from quotaguard's own bucket counts); multiprocess mode uses only the
two top-K families here (see `quotaguard.metrics.multiprocess`).
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString

from quotaguard._version import __version__
from quotaguard.metrics.aggregator import Aggregator
from quotaguard.metrics.buckets import Buckets

__all__ = ["HELP", "local_families", "spike_family", "utilization_family"]

HELP: dict[str, str] = {
    "quotaguard_decisions": (
        "Decisions by plan, refusing limit (empty unless denied) and outcome."
    ),
    "quotaguard_units_consumed": (
        "Units consumed: admitted costs plus settlements above the estimate."
    ),
    "quotaguard_units_refunded": (
        "Units given back when a lease settled below its estimate, per plan and limit."
    ),
    "quotaguard_settlements_unattributed": (
        "Settlements whose plan the exporter could not tell; their units are not counted."
    ),
    "quotaguard_utilization_ratio": "Used over quota of each limit at decision time.",
    "quotaguard_backend_latency_seconds": "Time the backend took to decide, in seconds.",
    "quotaguard_backend_errors": (
        "Backend failures handled by the failure policy, by backend and reason."
    ),
    "quotaguard_near_limit_customers": (
        "Tracked customers at or above a utilisation threshold of a limit."
    ),
    "quotaguard_build_info": "Always 1; the version label is quotaguard's version.",
}
"""Each metric's help text, shared by both modes."""


def _le(bound: float) -> str:
    return floatToGoString(bound)  # type: ignore[no-untyped-call,no-any-return]


def _counter(
    name: str, labels: list[str], totals: Iterable[tuple[tuple[str, ...], float]]
) -> Metric:
    family = CounterMetricFamily(name, HELP[name], labels=labels)
    for key, value in totals:
        family.add_metric(list(key), value)
    return family


def _histogram(
    name: str, labels: list[str], hists: Iterable[tuple[tuple[str, ...], Buckets]]
) -> Metric:
    family = HistogramMetricFamily(name, HELP[name], labels=labels)
    for key, hist in hists:
        bounds = [*map(_le, hist.bounds), "+Inf"]
        family.add_metric(list(key), list(zip(bounds, hist.cumulative(), strict=True)), hist.total)
    return family


def local_families(aggregator: Aggregator, now: float) -> list[Metric]:
    """Every metric of this process, top-K views included (call ``settle`` first)."""
    latency = [((backend,), hist) for backend, hist in aggregator.latency.items()]
    near = GaugeMetricFamily(
        "quotaguard_near_limit_customers",
        HELP["quotaguard_near_limit_customers"],
        labels=["plan", "limit", "threshold"],
    )
    for plan, limit, threshold, count in aggregator.near_limit(now):
        near.add_metric([plan, limit, threshold], count)
    build = GaugeMetricFamily(
        "quotaguard_build_info", HELP["quotaguard_build_info"], labels=["version"]
    )
    build.add_metric([__version__], 1)
    families = [
        _counter(
            "quotaguard_decisions",
            ["plan", "limit", "decision"],
            list(aggregator.decisions.items()),
        ),
        _counter("quotaguard_units_consumed", ["plan", "limit"], list(aggregator.units.items())),
        _counter("quotaguard_units_refunded", ["plan", "limit"], list(aggregator.refunds.items())),
        CounterMetricFamily(
            "quotaguard_settlements_unattributed",
            HELP["quotaguard_settlements_unattributed"],
            value=aggregator.unattributed,
        ),
        _histogram(
            "quotaguard_utilization_ratio", ["plan", "limit"], list(aggregator.utilization.items())
        ),
        _histogram("quotaguard_backend_latency_seconds", ["backend"], latency),
        _counter(
            "quotaguard_backend_errors", ["backend", "reason"], list(aggregator.errors.items())
        ),
        near,
        build,
        utilization_family(aggregator.top_utilization(now)),
    ]
    if aggregator.spikes is not None:
        families.append(spike_family(aggregator.top_spikes(now)))
    return families


def utilization_family(rows: Iterable[tuple[str, str, str, float]]) -> GaugeMetricFamily:
    """``quotaguard_top_customer_utilization_ratio`` from ``(customer, plan, limit, v)``."""
    family = GaugeMetricFamily(
        "quotaguard_top_customer_utilization_ratio",
        "Used over quota of the top-K customers of each plan and limit (latest decision).",
        labels=["customer", "plan", "limit"],
    )
    for customer, plan, limit, value in rows:
        family.add_metric([customer, plan, limit], value)
    return family


def spike_family(rows: Iterable[tuple[str, str, float]]) -> GaugeMetricFamily:
    """``quotaguard_top_customer_spike_ratio`` from ``(customer, plan, ratio)`` rows."""
    family = GaugeMetricFamily(
        "quotaguard_top_customer_spike_ratio",
        "Short-window rate over the customer's own long-window baseline, top-K per plan.",
        labels=["customer", "plan"],
    )
    for customer, plan, ratio in rows:
        family.add_metric([customer, plan], ratio)
    return family
