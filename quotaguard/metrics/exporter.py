"""The Prometheus exporter: an `Observer` of the guard that records metrics.

The per-decision work is one list append (two with the backend latency); decisions are
aggregated in batches (every ``batch_size`` decisions, and by a background timer within
``flush_interval`` seconds of being counted, at every scrape and at interpreter exit; see
`quotaguard.metrics.flusher`) with C-level helpers (``Counter``, ``sorted``, ``bisect``),
and each batch costs one increment per label set. Top-K and near-limit
tables and spike averages are refreshed in the same batches; their gauges are computed
at scrape time.

A decision's limits are read only through ``decision.limits.specs`` and
``decision.limits.used`` (utilisation = used / quota), which never build the per-limit
statuses; only refused decisions, whose refusing limit is needed, build them. Under load
one allowed decision in ``sample_every`` is read (see `ExporterConfig.sample_every`).
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
from bisect import bisect_right
from collections import Counter as TallyCounter
from collections.abc import Iterable, Iterator, Sequence
from operator import ge, itemgetter, truediv
from typing import Any

import attrs
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from quotaguard._version import __version__
from quotaguard.clock import Clock, SystemClock
from quotaguard.core.decision import Decision, LimitStatus, LimitStatuses, Outcome, Settlement
from quotaguard.core.errors import BackendUnavailable
from quotaguard.core.policy import Limit, charge
from quotaguard.metrics import flusher
from quotaguard.metrics.spikes import SpikeConfig, SpikeDetector, SpikeEvent, SpikeHook
from quotaguard.metrics.topk import UtilizationTable

__all__ = [
    "ExporterConfig",
    "LATENCY_BUCKETS",
    "MULTIPROCESS_MODES",
    "PrometheusExporter",
    "UTILIZATION_BUCKETS",
]

logger = logging.getLogger("quotaguard.metrics")

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

_OUTCOME = itemgetter(1)
_PLAN = itemgetter(3)
_CUSTOMER = itemgetter(2)
_COST = itemgetter(5)
_USED = itemgetter(3)
_LIMIT = itemgetter(0)
_ALLOWED = Outcome.ALLOWED
_NUMBERS: frozenset[type] = frozenset((int, float))
_monotonic = time.monotonic
# Pending observations per histogram before they are handed to prometheus_client early.
_MAX_PENDING = 16_384


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
    batch_size: int = attrs.field(default=128, validator=_positive_int)
    """Decisions buffered before they are aggregated."""
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


class _PlanInfo:
    """One plan's label children, top-K tables and pending (not yet pushed) sums.

    Batches add plain Python numbers and lists here; `push` hands them to
    prometheus_client (one increment per label set and bucket) at a scrape and every
    ``flush_interval``. Nothing here keeps a `Decision` alive.
    """

    __slots__ = (
        "allowed",
        "allowed_child",
        "exact",
        "hists",
        "limits",
        "names",
        "quotas",
        "refund_children",
        "refunds",
        "sampled",
        "spike_limit",
        "tables",
        "unit_children",
        "unit_limits",
        "units",
        "width",
    )

    def __init__(self, exporter: PrometheusExporter, plan: str, specs: Sequence[Limit]):
        config = exporter.config
        self.limits: tuple[Limit, ...] = tuple(specs)
        self.names = tuple(limit.name for limit in self.limits)
        self.width = len(self.limits)
        self.allowed = 0
        self.allowed_child = exporter._decisions.labels(plan, "", _ALLOWED.value)
        self.unit_limits = [limit for limit in self.limits if limit.kind != "concurrency"]
        self.unit_children = [exporter._units.labels(plan, x.name) for x in self.unit_limits]
        self.units = [0.0] * len(self.unit_limits)
        self.refund_children = [exporter._refunds.labels(plan, x.name) for x in self.unit_limits]
        self.refunds = [0.0] * len(self.unit_limits)
        # Spikes are measured in the unit of the plan's last non-concurrency limit
        # (typically the weekly cap); None: in requests.
        self.spike_limit = self.unit_limits[-1] if self.unit_limits else None
        self.hists = [exporter._utilization.labels(plan, name) for name in self.names]
        self.tables = [
            exporter._table(plan, name, config.max_tracked, config.min_utilization)
            for name in self.names
        ]
        self.quotas = tuple(limit.quota for limit in self.limits)
        # Pending utilisation readings, ``width`` ratios (one per limit) per decision read,
        # flat (no list per reading): ``exact`` ones count once, ``sampled`` ones stand for
        # ``config.sample_every`` allowed decisions each.
        self.exact: list[float] = []
        self.sampled: list[float] = []

    def matches(self, specs: Sequence[Limit]) -> bool:
        """Whether ``specs`` have this plan's shape (limit names, in order)."""
        if specs == self.limits:
            return True
        return len(specs) == self.width and all(
            limit.name == name for limit, name in zip(specs, self.names, strict=True)
        )

    def push_histograms(self, bounds: Sequence[float], weight: int) -> None:
        """Hand the pending utilisation readings to prometheus_client."""
        width = self.width
        for flat, times in ((self.exact, 1), (self.sampled, weight)):
            if flat:
                for i, child in enumerate(self.hists):
                    _observe_scaled(child, bounds, flat[i::width], 1, times)
                flat.clear()

    def push(self, bounds: Sequence[float], weight: int) -> None:
        """Hand every pending sum to prometheus_client."""
        if self.allowed:
            self.allowed_child.inc(self.allowed)
            self.allowed = 0
        for pending, children in (
            (self.units, self.unit_children),
            (self.refunds, self.refund_children),
        ):
            for j, amount in enumerate(pending):
                if amount:
                    children[j].inc(amount)
                    pending[j] = 0.0
        self.push_histograms(bounds, weight)


