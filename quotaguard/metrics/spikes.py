"""Spike detection: each customer's recent rate against their own robust baseline.

Every decision adds its units (in the plan's spike unit) and one event to its customer.
Each tracked customer keeps:

- a baseline: exponentially weighted moving averages of their unit rate and event rate
  with time constant ``long_window`` (default 7 days), corrected for the time the
  customer has been tracked (so it is their plain average rate while young);
- recent rates on a ladder of time scales: ``short_window`` (5 minutes), doubled while
  at most ``long_window / 8`` (5 min, 10 min, ... up to 10.7 hours by default).

The spike ratio at a scale ``T`` compares the units seen in that window with what the
baseline expects there, with ``prior_events`` events at the baseline's mean size added to
both sides (shrinkage toward 1, so a few events cannot make a large ratio)::

    expected = baseline_rate * T_effective
    ratio(T) = (seen + prior_events * mean_size) / (expected + prior_events * mean_size)

A scale counts only when the baseline expects at least ``min_events`` events in it
(minimum evidence); the reported ratio is the largest over the scales that count (the
longest scale when none does). So a busy customer is judged over minutes and a customer
with one request an hour over hours.

No ratio is reported before warm-up: ``min_history`` of tracking and at least
``4 * min_events`` events in the baseline.

The baseline is robust: while the customer reads above 2, their units feed it scaled by
``2 / ratio`` (as if they ran at twice their baseline), so a spike does not become its
own baseline at once: a 20x jump keeps reading at least 10 for about ``0.69 *
long_window`` and becomes the new normal after about ``3 * long_window``.

Memory is bounded: at most ``capacity`` customers are tracked, in the manner of the
space-saving heavy-hitters algorithm. When the table is full, a customer not yet tracked
enters only if its contribution is at least twice the smallest (decayed) long-window rate
tracked (so equals do not churn each other out); overflow is trimmed back to
``capacity`` keeping the heaviest long-window rates. So a flood of junk ids, each sending
a little, cannot displace steady customers, and the structure never grows past
``capacity`` entries plus one fold's worth of pending ids (itself capped at
``4 * capacity``).

Updates are batched: units accumulate in a pending counter and are folded into the
averages every ``fold_interval`` seconds (or when the counter is full).
"""

from __future__ import annotations

import heapq
import logging
import math
from collections import Counter
from collections.abc import Sequence
from operator import attrgetter, itemgetter

import attrs

from quotaguard.metrics.spike_types import SpikeConfig, SpikeEvent, SpikeHook

__all__ = ["SpikeConfig", "SpikeDetector", "SpikeEvent", "SpikeHook"]

logger = logging.getLogger("quotaguard.metrics")

_RATIO = itemgetter(2)
_WEIGHT = attrgetter("weight")
_AT = attrgetter("at")
_HYSTERESIS = 0.8
# When the table is full, a newcomer must bring twice the lightest tracked customer's
# (decayed) long-window rate: customers of equal weight do not churn each other out.
_ADMISSION = 2.0
# The top of the steady band: above it, the baseline learns as if the customer ran at it.
_ROBUST = 2.0
# Warm-up: the baseline needs this many times ``min_events`` events.
_WARM_UP_EVENTS = 4


class _Entry:
    """One tracked customer: rates in units (or events) per second, times in seconds."""

    __slots__ = (
        "at",
        "events",
        "first",
        "long",
        "plan",
        "short",
        "spiking",
        "staged",
        "staged_events",
        "weight",
    )

    def __init__(
        self, short: list[float], long: float, events: float, at: float, first: float, plan: str
    ) -> None:
        self.short = short
        self.long = long
        self.events = events
        # Units and events on their way to the baseline (see `SpikeDetector._add`).
        self.staged = 0.0
        self.staged_events = 0.0
        # The space-saving weight: baseline and staged units, per second of long_window.
        self.weight = long
        self.at = at
        self.first = first
        self.plan = plan
        self.spiking = False


@attrs.frozen
class _Reading:
    ratio: float
    rate: float
    baseline: float
    window: float
    raw: float  # the largest unshrunk ratio over the scales that count


