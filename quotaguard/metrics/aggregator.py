"""The pure aggregator: decisions in, totals, histogram buckets and top-K views out.

No prometheus_client, no threads, no clock: every call takes ``now`` (seconds), so it
runs the same on a `quotaguard.testing.FakeClock` as in production. The exporter
(`quotaguard.metrics.exporter`) buffers decisions, hands them here in batches under its
lock and publishes the totals.

A batch costs a few C-level passes (``map``, ``list.count``, ``math.fsum``, ``Counter``)
and one dictionary update per label set. Under load (``sample``) one allowed decision in
``sample_every`` has its utilisation read, each reading counted ``sample_every`` times;
refused decisions and the latest decision of each customer a top-K table tracks are
always read.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from operator import attrgetter, ge, truediv

from quotaguard.core.decision import Decision, Outcome, Settlement
from quotaguard.core.errors import BackendUnavailable
from quotaguard.core.policy import Limit, charge
from quotaguard.metrics.buckets import Buckets
from quotaguard.metrics.config import ExporterConfig
from quotaguard.metrics.plans import (
    PlanInfo,
    at_least_full_where_refused,
    binding_limit,
    read_limits,
    specs_of,
)
from quotaguard.metrics.reasons import error_reason
from quotaguard.metrics.spikes import SpikeDetector, SpikeEvent
from quotaguard.metrics.topk import UtilizationTable

__all__ = ["Aggregator"]

_OUTCOME = attrgetter("outcome")
_PLAN = attrgetter("plan")
_CUSTOMER = attrgetter("customer")
_COST = attrgetter("cost")
_ALLOWED = Outcome.ALLOWED
_NUMBERS: frozenset[type] = frozenset((int, float))
# Pending readings (per plan) or latencies (per backend) before they are added to the
# buckets early: few enough that they stay in the CPU's caches.
_MAX_PENDING = 1024


class Aggregator:
    """Running totals of every metric and the top-K and spike views; see the module doc.

    Not thread-safe: the exporter calls it under its lock.
    """

    def __init__(self, config: ExporterConfig) -> None:
        self.config = config
        """The configuration."""
        self.decisions: dict[tuple[str, str, str], int] = {}
        """Decisions per ``(plan, refusing limit or "", outcome)``."""
        self.units: dict[tuple[str, str], float] = {}
        """Units consumed per ``(plan, limit)``."""
        self.refunds: dict[tuple[str, str], float] = {}
        """Units refunded by settlements per ``(plan, limit)``."""
        self.unattributed = 0
        """Settlements whose plan could not be told."""
        self.errors: dict[tuple[str, str], int] = {}
        """Backend failures per ``(backend, reason)``."""
        self.utilization: dict[tuple[str, str], Buckets] = {}
        """Utilisation buckets per ``(plan, limit)`` (call `settle` before reading)."""
        self.latency: dict[str, Buckets] = {}
        """Backend latency buckets per backend."""
        self.tables: dict[tuple[str, str], UtilizationTable] = {}
        """The top-K table of each ``(plan, limit)``."""
        self.spikes: SpikeDetector | None = (
            SpikeDetector(config.spikes) if config.spikes.enabled else None
        )
        """The spike detector (None when disabled)."""
        self._plans: dict[str, PlanInfo] = {}
        self._reasons: set[str] = set()
        # Per backend: latencies counted once, and sampled ones, not yet in the buckets.
        self._latencies: dict[str, tuple[list[float], list[float]]] = {}
        self._every = config.sample_every
        self._phase = 0
        self._latency_phase = 0

    # -- decisions ----------------------------------------------------------------------

    def add(self, decisions: list[Decision], now: float, sample: bool) -> list[SpikeEvent]:
        """Count a batch of decisions; ``sample``: read utilisations one in ``sample_every``.

        Returns the spikes found if the spike detector folded.
        """
        count = len(decisions)
        if not count:
            return []
        plans = list(map(_PLAN, decisions))
        plan = plans[0]
        if plan is not None and plans.count(plan) == count:
            return self._add_plan(plan, decisions, now, sample)  # one plan (counted in C)
        groups: dict[str | None, list[Decision]] = {}
        for decision, plan in zip(decisions, plans, strict=True):
            group = groups.get(plan)
            if group is None:
                groups[plan] = [decision]
            else:
                group.append(decision)
        events: list[SpikeEvent] = []
        for plan, group in groups.items():
            if plan is None:
                for outcome, n in Counter(map(_OUTCOME, group)).items():
                    self._count(("", "", outcome.value), n)
                continue
            events.extend(self._add_plan(plan, group, now, sample))
        return events

    def _count(self, key: tuple[str, str, str], n: int) -> None:
        self.decisions[key] = self.decisions.get(key, 0) + n

    def plan_info(self, plan: str, specs: Sequence[Limit]) -> PlanInfo:
        """The plan's `PlanInfo`, made anew when the plan changed shape."""
        info = self._plans.get(plan)
        if info is None or not info.matches(specs):
            if info is not None:  # the plan changed shape: keep what the old one read
                info.settle(self._every)
            info = self._plans[plan] = PlanInfo(plan, specs, self._buckets, self._table)
            for key in info.unit_keys:  # every series of the plan shows, at 0 until used
                self.units.setdefault(key, 0.0)
                self.refunds.setdefault(key, 0.0)
        return info

    def _buckets(self, plan: str, limit: str) -> Buckets:
        key = (plan, limit)
        hist = self.utilization.get(key)
        if hist is None:
            hist = self.utilization[key] = Buckets(self.config.utilization_buckets)
        return hist

    def _table(self, plan: str, limit: str) -> UtilizationTable:
        key = (plan, limit)
        table = self.tables.get(key)
        if table is None:
            config = self.config
            table = self.tables[key] = UtilizationTable(
                config.max_tracked, config.min_utilization, config.stale_after
            )
        return table

    def _add_plan(
        self, plan: str, group: list[Decision], now: float, sample: bool
    ) -> list[SpikeEvent]:
        count = len(group)
        info = self.plan_info(plan, specs_of(group[0].limits))
        outcomes = list(map(_OUTCOME, group))
        allowed = outcomes.count(_ALLOWED)  # identity compare in C (Enum hashing is not)
        costs = list(map(_COST, group))
        ones = costs.count(1) == count
        numeric = ones or set(map(type, costs)) <= _NUMBERS
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
            self._count((plan, "", _ALLOWED.value), allowed)
            admitted = (
                costs
                if allowed == count
                else [c for c, o in zip(costs, outcomes, strict=True) if o is _ALLOWED]
            )
            self._add_units(info, admitted, numeric, ones)
        if allowed != count:
            refused = Counter(
                (binding_limit(d), d.outcome.value) for d in group if d.outcome is not _ALLOWED
            )
            for (limit, outcome), n in refused.items():
                self._count((plan, limit, outcome), n)
        customers = list(map(_CUSTOMER, group))
        hits: set[str] = set()
        if any(map(len, info.tables)):  # no set is built while no table tracks anyone
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
            self._read(plan, info, group, customers, order, weights, every, hits, now)
        if self.spikes is None:
            return []
        spike_limit = info.spike_limit
        if spike_limit is None:
            spike_units: Sequence[float] = [1] * count
        elif numeric:
            spike_units = costs
        else:
            spike_units = [charge(spike_limit, c) for c in costs]
        return self.spikes.record(customers, spike_units, plan, now)

    def _add_units(self, info: PlanInfo, admitted: list[object], numeric: bool, ones: bool) -> None:
        units = self.units
        if numeric:
            total = len(admitted) if ones else math.fsum(admitted)  # type: ignore[arg-type]
            for key in info.unit_keys:
                units[key] = units.get(key, 0.0) + total
        else:  # per-unit costs: each limit is charged its own unit
            for key, limit in zip(info.unit_keys, info.unit_limits, strict=True):
                amount = math.fsum([charge(limit, c) for c in admitted])  # type: ignore[arg-type]
                units[key] = units.get(key, 0.0) + amount

    def _read(
        self,
        plan: str,
        info: PlanInfo,
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
            decision = group[index]
            specs, used = read_limits(decision.limits)
            if specs is info.limits or specs == info.limits:  # identity first, in C
                ratios = list(map(truediv, used, info.quotas))
            elif info.matches(specs):  # per-customer quotas
                ratios = [u / limit.quota for u, limit in zip(used, specs, strict=True)]
            else:  # the plan changed shape (a catalogue change)
                if offers is not None:
                    info.offer(offers, now)
                    offers = None
                info = self.plan_info(plan, specs)
                floors = [table.floor for table in info.tables]
                ratios = [u / limit.quota for u, limit in zip(used, specs, strict=True)]
            weight = every if weights is None else weights[index]
            if weight == 1:
                info.exact.extend(ratios)
            elif weight:
                info.sampled.extend(ratios)
            if decision.outcome is not _ALLOWED:
                ratios = at_least_full_where_refused(ratios, decision.limits)
            customer = customers[index]
            if customer in hits or any(map(ge, ratios, floors)):
                if offers is None:
                    offers = [[] for _ in floors]
                for i, ratio in enumerate(ratios):
                    if ratio >= floors[i] or customer in hits:
                        offers[i].append((customer, ratio))
        if len(info.exact) + len(info.sampled) >= _MAX_PENDING:
            info.settle(self._every)
        if offers is not None:
            info.offer(offers, now)

    def add_latencies(self, backend: str, elapsed: list[float], sample: bool) -> None:
        """Observe backend latencies; ``sample``: one in ``sample_every``, weighted."""
        if not elapsed:
            return
        pending = self._latencies.get(backend)
        if pending is None:
            pending = self._latencies[backend] = ([], [])
            self.latency[backend] = Buckets(self.config.latency_buckets)
        exact, sampled = pending
        every = self._every
        if sample and every > 1:
            phase = self._latency_phase
            self._latency_phase = (phase - len(elapsed)) % every
            sampled.extend(elapsed[phase::every])
        else:
            exact.extend(elapsed)
        if len(exact) + len(sampled) >= _MAX_PENDING:
            self._settle_latencies()

    def _settle_latencies(self) -> None:
        for backend, (exact, sampled) in self._latencies.items():
            hist = self.latency[backend]
            hist.add(exact)
            hist.add(sampled, self._every)
            exact.clear()
            sampled.clear()

    def settle(self) -> None:
        """Add every pending utilisation reading and latency to the buckets."""
        for info in self._plans.values():
            info.settle(self._every)
        self._settle_latencies()

    def forget_plans(self) -> None:
        """Drop the pending readings (a forked child: its parent publishes them)."""
        self._plans = {}
        for exact, sampled in self._latencies.values():
            exact.clear()
            sampled.clear()

    # -- settlements and errors -----------------------------------------------------------

    def add_settlement(
        self,
        settlement: Settlement,
        customer: str,
        plan: str | None,
        buffered: Sequence[Decision] = (),
    ) -> None:
        """Add a settled lease's difference from its estimate to the units and refunds.

        Each limit of the plan gets ``charge(limit, actual) - charge(limit, estimate)``:
        a positive difference to ``units``, a refund to ``refunds``. The plan is ``plan``
        when known, else that of the customer's latest decision (in ``buffered``, not yet
        aggregated, or as the spike detector knows it), else the only plan seen; otherwise
        the settlement is counted in ``unattributed``.
        """
        if settlement.already_settled:
            return
        info = self._settlement_plan(customer, plan, buffered)
        if info is None:
            self.unattributed += 1
            return
        estimate, actual = settlement.estimate, settlement.actual
        for key, limit in zip(info.unit_keys, info.unit_limits, strict=True):
            amount = charge(limit, actual) - charge(limit, estimate)
            if amount > 0:
                self.units[key] = self.units.get(key, 0.0) + amount
            elif amount < 0:
                self.refunds[key] = self.refunds.get(key, 0.0) - amount

    def _settlement_plan(
        self, customer: str, plan: str | None, buffered: Sequence[Decision]
    ) -> PlanInfo | None:
        if plan is not None and plan in self._plans:
            return self._plans[plan]
        for decision in reversed(buffered):
            found = decision.plan
            if found is not None and (
                found == plan or (plan is None and decision.customer == customer)
            ):
                return self.plan_info(found, specs_of(decision.limits))
        if plan is None and customer and self.spikes is not None:
            plan = self.spikes.plan_of(customer)
        if plan is None and len(self._plans) == 1:
            plan = next(iter(self._plans))
        return None if plan is None else self._plans.get(plan)

    def add_error(self, backend: str, error: BackendUnavailable) -> None:
        """Count a backend failure by reason; past ``max_reasons`` reasons, as ``other``."""
        reason = error_reason(error)
        if reason not in self._reasons:
            if len(self._reasons) >= self.config.max_reasons:
                reason = "other"
            self._reasons.add(reason)
        key = (backend, reason)
        self.errors[key] = self.errors.get(key, 0) + 1

    # -- views ----------------------------------------------------------------------------

    def top_utilization(self, now: float) -> list[tuple[str, str, str, float]]:
        """The top-K utilisation view: ``(customer, plan, limit, ratio)`` rows."""
        k = self.config.top_k
        return [
            (customer, plan, limit, value)
            for (plan, limit), table in list(self.tables.items())
            for customer, value in table.top(k, now)
        ]

    def top_spikes(self, now: float) -> list[tuple[str, str, float]]:
        """The top-K spike view per plan: ``(customer, plan, ratio)`` rows, highest first."""
        if self.spikes is None:
            return []
        k = self.config.top_k
        per_plan: dict[str, int] = {}
        kept = []
        for customer, plan, ratio in self.spikes.top(len(self.spikes), now):
            if per_plan.get(plan, 0) < k:
                per_plan[plan] = per_plan.get(plan, 0) + 1
                kept.append((customer, plan, ratio))
        return kept

    def near_limit(self, now: float) -> list[tuple[str, str, str, int]]:
        """Tracked customers at or above each threshold: ``(plan, limit, threshold, n)``."""
        thresholds = self.config.near_limit
        labels = [f"{t:g}" for t in thresholds]
        rows: list[tuple[str, str, str, int]] = []
        for (plan, limit), table in list(self.tables.items()):
            counts = table.count_at_least(thresholds, now)
            rows.extend((plan, limit, label, n) for label, n in zip(labels, counts, strict=True))
        return rows