_LAZY: dict[type, bool] = {}


def _lazy(limits: Sequence[LimitStatus]) -> bool:
    """Whether ``limits`` is a `LimitStatuses` (cheap ``specs`` and ``used``)."""
    cls = limits.__class__
    lazy = _LAZY.get(cls)
    if lazy is None:  # an ABC isinstance check costs more than a dict lookup
        lazy = _LAZY[cls] = issubclass(cls, LimitStatuses)
    return lazy


def _read(limits: Sequence[LimitStatus]) -> tuple[Sequence[Limit], Sequence[float]]:
    """A decision's limits and each one's ``used``, without building lazy statuses."""
    if _lazy(limits):
        lazy: LimitStatuses = limits  # type: ignore[assignment]
        return lazy.specs, lazy.used
    return tuple(map(_LIMIT, limits)), tuple(map(_USED, limits))


def _specs(limits: Sequence[LimitStatus]) -> Sequence[Limit]:
    """A decision's limits, without building lazy statuses."""
    if _lazy(limits):
        lazy: LimitStatuses = limits  # type: ignore[assignment]
        return lazy.specs
    return tuple(map(_LIMIT, limits))


def _reason(error: BaseException) -> str:
    cause = error.__cause__ or error.__context__ or error
    name = type(cause).__name__
    lowered = name.lower()
    if "timeout" in lowered:
        return "timeout"
    if "connection" in lowered or isinstance(cause, ConnectionError | OSError):
        return "connection"
    if "noscript" in str(cause).lower()[:64]:
        return "noscript"
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()[:40] or "other"


def _observe_many(child: Histogram, bounds: Sequence[float], values: list[float]) -> None:
    """Add many observations to a histogram child with one increment per bucket."""
    _observe_scaled(child, bounds, values, 1)


