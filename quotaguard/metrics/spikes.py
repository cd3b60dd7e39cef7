"""Spike detection: each customer's short-window rate over their own long-window baseline.

A customer's requested units feed two exponentially weighted moving averages of their
rate, a short one (default: 5 minutes) and a long one (default: 24 hours). The spike ratio
is ``short / baseline``, where the baseline is the long average corrected for the time the
customer has been tracked (so a steady customer reads about 1 from the start). A ratio is
reported only once the customer has ``min_history`` of history and at least
``min_volume`` units in the short window, so sparse or brand-new customers do not read as
spikes.

Memory is bounded: at most ``capacity`` customers are tracked, in the manner of the
space-saving heavy-hitters algorithm. When the table is full, a customer not yet tracked
enters only if its contribution is at least twice the smallest (decayed) long-window rate
tracked (so equals do not churn each other out);
overflow is trimmed back to ``capacity`` keeping the heaviest long-window rates. So a
flood of junk ids, each sending a little, cannot displace steady customers, and the
structure never grows past ``capacity`` entries plus one fold's worth of pending ids
(itself capped at ``4 * capacity``).

Updates are batched: units accumulate in a pending counter and are folded into the
averages every ``fold_interval`` seconds (or when the counter is full).
"""

from __future__ import annotations

import heapq
import logging
import math
from collections import Counter
from collections.abc import Callable, Sequence
from operator import attrgetter, itemgetter

import attrs

__all__ = ["SpikeConfig", "SpikeDetector", "SpikeEvent"]

logger = logging.getLogger("quotaguard.metrics")

_RATIO = itemgetter(2)
_LONG = attrgetter("long")
_AT = attrgetter("at")
_HYSTERESIS = 0.8
# When the table is full, a newcomer must bring twice the lightest tracked customer's
# (decayed) long-window rate: customers of equal weight do not churn each other out.
_ADMISSION = 2.0


class _Entry:
    """One tracked customer: rates in units per second, times in seconds."""

    __slots__ = ("at", "first", "long", "plan", "short", "spiking")

    def __init__(self, short: float, long: float, now: float, plan: str) -> None:
        self.short = short
        self.long = long
        self.at = now
        self.first = now
        self.plan = plan
        self.spiking = False


