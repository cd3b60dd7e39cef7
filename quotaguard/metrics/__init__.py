"""Prometheus metrics for quotaguard: an observer of the guard, with bounded cardinality.

::

    from quotaguard.metrics import PrometheusExporter

    exporter = PrometheusExporter()
    guard = Guard(plans, observers=[exporter])
    app.mount("/metrics", exporter.asgi_app())

See docs/metrics.md for the metrics, the top-K and spike views and multiprocess mode.

The layers, each importing only those below it: `aggregator` (pure: batching maths,
histogram buckets, top-K, spike and near-limit views; no prometheus_client, testable on
a FakeClock) over `spikes`, `topk`, `buckets` and `plans`; then the prometheus_client
glue: `families` (single-process exposition), `cells` and `multiprocess` (shared files
and snapshots), `app` (serving), and `exporter` (the guard's observer, its lock, buffer
and `flusher` timer) on top.
"""

from quotaguard.metrics.app import make_metrics_app, start_metrics_server
from quotaguard.metrics.config import (
    LATENCY_BUCKETS,
    MULTIPROCESS_MODES,
    UTILIZATION_BUCKETS,
    ExporterConfig,
)
from quotaguard.metrics.exporter import PrometheusExporter
from quotaguard.metrics.flusher import flush_on_sigterm
from quotaguard.metrics.multiprocess import mark_process_dead
from quotaguard.metrics.spikes import SpikeConfig, SpikeDetector, SpikeEvent, SpikeHook
from quotaguard.metrics.topk import UtilizationTable

__all__ = [
    "ExporterConfig",
    "LATENCY_BUCKETS",
    "MULTIPROCESS_MODES",
    "PrometheusExporter",
    "SpikeConfig",
    "SpikeDetector",
    "SpikeEvent",
    "SpikeHook",
    "UTILIZATION_BUCKETS",
    "UtilizationTable",
    "flush_on_sigterm",
    "make_metrics_app",
    "mark_process_dead",
    "start_metrics_server",
]