class SpikeDetector:
    """Tracks per-customer recent and baseline rates in bounded memory; see the module doc.

    Not thread-safe by itself: the exporter calls it under its lock.
    """

    def __init__(self, config: SpikeConfig | None = None) -> None:
        self.config = config or SpikeConfig()
        """The configuration."""
        self._scales = self.config.scales
        self._descending = range(len(self._scales) - 1, -1, -1)
        self._entries: dict[str, _Entry] = {}
        # Pending units and events per plan (one counter per plan: no per-customer plan
        # bookkeeping).
        self._pending: dict[str, Counter[str]] = {}
        # Per plan: pending events minus pending units, for the customers whose costs were
        # not all 1 (when they are, units and events are the same count).
        self._extra: dict[str, Counter[str]] = {}
        self._max_pending = 4 * self.config.capacity
        self._next_fold: float | None = None
        self._last_fold: float | None = None

    def __len__(self) -> int:
        """How many customers are tracked (not counting pending ones)."""
        return len(self._entries)

    @property
    def pending(self) -> int:
        """How many distinct customers wait for the next fold (per plan)."""
        return sum(map(len, self._pending.values()))

    @property
    def has_pending(self) -> bool:
        """Whether any units wait for the next fold (safe to read from another thread)."""
        return bool(self._pending)

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
        self,
        customers: Sequence[str],
        costs: Sequence[float],
        plan: str,
        now: float,
        events: Sequence[int] | None = None,
    ) -> list[SpikeEvent]:
        """Add the requested ``costs`` of ``customers`` (parallel lists) on ``plan``.

        Each element is one event (decision), or ``events[i]`` events when given (a
        simulation's bulk input). Returns the spikes detected if this call folded the
        pending units.
        """
        pending = self._pending.get(plan)
        if pending is None:
            pending = self._pending[plan] = Counter()
            self._extra[plan] = Counter()
        if events is None and costs and costs.count(1) == len(costs):
            pending.update(customers)  # counts in C; one event per unit
        else:
            extra = self._extra[plan]
            get = pending.get
            counts = [1] * len(costs) if events is None else events
            for customer, cost, n in zip(customers, costs, counts, strict=True):
                pending[customer] = get(customer, 0) + cost  # type: ignore[assignment]
                extra[customer] += n - cost  # type: ignore[assignment]
        if self._next_fold is None:
            self._next_fold = now + self.config.fold_interval
            self._last_fold = now
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
        extra_by_plan, self._extra = self._extra, {}
        since = self._last_fold if self._last_fold is not None else now
        self._last_fold = now
        self._next_fold = now + self.config.fold_interval
        if not by_plan:
            return []
        plans: dict[str, str] = {}
        if len(by_plan) == 1:
            ((only_plan, pending),) = by_plan.items()
            extra = extra_by_plan[only_plan]
        else:
            only_plan = None
            pending = Counter()
            extra = Counter()
            for plan, counter in by_plan.items():
                pending.update(counter)
                extra.update(extra_by_plan[plan])
                plans.update(dict.fromkeys(counter, plan))
        if not pending:
            return []
        config = self.config
        long_tau = config.long_window
        entries = self._entries
        exp = math.exp
        found: list[SpikeEvent] = []
        known = pending.keys() & entries.keys()  # in C
        floor = -1.0
        newcomers = len(pending) > len(known)
        # The most units of any pending customer: a bound on what a newcomer brings.
        heaviest = max(pending.values()) if newcomers else 0
        if len(entries) >= config.capacity and newcomers:
            # A lower bound of the floor first, in C: when no newcomer beats it (the
            # common case), the exact floor (a Python pass over every entry) is not needed.
            values = entries.values()
            floor = min(map(_WEIGHT, values)) * exp(-(now - min(map(_AT, values))) / long_tau)
            if heaviest > floor * _ADMISSION * long_tau:
                floor = self._long_floor(now)
        for customer in known:
            entry = entries[customer]
            units = pending[customer]
            reading = self._add(entry, units, units + extra.get(customer, 0), now)
            entry.plan = only_plan or plans.get(customer, entry.plan)
            if reading is None:
                continue
            if reading.ratio >= config.ratio:
                if not entry.spiking:
                    entry.spiking = True
                    found.append(
                        SpikeEvent(
                            customer,
                            entry.plan,
                            reading.ratio,
                            reading.rate,
                            reading.baseline,
                            now,
                            reading.window,
                        )
                    )
            elif reading.ratio < config.ratio * _HYSTERESIS:
                entry.spiking = False
        if newcomers:
            # Newcomers: when the table is full, only those bringing enough units enter;
            # the common case (none does) is decided in C by max().
            least = floor * _ADMISSION * long_tau
            if heaviest > least:
                for customer, units in pending.items():
                    if units > least and customer not in entries:
                        entry = _Entry(
                            [0.0] * len(self._scales),
                            0.0,
                            0.0,
                            now,
                            min(since, now),
                            only_plan or plans.get(customer, ""),
                        )
                        self._add(entry, units, units + extra.get(customer, 0), now, robust=False)
                        entries[customer] = entry
        if len(entries) > config.capacity:
            self._trim(now)
        return found

    def _add(
        self, entry: _Entry, units: float, events: float, now: float, robust: bool = True
    ) -> _Reading | None:
        """Decay ``entry`` to ``now``, add a fold's units and events; return the reading.

        New units reach the baseline with a delay: they are staged, and leave the stage
        at the rate of an exponential with the longest scale's time constant. What leaves
        while the customer reads above 2 is scaled by ``2 / ratio``. The reading returned
        is taken after the recent rates took the new units, before the baseline took what
        left the stage.
        """
        exp = math.exp
        elapsed = max(0.0, now - entry.at)
        short = entry.short
        # Each scale is twice the one before, so its decay is the square root of the next
        # one's: one exp for the whole ladder, from the longest scale down.
        decay = exp(-elapsed / self._scales[-1])
        leaving = 1.0 - decay
        for index in self._descending:
            short[index] = short[index] * decay + units
            decay *= decay
        out_units = entry.staged * leaving
        out_events = entry.staged_events * leaving
        entry.staged += units - out_units
        entry.staged_events += events - out_events
        long_tau = self.config.long_window
        long_decay = exp(-elapsed / long_tau)
        entry.long *= long_decay
        entry.events *= long_decay
        entry.at = now
        weight = 1.0
        reading = self._reading(entry, now) if robust else None
        if reading is not None and reading.raw > _ROBUST:
            weight = _ROBUST / reading.raw
        entry.long += weight * out_units / long_tau
        entry.events += weight * out_events / long_tau
        entry.weight = entry.long + entry.staged / long_tau
        return reading

    def ratio(self, customer: str, now: float) -> float | None:
        """The customer's spike ratio at ``now`` (pending units not yet folded).

        None when the customer is untracked or still warming up.
        """
        entry = self._entries.get(customer)
        if entry is None:
            return None
        reading = self._reading(entry, now)
        return None if reading is None else reading.ratio

    def top(self, k: int, now: float) -> list[tuple[str, str, float]]:
        """The ``k`` customers with the highest spike ratio: ``(customer, plan, ratio)``."""
        rows = []
        for customer, entry in self._entries.items():
            reading = self._reading(entry, now)
            if reading is not None:
                rows.append((customer, entry.plan, reading.ratio))
        return heapq.nlargest(k, rows, key=_RATIO)

    def _reading(self, entry: _Entry, now: float) -> _Reading | None:
        config = self.config
        age = now - entry.first
        if age < config.min_history or age <= 0:
            return None
        elapsed = max(0.0, now - entry.at)
        long_tau, lag = config.long_window, self._scales[-1]
        long_decay = math.exp(-elapsed / long_tau)
        leaving = -math.expm1(-elapsed / lag) / long_tau  # staged units due by now
        # The part of a steady rate's units that has reached the baseline at ``age``.
        correction = 1 - (long_tau * math.exp(-age / long_tau) - lag * math.exp(-age / lag)) / (
            long_tau - lag
        )
        long = entry.long * long_decay + entry.staged * leaving
        events = entry.events * long_decay + entry.staged_events * leaving
        if events * long_tau < _WARM_UP_EVENTS * config.min_events or long <= 0:
            return None
        baseline, event_rate = long / correction, events / correction
        prior = config.prior_events * baseline / event_rate  # units
        # From the longest scale down, squaring the decays (see `_add`). Evidence grows
        # with the scale: when the longest scale lacks it, no scale has it, and the
        # longest one is read anyway.
        scales, short, min_events = self._scales, entry.short, config.min_events
        young = math.exp(-age / lag)  # exp(-age / scale): the part of the scale not lived
        fading = math.exp(-elapsed / lag)  # exp(-elapsed / scale): decay since the update
        best: tuple[float, float, float, float] | None = None  # ratio, rate, scale, raw
        raw = 0.0
        for index in self._descending:
            tau = scales[index]
            window = tau * (1.0 - young)  # the scale's effective length so far
            if best is None or event_rate * window >= min_events:
                seen = short[index] * fading
                expected = baseline * window
                ratio = (seen + prior) / (expected + prior)
                if event_rate * window >= min_events:
                    raw = max(raw, seen / expected)
                if best is None or ratio > best[0]:
                    best = (ratio, seen / window, tau, seen / expected)
            young *= young
            fading *= fading
        assert best is not None  # the longest scale is always read
        return _Reading(best[0], best[1], baseline, best[2], raw or best[3])

    def _long_floor(self, now: float) -> float:
        tau = self.config.long_window
        exp = math.exp
        return min(e.weight * exp(-(now - e.at) / tau) for e in self._entries.values())

    def _trim(self, now: float) -> None:
        tau = self.config.long_window
        exp = math.exp
        scored = [(e.weight * exp(-(now - e.at) / tau), c) for c, e in self._entries.items()]
        keep = {c for _, c in heapq.nlargest(self.config.capacity, scored)}
        self._entries = {c: e for c, e in self._entries.items() if c in keep}