def _observe_scaled(
    child: Histogram, bounds: Sequence[float], raw: list[float], scale: float, weight: int = 1
) -> None:
    """Observe ``x / scale`` ``weight`` times for each ``x`` of ``raw``.

    One increment per bucket: the bucket bounds are scaled instead of the values.
    """
    if not raw:
        return
    buckets = getattr(child, "_buckets", None)
    total = getattr(child, "_sum", None)
    if buckets is None or total is None or len(buckets) != len(bounds) + 1:
        for x in raw:  # pragma: no cover - fallback if prometheus_client changes
            for _ in range(weight):
                child.observe(x / scale)
        return
    raw = sorted(raw)
    previous = 0
    for i, bound in enumerate(bounds):
        cumulative = bisect_right(raw, bound * scale)
        if cumulative > previous:
            buckets[i].inc((cumulative - previous) * weight)
        previous = cumulative
    if len(raw) > previous:
        buckets[-1].inc((len(raw) - previous) * weight)
    total.inc(math.fsum(raw) * weight / scale)


def _at_least_full_where_refused(
    ratios: list[float], statuses: Sequence[LimitStatus]
) -> list[float]:
    """``ratios`` with each limit that refused the decision read as at least 1 (full).

    A token bucket refills continuously, so a refused customer's bucket reads a little
    under full (0.99996); the top-K and near-limit views count a refusal as full.
    """
    return [
        ratio if status.allowed else max(ratio, 1.0)
        for ratio, status in zip(ratios, statuses, strict=True)
    ]