def _positive(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{attribute.name} must be a positive number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{attribute.name} must be finite, got {value!r}")


def _non_negative(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        raise ValueError(f"{attribute.name} must be a finite number >= 0, got {value!r}")


@attrs.frozen
class SpikeConfig:
    """How spikes are measured and when the spike hook fires. Times are in seconds."""

    short_window: float = attrs.field(default=300.0, validator=_positive)
    """Time constant of the short moving average (the "now" rate)."""
    long_window: float = attrs.field(default=86_400.0, validator=_positive)
    """Time constant of the long moving average (the customer's baseline)."""
    ratio: float = attrs.field(default=10.0, validator=_positive)
    """The hook fires when a customer's short/baseline ratio rises to this value; it
    fires again only after the ratio has fallen below 80 % of it."""
    min_history: float = attrs.field(default=3600.0, validator=_non_negative)
    """No ratio is reported for a customer tracked for less than this."""
    min_volume: float = attrs.field(default=20.0, validator=_non_negative)
    """No ratio is reported while the short window holds fewer units than this."""
    capacity: int = attrs.field(default=1024)
    """The most customers tracked at once."""
    fold_interval: float = attrs.field(default=10.0, validator=_positive)
    """Pending units are folded into the averages at least this often (when traffic or a
    scrape comes)."""
    enabled: bool = True
    """False turns spike tracking (and its gauge) off."""

    @capacity.validator
    def _check_capacity(self, _: attrs.Attribute[int], value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"capacity must be a positive integer, got {value!r}")

    def __attrs_post_init__(self) -> None:
        if self.long_window <= self.short_window:
            raise ValueError(
                f"long_window ({self.long_window}) must be longer than short_window "
                f"({self.short_window})"
            )


@attrs.frozen
class SpikeEvent:
    """A customer whose short-window rate rose to ``ratio`` times their baseline."""

    customer: str
    """The customer."""
    plan: str
    """The plan of the customer's latest decision."""
    ratio: float
    """Short-window rate over the baseline."""
    rate: float
    """Short-window rate, in units per second."""
    baseline: float
    """Long-window (baseline) rate, in units per second."""
    at: float
    """When it was detected, in seconds since the epoch (the exporter's clock)."""


SpikeHook = Callable[[SpikeEvent], object]
"""A callable that receives each `SpikeEvent`."""


class SpikeDetector:
    """Tracks per-customer short and long rates in bounded memory; see the module doc.

    Not thread-safe by itself: the exporter calls it under its lock.
    """

    def __init__(self, config: SpikeConfig | None = None) -> None:
        self.config = config or SpikeConfig()
        """The configuration."""
        self._entries: dict[str, _Entry] = {}
        # Pending units per plan (one counter per plan: no per-customer plan bookkeeping).
        self._pending: dict[str, Counter[str]] = {}
        self._max_pending = 4 * self.config.capacity
        self._next_fold: float | None = None

    def __len__(self) -> int:
        """How many customers are tracked (not counting pending ones)."""
        return len(self._entries)

    @property
    def pending(self) -> int:
        """How many distinct customers wait for the next fold (per plan)."""
        return sum(map(len, self._pending.values()))

    def fold_due(self, now: float) -> bool:
        """Whether ``fold_interval`` has passed since the last fold."""
        return self._next_fold is None or now >= self._next_fold

    def plan_of(self, customer: str) -> str | None:
        """The plan of the customer's latest decision, if the customer is tracked or pending."""
        for plan, counter in self._pending.items():
            if customer in counter:
                return plan
        entry = self._entries.get(customer)
        return None if entry is None else entry.plan

    def record(
        self, customers: Sequence[str], costs: Sequence[float], plan: str, now: float
    ) -> list[SpikeEvent]:
        """Add the requested ``costs`` of ``customers`` (parallel lists) on ``plan``.

        Returns the spikes detected if this call folded the pending units.
        """
        pending = self._pending.get(plan)
        if pending is None:
            pending = self._pending[plan] = Counter()
        if costs and costs.count(1) == len(costs):
            pending.update(customers)  # counts in C
        else:
            get = pending.get
            for customer, cost in zip(customers, costs, strict=True):
                pending[customer] = get(customer, 0) + cost  # type: ignore[assignment]
        if self._next_fold is None:
            self._next_fold = now + self.config.fold_interval
        if (
            len(pending) >= self._max_pending
            or now >= self._next_fold
            or (len(self._pending) > 1 and self.pending >= self._max_pending)
        ):
            return self.fold(now)
        return []

    def fold(self, now: float) -> list[SpikeEvent]:
        """Fold the pending units into the averages at ``now``; return new spikes."""
        by_plan, self._pending = self._pending, {}
        self._next_fold = now + self.config.fold_interval
        if not by_plan:
            return []
        plans: dict[str, str] = {}
        if len(by_plan) == 1:
            ((only_plan, pending),) = by_plan.items()
        else:
            only_plan = None
            pending = Counter()
            for plan, counter in by_plan.items():
                pending.update(counter)
                plans.update(dict.fromkeys(counter, plan))
        if not pending:
            return []
        config = self.config
        short_tau, long_tau = config.short_window, config.long_window
        entries = self._entries
        exp = math.exp
        events: list[SpikeEvent] = []
        known = pending.keys() & entries.keys()  # in C
        floor = -1.0
        if len(entries) >= config.capacity and len(pending) > len(known):
            # A lower bound of the floor first, in C: when no newcomer beats it (the
            # common case), the exact floor (a Python pass over every entry) is not needed.
            values = entries.values()
            floor = min(map(_LONG, values)) * exp(-(now - min(map(_AT, values))) / long_tau)
            if max(pending.values()) > floor * _ADMISSION * long_tau:
                floor = self._long_floor(now)
        for customer in known:
            units = pending[customer]
            entry = entries[customer]
            elapsed = max(0.0, now - entry.at)
            entry.short = entry.short * exp(-elapsed / short_tau) + units / short_tau
            entry.long = entry.long * exp(-elapsed / long_tau) + units / long_tau
            entry.at = now
            entry.plan = only_plan or plans.get(customer, entry.plan)
            if now - entry.first < config.min_history:
                continue
            ratio = self._ratio(entry, now)
            if ratio is None:
                continue
            if ratio >= config.ratio:
                if not entry.spiking:
                    entry.spiking = True
                    events.append(
                        SpikeEvent(
                            customer, entry.plan, ratio, entry.short, entry.short / ratio, now
                        )
                    )
            elif ratio < config.ratio * _HYSTERESIS:
                entry.spiking = False
        if len(pending) > len(known):
            # Newcomers: when the table is full, only those bringing enough units enter;
            # the common case (none does) is decided in C by max().
            least = floor * _ADMISSION * long_tau
            if max(pending.values()) > least:
                for customer, units in pending.items():
                    if units > least and customer not in entries:
                        entries[customer] = _Entry(
                            units / short_tau,
                            units / long_tau,
                            now,
                            only_plan or plans.get(customer, ""),
                        )
        if len(entries) > config.capacity:
            self._trim(now)
        return events

    def ratio(self, customer: str, now: float) -> float | None:
        """The customer's spike ratio at ``now`` (pending units not yet folded).

        None when the customer is untracked or lacks history or volume.
        """
        entry = self._entries.get(customer)
        return None if entry is None else self._ratio(entry, now)

    def top(self, k: int, now: float) -> list[tuple[str, str, float]]:
        """The ``k`` customers with the highest spike ratio: ``(customer, plan, ratio)``."""
        rows = []
        for customer, entry in self._entries.items():
            ratio = self._ratio(entry, now)
            if ratio is not None:
                rows.append((customer, entry.plan, ratio))
        return heapq.nlargest(k, rows, key=_RATIO)

    def _ratio(self, entry: _Entry, now: float) -> float | None:
        config = self.config
        age = now - entry.first
        if age < config.min_history or age <= 0:
            return None
        elapsed = max(0.0, now - entry.at)
        short = entry.short * math.exp(-elapsed / config.short_window)
        if short * config.short_window < config.min_volume or short <= 0:
            return None
        long = entry.long * math.exp(-elapsed / config.long_window)
        baseline = long / -math.expm1(-age / config.long_window)
        if baseline <= 0:
            return None
        return float(short / baseline)

    def _long_floor(self, now: float) -> float:
        tau = self.config.long_window
        exp = math.exp
        return min(e.long * exp(-(now - e.at) / tau) for e in self._entries.values())

    def _trim(self, now: float) -> None:
        tau = self.config.long_window
        exp = math.exp
        scored = [(e.long * exp(-(now - e.at) / tau), c) for c, e in self._entries.items()]
        keep = {c for _, c in heapq.nlargest(self.config.capacity, scored)}
        self._entries = {c: e for c, e in self._entries.items() if c in keep}
