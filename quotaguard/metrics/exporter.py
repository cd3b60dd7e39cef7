"""The Prometheus exporter: an `Observer` of the guard that records metrics.

This is the thin glue between the guard, the pure `Aggregator` and prometheus_client.
The per-decision work is one list append (two with the backend latency); decisions are
handed to the aggregator in batches (every ``batch_size`` decisions, and by a background
timer within ``flush_interval`` seconds of being counted, at every scrape and at
interpreter exit; see `quotaguard.metrics.flusher`) under the exporter's lock.

Single-process mode exposes the aggregator's totals from a collector at scrape time
(`quotaguard.metrics.families`); multiprocess mode writes them to prometheus_client's
shared files at each flush (`quotaguard.metrics.multiprocess`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from quotaguard.clock import Clock, SystemClock
from quotaguard.core.decision import Decision, Settlement
from quotaguard.core.errors import BackendUnavailable
from quotaguard.metrics import flusher
from quotaguard.metrics.aggregator import Aggregator
from quotaguard.metrics.app import make_metrics_app
from quotaguard.metrics.config import ExporterConfig
from quotaguard.metrics.families import local_families
from quotaguard.metrics.multiprocess import (
    MultiprocessCollector,
    MultiprocessSink,
    SnapshotWriter,
)
from quotaguard.metrics.spikes import SpikeDetector, SpikeEvent, SpikeHook

__all__ = ["PrometheusExporter"]

logger = logging.getLogger("quotaguard.metrics")

_monotonic = time.monotonic


class PrometheusExporter:
    """Records the guard's decisions as Prometheus metrics; pass it as an observer.

    ::

        exporter = PrometheusExporter()
        guard = Guard(plans, observers=[exporter])
        app.mount("/metrics", exporter.asgi_app())

    ``registry``: where the metrics are registered; a new `CollectorRegistry` by default,
    so several exporters (and tests) never collide. ``clock``: the time used for spike
    averages and top-K staleness (`quotaguard.testing.FakeClock` in tests).
    ``on_spike``: called with a `SpikeEvent` when a customer's spike ratio crosses
    ``config.spikes.ratio``. ``multiprocess``: prometheus_client multiprocess mode;
    by default on when ``PROMETHEUS_MULTIPROC_DIR`` is set.

    Never raises into the guard: a failure while aggregating is logged and dropped.
    """

    def __init__(
        self,
        config: ExporterConfig | None = None,
        *,
        registry: CollectorRegistry | None = None,
        clock: Clock | None = None,
        on_spike: SpikeHook | None = None,
        multiprocess: bool | None = None,
    ) -> None:
        self.config = config or ExporterConfig()
        """The configuration."""
        self.clock: Clock = clock or SystemClock()
        """The clock of spike averages and top-K staleness."""
        self.on_spike = on_spike
        """The spike hook, or None."""
        if multiprocess is None:
            multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.multiprocess = multiprocess
        """Whether prometheus_client multiprocess mode is in use."""
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        """The registry to scrape."""
        config = self.config
        self.aggregator = Aggregator(config)
        """The pure aggregator holding every total and view."""
        self._buffer: list[Decision] = []
        self._elapsed: list[float] = []
        self._backend = ""
        self._other_elapsed: dict[str, list[float]] = {}
        self._batch = config.batch_size
        self._deadline = _monotonic() + config.flush_interval
        self._next_snapshot = 0.0
        self._lock = threading.RLock()
        # Settlements or batches aggregated but not yet written to the shared files.
        self._unpushed = False
        self._sink: MultiprocessSink | None = None
        self._snapshots: SnapshotWriter | None = None
        collector: Collector
        if multiprocess:
            self._sink = MultiprocessSink()
            self._snapshots = SnapshotWriter()
            collector = MultiprocessCollector(self.publish, config.top_k, config.spikes.enabled)
        else:
            collector = _LocalCollector(self)
        self.registry.register(collector)
        flusher.register(self, on_sigterm=config.flush_on_sigterm)

    @property
    def spikes(self) -> SpikeDetector | None:
        """The spike detector (None when disabled)."""
        return self.aggregator.spikes

    # -- Observer -----------------------------------------------------------------------

    def on_decision(self, decision: Decision, backend: str, elapsed: float) -> None:
        """Buffer one decision (the guard calls this after every decision)."""
        buffer = self._buffer
        buffer.append(decision)
        if backend is self._backend or backend == self._backend:
            self._elapsed.append(elapsed)
        else:
            self._other_backend(backend, elapsed)
        if len(buffer) >= self._batch:
            self._drain()

    def on_backend_error(self, backend: str, error: BackendUnavailable) -> None:
        """Count a backend failure by ``reason`` (timeout, connection, error class)."""
        try:
            with self._lock:
                self.aggregator.add_error(backend, error)
                self._unpushed = True
        except Exception:  # pragma: no cover - never raise into the guard
            logger.exception("quotaguard exporter failed to count a backend error")

    def on_settlement(self, settlement: Settlement, customer: str, plan: str | None) -> None:
        """Add a settled lease's difference from its estimate to the units counters.

        A positive delta (the actual cost exceeded the estimate) is added to
        ``quotaguard_units_consumed_total``; a negative one (a refund) to
        ``quotaguard_units_refunded_total``, so no counter ever decreases. Each limit of
        the plan gets the difference the backend applied to it, ``charge(limit, actual) -
        charge(limit, estimate)``: a ``"requests"`` limit, charged one request by the
        estimate and by the actual cost alike, gets nothing. The plan is ``plan`` when the
        guard passes it, else the plan of the customer's latest decision if the exporter
        still knows it, else the only plan seen; otherwise the settlement is counted in
        ``quotaguard_settlements_unattributed_total``.
        """
        try:
            with self._lock:
                self.aggregator.add_settlement(settlement, customer, plan, self._buffer)
                self._unpushed = True
        except Exception:  # pragma: no cover - never raise into the guard
            logger.exception("quotaguard exporter failed to count a settlement")

    def _other_backend(self, backend: str, elapsed: float) -> None:
        with self._lock:
            if not self._backend:
                self._backend = backend
                self._elapsed.append(elapsed)
            else:
                self._other_elapsed.setdefault(backend, []).append(elapsed)

    # -- aggregation --------------------------------------------------------------------

    def flush(self) -> None:
        """Aggregate the buffered decisions and publish every pending sum now.

        Scrapes do this by themselves, so does the background timer every
        ``flush_interval`` and the interpreter's exit.
        """
        self._flush(fold=True)

    def _flush(self, fold: bool) -> None:
        events: list[SpikeEvent] = []
        with self._lock:
            self._deadline = _monotonic() + self.config.flush_interval
            try:
                events = self._flush_locked(fold)
            except Exception:
                logger.exception("quotaguard exporter failed to aggregate decisions")
        for event in events:
            self._fire(event)

    def flush_due(self) -> float:
        """Flush if ``flush_interval`` passed and anything is pending; the next deadline.

        The background timer calls this; the deadline is in ``time.monotonic`` seconds.
        """
        if _monotonic() >= self._deadline:
            if self._pending():
                self._flush(fold=False)
            else:
                self._deadline = _monotonic() + self.config.flush_interval
        return self._deadline

    def _pending(self) -> bool:
        """Whether anything waits to be published (safe from any thread)."""
        spikes = self.aggregator.spikes
        return bool(
            self._buffer or self._elapsed or self._unpushed or (spikes and spikes.has_pending)
        )

    def flush_at_exit(self, wait: float) -> None:
        """Flush everything at exit, waiting at most ``wait`` s for the lock.

        Called at interpreter exit and from the SIGTERM handler: when the signal
        interrupted this very thread inside the exporter, nothing is flushed (the
        aggregation under way must not be re-entered). An exporter with nothing pending
        (e.g. one a forked child inherited and never used) is left alone.
        """
        if not self._pending():
            return
        owned = getattr(self._lock, "_is_owned", None)
        if owned is not None and owned():
            logger.warning("quotaguard exporter: interrupted while aggregating, not flushed")
            return
        if not self._lock.acquire(timeout=wait):
            logger.warning("quotaguard exporter: lock busy at exit, last counts not flushed")
            return
        try:
            self._flush(fold=True)
        finally:
            self._lock.release()

    def after_fork_in_child(self) -> None:
        """In a forked child: a fresh lock; drop what the parent buffered (it publishes it)."""
        self._lock = threading.RLock()
        self._buffer.clear()
        self._elapsed.clear()
        self._other_elapsed = {}
        self.aggregator.forget_plans()
        if self._sink is not None:
            self._sink.forget(self.aggregator)
        self._unpushed = False
        self._deadline = _monotonic() + self.config.flush_interval

    def _drain(self) -> None:
        """Aggregate a full buffer (no prometheus_client calls)."""
        events: list[SpikeEvent] = []
        with self._lock:
            try:
                events = self._aggregate(self._now())
                self._unpushed = True
                flusher.ensure_running()
                self._add_latencies()
            except Exception:
                logger.exception("quotaguard exporter failed to aggregate decisions")
        for event in events:
            self._fire(event)
        if _monotonic() >= self._deadline:
            self._flush(fold=False)

    def _aggregate(self, now: float) -> list[SpikeEvent]:
        # Slice then delete: appends racing with the aggregation stay in the buffer.
        buffer = self._buffer
        count = len(buffer)
        decisions = buffer[:count]
        del buffer[:count]
        return self.aggregator.add(decisions, now, sample=count >= self._batch)

    def _add_latencies(self) -> None:
        # Slice then delete: appends racing with the flush stay in the list.
        elapsed = self._elapsed
        count = len(elapsed)
        latencies = elapsed[:count]
        del elapsed[:count]
        aggregator = self.aggregator
        aggregator.add_latencies(self._backend, latencies, sample=count >= self._batch)
        if self._other_elapsed:
            others, self._other_elapsed = self._other_elapsed, {}
            for backend, values in others.items():
                aggregator.add_latencies(backend, values, sample=False)

    def _flush_locked(self, fold: bool) -> list[SpikeEvent]:
        now = self._now()
        self._unpushed = False
        events = self._aggregate(now)
        self._add_latencies()
        aggregator = self.aggregator
        aggregator.settle()
        spikes = aggregator.spikes
        if spikes is not None and spikes.pending and (fold or spikes.fold_due(now)):
            events.extend(spikes.fold(now))
        if self._sink is not None:
            self._sink.push(aggregator)
        if self._snapshots is not None and _monotonic() >= self._next_snapshot:
            assert self._sink is not None
            self._next_snapshot = _monotonic() + self.config.snapshot_interval
            self._sink.set_near_limit(aggregator.near_limit(now))
            self._snapshots.write(aggregator.top_utilization(now), aggregator.top_spikes(now), now)
        return events

    def _fire(self, event: SpikeEvent) -> None:
        hook = self.on_spike
        if hook is None:
            return
        try:
            hook(event)
        except Exception:
            logger.exception("quotaguard spike hook %r failed", hook)

    def _now(self) -> float:
        return self.clock.now_us() / 1_000_000

    # -- views --------------------------------------------------------------------------

    def publish(self) -> None:
        """Flush now and, in multiprocess mode, republish this process's top-K snapshot."""
        self._next_snapshot = 0.0
        self.flush()

    def top_utilization(self) -> list[tuple[str, str, str, float]]:
        """The top-K utilisation view now: ``(customer, plan, limit, ratio)`` rows."""
        self.flush()
        with self._lock:
            return self.aggregator.top_utilization(self._now())

    def top_spikes(self) -> list[tuple[str, str, float]]:
        """The top-K spike view now: ``(customer, plan, ratio)`` rows, highest first."""
        self.flush()
        with self._lock:
            return self.aggregator.top_spikes(self._now())

    def collect_local(self) -> Iterator[Metric]:
        """The metrics of this process, top-K gauges included.

        This is what a scrape returns in single-process mode.
        """
        self.flush()
        with self._lock:
            metrics = local_families(self.aggregator, self._now())
        yield from metrics

    def asgi_app(self) -> Any:
        """An ASGI app serving this exporter's registry (prometheus_client's own)."""
        return make_metrics_app(self)


class _LocalCollector(Collector):
    """Single-process scrape: flush, then every metric and the top-K views."""

    def __init__(self, exporter: PrometheusExporter) -> None:
        self._exporter = exporter

    def collect(self) -> Iterable[Metric]:
        return list(self._exporter.collect_local())

    def describe(self) -> Iterable[Metric]:
        return []