def _binding_limit(decision: Decision) -> str:
    """The refusing limit with the longest wait (first in plan order on a tie)."""
    best: LimitStatus | None = None
    for status in decision.limits:
        if not status.allowed and (best is None or status.retry_after > best.retry_after):
            best = status
    return "" if best is None else best.limit.name


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
        self._decisions = Counter(
            "quotaguard_decisions",
            "Decisions by plan, refusing limit (empty unless denied) and outcome.",
            ["plan", "limit", "decision"],
            registry=None,
        )
        self._units = Counter(
            "quotaguard_units_consumed",
            "Units consumed: admitted costs plus settlements above the estimate.",
            ["plan", "limit"],
            registry=None,
        )
        self._refunds = Counter(
            "quotaguard_units_refunded",
            "Units given back when a lease settled below its estimate, per plan and limit.",
            ["plan", "limit"],
            registry=None,
        )
        self._unattributed = Counter(
            "quotaguard_settlements_unattributed",
            "Settlements whose plan the exporter could not tell; their units are not counted.",
            registry=None,
        )
        self._utilization = Histogram(
            "quotaguard_utilization_ratio",
            "Used over quota of each limit at decision time.",
            ["plan", "limit"],
            buckets=config.utilization_buckets,
            registry=None,
        )
        self._latency = Histogram(
            "quotaguard_backend_latency_seconds",
            "Time the backend took to decide, in seconds.",
            ["backend"],
            buckets=config.latency_buckets,
            registry=None,
        )
        self._errors = Counter(
            "quotaguard_backend_errors",
            "Backend failures handled by the failure policy, by backend and reason.",
            ["backend", "reason"],
            registry=None,
        )
        self._near_limit = Gauge(
            "quotaguard_near_limit_customers",
            "Tracked customers at or above a utilisation threshold of a limit.",
            ["plan", "limit", "threshold"],
            registry=None,
            multiprocess_mode="livemax",
        )
        self._build_info = Gauge(
            "quotaguard_build_info",
            "Always 1; the version label is quotaguard's version.",
            ["version"],
            registry=None,
            multiprocess_mode="max",
        )
        self._build_info.labels(__version__).set(1)
        self._metrics: tuple[Any, ...] = (
            self._decisions,
            self._units,
            self._refunds,
            self._unattributed,
            self._utilization,
            self._latency,
            self._errors,
            self._near_limit,
            self._build_info,
        )
        self._plans: dict[str, _PlanInfo] = {}
        self._tables: dict[tuple[str, str], UtilizationTable] = {}
        self._other: dict[tuple[str, str, str], Any] = {}
        self._reasons: set[str] = set()
        self.spikes: SpikeDetector | None = (
            SpikeDetector(config.spikes) if config.spikes.enabled else None
        )
        """The spike detector (None when disabled)."""
        self._buffer: list[Decision] = []
        self._elapsed: list[float] = []
        self._backend = ""
        self._other_elapsed: dict[str, list[float]] = {}
        self._batch = config.batch_size
        self._every = config.sample_every
        self._phase = 0
        self._latency_phase = 0
        self._deadline = _monotonic() + config.flush_interval
        self._next_snapshot = 0.0
        self._lock = threading.RLock()
        # Sums aggregated from the buffer or settlements but not yet handed to
        # prometheus_client.
        self._unpushed = False
        self._snapshots = None
        if multiprocess:
            from quotaguard.metrics.multiprocess import MultiprocessCollector, SnapshotWriter

            self._snapshots = SnapshotWriter()
            self.registry.register(MultiprocessCollector(self))
        else:
            self.registry.register(_Collector(self))
        flusher.register(self, on_sigterm=config.flush_on_sigterm)

    # -- Observer ---------------------------------------------------------------------

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
            reason = _reason(error)
            with self._lock:
                if reason not in self._reasons:
                    if len(self._reasons) >= self.config.max_reasons:
                        reason = "other"
                    self._reasons.add(reason)
                self._errors.labels(backend, reason).inc()
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
            if settlement.already_settled:
                return
            with self._lock:
                info = self._settlement_plan(customer, plan)
                if info is None:
                    self._unattributed.inc()
                    return
                estimate, actual = settlement.estimate, settlement.actual
                self._unpushed = True
                for j, limit in enumerate(info.unit_limits):
                    amount = charge(limit, actual) - charge(limit, estimate)
                    if amount > 0:
                        info.units[j] += amount
                    elif amount < 0:
                        info.refunds[j] -= amount
        except Exception:  # pragma: no cover - never raise into the guard
            logger.exception("quotaguard exporter failed to count a settlement")

    def _settlement_plan(self, customer: str, plan: str | None) -> _PlanInfo | None:
        if plan is not None and plan in self._plans:
            return self._plans[plan]
        # The decision may still be buffered (not aggregated yet): take its plan from there.
        for decision in reversed(self._buffer):
            found = decision[3]
            if found is not None and (found == plan or (plan is None and decision[2] == customer)):
                return self._plan_info(found, _specs(decision[6]))
        if plan is None and customer and self.spikes is not None:
            plan = self.spikes.plan_of(customer)
        if plan is None and len(self._plans) == 1:
            plan = next(iter(self._plans))
        return None if plan is None else self._plans.get(plan)

    def _other_backend(self, backend: str, elapsed: float) -> None:
        with self._lock:
            if not self._backend:
                self._backend = backend
                self._elapsed.append(elapsed)
            else:
                self._other_elapsed.setdefault(backend, []).append(elapsed)

    # -- aggregation ------------------------------------------------------------------

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
        """Whether anything waits to be handed to prometheus_client (safe from any thread)."""
        spikes = self.spikes
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
        self._plans = {}
        self._unpushed = False
        self._deadline = _monotonic() + self.config.flush_interval

    def _drain(self) -> None:
        """Aggregate a full buffer into the pending sums (no prometheus_client calls)."""
        events: list[SpikeEvent] = []
        with self._lock:
            try:
                events = self._aggregate_buffer(self._now())
                self._unpushed = True
                flusher.ensure_running()
                if len(self._elapsed) >= _MAX_PENDING:
                    self._push_latency()
            except Exception:
                logger.exception("quotaguard exporter failed to aggregate decisions")
        for event in events:
            self._fire(event)
        if _monotonic() >= self._deadline:
            self._flush(fold=False)

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

    def _push_latency(self) -> None:
        # Slice then delete: appends racing with the flush stay in the list.
        elapsed = self._elapsed
        count = len(elapsed)
        latencies = elapsed[:count]
        del elapsed[:count]
        bounds = self.config.latency_buckets
        if count >= self._batch and self._every > 1:  # under load: one in ``every``
            every = self._every
            phase = self._latency_phase
            self._latency_phase = (phase - count) % every
            latencies = latencies[phase::every]
            _observe_scaled(self._latency.labels(self._backend), bounds, latencies, 1, every)
        elif latencies:
            _observe_many(self._latency.labels(self._backend), bounds, latencies)
        if self._other_elapsed:
            others, self._other_elapsed = self._other_elapsed, {}
            for backend, values in others.items():
                _observe_many(self._latency.labels(backend), bounds, values)

    def _flush_locked(self, fold: bool) -> list[SpikeEvent]:
        now = self._now()
        self._unpushed = False
        events = self._aggregate_buffer(now)
        self._push_latency()
        bounds = self.config.utilization_buckets
        for info in self._plans.values():
            info.push(bounds, self._every)
        spikes = self.spikes
        if spikes is not None and spikes.pending and (fold or spikes.fold_due(now)):
            events.extend(spikes.fold(now))
        if self._snapshots is not None and _monotonic() >= self._next_snapshot:
            self._next_snapshot = _monotonic() + self.config.snapshot_interval
            self._refresh_near_limit(now)
            self._snapshots.write(self._top_utilization(now), self._top_spikes(now), now)
        return events

    def _aggregate_buffer(self, now: float) -> list[SpikeEvent]:
        # Slice then delete: appends racing with the aggregation stay in the buffer.
        buffer = self._buffer
        count = len(buffer)
        if not count:
            return []
        decisions = buffer[:count]
        del buffer[:count]
        sample = count >= self._batch
        plan = decisions[0][3]
        if plan is not None and list(map(_PLAN, decisions)).count(plan) == count:
            return self._aggregate_plan(plan, decisions, now, sample)  # one plan (counted in C)
        groups: dict[str | None, list[Decision]] = {}
        for decision in decisions:
            plan = decision[3]
            group = groups.get(plan)
            if group is None:
                groups[plan] = [decision]
            else:
                group.append(decision)
        events: list[SpikeEvent] = []
        for plan, group in groups.items():
            if plan is None:
                for outcome, n in TallyCounter(map(_OUTCOME, group)).items():
                    self._other_child("", "", outcome).inc(n)
                continue
            events.extend(self._aggregate_plan(plan, group, now, sample))
        return events

    def _plan_info(self, plan: str, specs: Sequence[Limit]) -> _PlanInfo:
        info = self._plans.get(plan)
        if info is None or not info.matches(specs):
            if info is not None:  # the plan changed shape: publish what the old one holds
                info.push(self.config.utilization_buckets, self._every)
            info = self._plans[plan] = _PlanInfo(self, plan, specs)
        return info

    def _other_child(self, plan: str, limit: str, outcome: str) -> Any:
        key = (plan, limit, outcome)
        child = self._other.get(key)
        if child is None:
            child = self._other[key] = self._decisions.labels(plan, limit, outcome)
        return child

    def _table(self, plan: str, limit: str, capacity: int, minimum: float) -> UtilizationTable:
        key = (plan, limit)
        table = self._tables.get(key)
        if table is None:
            table = self._tables[key] = UtilizationTable(capacity, minimum, self.config.stale_after)
        return table

    def _aggregate_plan(
        self, plan: str, group: list[Decision], now: float, sample: bool
    ) -> list[SpikeEvent]:
        count = len(group)
        info = self._plan_info(plan, _specs(group[0][6]))
        outcomes = list(map(_OUTCOME, group))
        allowed = outcomes.count(_ALLOWED)  # identity compare in C (Enum hashing is not)
        costs = list(map(_COST, group))
        numeric = costs.count(1) == count or set(map(type, costs)) <= _NUMBERS
        # Sampled only under load: a partial batch (a scrape, or ``flush_interval`` passing
        # before ``batch_size`` decisions came) is read in full.
        every = self._every if sample else 1
        phase = self._phase % every
        # Which decisions' utilisation is read, and what each reading weighs in the
        # histogram: one allowed decision in ``every`` (weight ``every``), every refused one
        # (weight 1; its statuses are built anyway), and the latest decision of each
        # customer a top-K table tracks (weight 0: top-K only).
        order: Sequence[int]
        weights: dict[int, int] | None = None
        if allowed == count:
            order = range(phase, count, every)
            self._phase = (phase - count) % every
        else:
            admitted_at = [i for i, o in enumerate(outcomes) if o is _ALLOWED]
            weights = dict.fromkeys(admitted_at[phase::every], every)
            self._phase = (phase - len(admitted_at)) % every
            for i, outcome in enumerate(outcomes):
                if outcome is not _ALLOWED:
                    weights[i] = 1
        if allowed:
            info.allowed += allowed
            if allowed == count:
                admitted = costs
            else:
                admitted = [c for c, o in zip(costs, outcomes, strict=True) if o is _ALLOWED]
            if numeric:
                total = math.fsum(admitted)
                units = info.units
                for j in range(len(units)):
                    units[j] += total
            else:  # per-unit costs: each limit is charged its own unit
                for j, limit_spec in enumerate(info.unit_limits):
                    info.units[j] += math.fsum([charge(limit_spec, c) for c in admitted])
        if allowed != count:
            refused: TallyCounter[tuple[str, str]] = TallyCounter(
                (_binding_limit(d), d[1].value) for d in group if d[1] is not _ALLOWED
            )
            for (limit, outcome), n in refused.items():
                self._other_child(plan, limit, outcome).inc(n)
        customers = list(map(_CUSTOMER, group))
        hits: set[str] = set()
        if any(map(len, info.tables)):
            present = set(customers)
            for table in info.tables:
                hits |= table.tracked_among(present)
            if hits:
                if weights is None:
                    weights = dict.fromkeys(order, every)
                latest = dict(zip(customers, range(count), strict=True))  # the last wins
                for customer in hits:
                    weights.setdefault(latest[customer], 0)
        if weights is not None:
            order = sorted(weights)
        if order:
            self._read_utilization(plan, info, group, customers, order, weights, every, hits, now)
        if self.spikes is not None:
            spike_limit = info.spike_limit
            if spike_limit is None:
                spike_units: Sequence[float] = [1] * count
            elif numeric:
                spike_units = costs
            else:
                spike_units = [charge(spike_limit, c) for c in costs]
            return self.spikes.record(customers, spike_units, plan, now)
        return []

    def _read_utilization(
        self,
        plan: str,
        info: _PlanInfo,
        group: list[Decision],
        customers: list[str],
        order: Sequence[int],
        weights: dict[int, int] | None,
        every: int,
        hits: set[str],
        now: float,
    ) -> None:
        """Read the utilisation of ``group[i]`` for each ``i`` of ``order`` (ascending).

        ``weights``: each reading's weight in the histogram; None: ``every`` each.
        """
        offers: list[list[tuple[str, float]]] | None = None
        floors = [table.floor for table in info.tables]
        for index in order:
            specs, used = _read(group[index][6])
            if specs is info.limits:
                ratios = list(map(truediv, used, info.quotas))
            elif info.matches(specs):  # per-customer quotas
                ratios = [u / limit.quota for u, limit in zip(used, specs, strict=True)]
            else:  # the plan changed shape (a catalogue change): publish the old one's data
                if offers is not None:
                    self._offer(info, offers, now)
                    offers = None
                info = self._plan_info(plan, specs)
                floors = [table.floor for table in info.tables]
                ratios = [u / limit.quota for u, limit in zip(used, specs, strict=True)]
            weight = every if weights is None else weights[index]
            if weight == 1:
                info.exact.extend(ratios)
            elif weight:
                info.sampled.extend(ratios)
            if group[index][1] is not _ALLOWED:
                ratios = _at_least_full_where_refused(ratios, group[index][6])
            customer = customers[index]
            if customer in hits or any(map(ge, ratios, floors)):
                if offers is None:
                    offers = [[] for _ in floors]
                for i, ratio in enumerate(ratios):
                    if ratio >= floors[i] or customer in hits:
                        offers[i].append((customer, ratio))
        if len(info.exact) + len(info.sampled) >= _MAX_PENDING:
            info.push_histograms(self.config.utilization_buckets, self._every)
        if offers is not None:
            self._offer(info, offers, now)

    @staticmethod
    def _offer(info: _PlanInfo, offers: list[list[tuple[str, float]]], now: float) -> None:
        for table, updates in zip(info.tables, offers, strict=True):
            if updates:
                table.offer(updates, now)

    # -- views ------------------------------------------------------------------------

    def _top_utilization(self, now: float) -> list[tuple[str, str, str, float]]:
        rows = []
        k = self.config.top_k
        for (plan, limit), table in list(self._tables.items()):
            for customer, value in table.top(k, now):
                rows.append((customer, plan, limit, value))
        return rows

    def _top_spikes(self, now: float) -> list[tuple[str, str, float]]:
        if self.spikes is None:
            return []
        k = self.config.top_k
        rows = self.spikes.top(len(self.spikes), now)
        per_plan: dict[str, int] = {}
        kept = []
        for customer, plan, ratio in rows:  # highest first
            if per_plan.get(plan, 0) < k:
                per_plan[plan] = per_plan.get(plan, 0) + 1
                kept.append((customer, plan, ratio))
        return kept

    def _refresh_near_limit(self, now: float) -> None:
        thresholds = self.config.near_limit
        labels = [f"{t:g}" for t in thresholds]
        for (plan, limit), table in list(self._tables.items()):
            counts = table.count_at_least(thresholds, now)
            for label, count in zip(labels, counts, strict=True):
                self._near_limit.labels(plan, limit, label).set(count)

    def publish(self) -> None:
        """Flush now and, in multiprocess mode, republish this process's top-K snapshot."""
        self._next_snapshot = 0.0
        self.flush()

    def top_utilization(self) -> list[tuple[str, str, str, float]]:
        """The top-K utilisation view now: ``(customer, plan, limit, ratio)`` rows."""
        self.flush()
        with self._lock:
            return self._top_utilization(self._now())

    def top_spikes(self) -> list[tuple[str, str, float]]:
        """The top-K spike view now: ``(customer, plan, ratio)`` rows, highest first."""
        self.flush()
        with self._lock:
            return self._top_spikes(self._now())

    def collect_local(self) -> Iterator[Metric]:
        """The metrics of this process, top-K gauges included.

        This is what a scrape returns in single-process mode.
        """
        self.flush()
        with self._lock:
            now = self._now()
            self._refresh_near_limit(now)
            utilization = self._top_utilization(now)
            spikes = self._top_spikes(now)
            metrics = [metric for collector in self._metrics for metric in collector.collect()]
        yield from metrics
        yield utilization_family(utilization)
        if self.spikes is not None:
            yield spike_family(spikes)

    def asgi_app(self) -> Any:
        """An ASGI app serving this exporter's registry (prometheus_client's own)."""
        from quotaguard.metrics.app import make_metrics_app

        return make_metrics_app(self)


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


class _Collector(Collector):
    """Single-process scrape: flush, then every metric and the top-K views."""

    def __init__(self, exporter: PrometheusExporter) -> None:
        self._exporter = exporter

    def collect(self) -> Iterable[Metric]:
        return list(self._exporter.collect_local())

    def describe(self) -> Iterable[Metric]:
        return []
