"""The exporter's configuration and the bucket bounds of its histograms."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import attrs

from quotaguard.metrics.spike_types import SpikeConfig

__all__ = [
    "ExporterConfig",
    "LATENCY_BUCKETS",
    "MULTIPROCESS_MODES",
    "UTILIZATION_BUCKETS",
]

UTILIZATION_BUCKETS: tuple[float, ...] = (0.5, 0.8, 0.9, 0.95, 0.99, 1.0)
"""Bucket bounds of ``quotaguard_utilization_ratio`` (STANDARDS.md)."""

LATENCY_BUCKETS: tuple[float, ...] = (
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
"""Bucket bounds of ``quotaguard_backend_latency_seconds``: 10 us (memory) to 2.5 s."""

MULTIPROCESS_MODES: dict[str, str] = {
    "quotaguard_build_info": "max",
    "quotaguard_near_limit_customers": "livemax",
    "quotaguard_top_customer_utilization_ratio": "livemostrecent (merged by quotaguard)",
    "quotaguard_top_customer_spike_ratio": "livemostrecent (merged by quotaguard)",
}
"""How each gauge is combined across processes under ``PROMETHEUS_MULTIPROC_DIR``.

Counters and histograms are summed by prometheus_client. The two top-K gauges are not
prometheus_client gauges in multiprocess mode (its mmap files never forget a label set,
so per-customer series would grow without bound): each process publishes its top-K in a
small snapshot file and the scrape merges the live processes' snapshots, keeping each
customer's most recent value, then takes the top K again.
"""


def _positive_int(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{attribute.name} must be a positive integer, got {value!r}")


def _positive(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise ValueError(f"{attribute.name} must be a finite number > 0, got {value!r}")


def _bounds(value: Iterable[float]) -> tuple[float, ...]:
    return tuple(float(v) for v in value)


def _check_bounds(_: object, attribute: attrs.Attribute[tuple[float, ...]], value: Any) -> None:
    if not value or list(value) != sorted(set(value)) or not all(map(math.isfinite, value)):
        raise ValueError(f"{attribute.name} must be finite, strictly increasing, non-empty")


@attrs.frozen
class ExporterConfig:
    """How the exporter aggregates. Times are in seconds."""

    top_k: int = attrs.field(default=20, validator=_positive_int)
    """Customers shown per top-K view (per plan and limit for utilisation, per plan for
    spikes)."""
    near_limit: tuple[float, ...] = attrs.field(
        default=(0.8, 0.9, 1.0), converter=_bounds, validator=_check_bounds
    )
    """Utilisation thresholds of ``quotaguard_near_limit_customers``."""
    min_utilization: float = attrs.field(default=0.1)
    """Customers below this utilisation of a limit are not tracked for top-K views."""
    max_tracked: int = attrs.field(default=2048, validator=_positive_int)
    """The most customers tracked per (plan, limit); near-limit counts are exact below it."""
    stale_after: float = attrs.field(default=3600.0, validator=_positive)
    """A tracked customer without a decision for this long leaves the top-K views."""
    utilization_buckets: tuple[float, ...] = attrs.field(
        default=UTILIZATION_BUCKETS, converter=_bounds, validator=_check_bounds
    )
    """Bucket bounds of the utilisation histogram."""
    latency_buckets: tuple[float, ...] = attrs.field(
        default=LATENCY_BUCKETS, converter=_bounds, validator=_check_bounds
    )
    """Bucket bounds of the backend latency histogram."""
    sample_every: int = attrs.field(default=32, validator=_positive_int)
    """Under load (full batches of ``batch_size``), the utilisation and backend latency of
    one allowed decision in this many are read, each reading counted this many times in
    the histograms (so their counts stay per decision); refused decisions and the latest
    decision in the batch of each customer in a top-K view are always read. Partial
    batches (light traffic, scrapes) are read in full. Reading a utilisation costs more
    than the rest of a decision's metrics together; 1 reads every decision."""
    batch_size: int = attrs.field(default=64, validator=_positive_int)
    """Decisions buffered before they are aggregated. Small enough that what the
    buffered decisions hold stays in the CPU's caches (128 measured slower at 100k
    customers, 32 too: the per-batch work is paid more often)."""
    flush_interval: float = attrs.field(default=1.0, validator=_positive)
    """A background timer hands every count to prometheus_client (in multiprocess mode: to
    the shared files) within this many seconds, whether or not more traffic comes; so do
    scrapes and interpreter exit."""
    snapshot_interval: float = attrs.field(default=5.0, validator=_positive)
    """Multiprocess mode: how often a process republishes its top-K snapshot."""
    max_reasons: int = attrs.field(default=16, validator=_positive_int)
    """Distinct ``reason`` values of backend errors; more are counted as ``other``."""
    spikes: SpikeConfig = attrs.field(factory=SpikeConfig)
    """Spike detection settings."""
    flush_on_sigterm: bool = True
    """Install a SIGTERM handler that flushes every exporter before the process dies of
    SIGTERM, when SIGTERM has its default disposition (see `flush_on_sigterm`)."""

    @min_utilization.validator
    def _check_min(self, _: attrs.Attribute[float], value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise ValueError(f"min_utilization must be within [0, 1], got {value!r}")
