"""What the aggregator keeps per plan, and how it reads a decision's limits.

A decision's limits are read only through their public accessors: ``decision.limits``,
and on a `LimitStatuses` its ``specs`` and ``used`` (utilisation = used / quota), which
never build the per-limit statuses; only refused decisions, whose refusing limit is
needed, build them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import attrgetter

from quotaguard.core.decision import Decision, LimitStatus, LimitStatuses
from quotaguard.core.policy import Limit
from quotaguard.metrics.buckets import Buckets
from quotaguard.metrics.topk import UtilizationTable

__all__ = [
    "PlanInfo",
    "at_least_full_where_refused",
    "binding_limit",
    "read_limits",
    "specs_of",
]

_LIMIT = attrgetter("limit")
_USED = attrgetter("used")
_LAZY: dict[type, bool] = {}


class PlanInfo:
    """One plan's shape, utilisation buckets, top-K tables and pending readings.

    Nothing here keeps a `Decision` alive.
    """

    __slots__ = (
        "exact",
        "hists",
        "limits",
        "names",
        "quotas",
        "sampled",
        "spike_limit",
        "tables",
        "unit_keys",
        "unit_limits",
        "width",
    )

    def __init__(
        self,
        plan: str,
        specs: Sequence[Limit],
        buckets: Callable[[str, str], Buckets],
        table: Callable[[str, str], UtilizationTable],
    ) -> None:
        self.limits: tuple[Limit, ...] = tuple(specs)
        """The plan's limits, in order."""
        self.names = tuple(limit.name for limit in self.limits)
        """Their names."""
        self.width = len(self.limits)
        """How many limits."""
        self.unit_limits = [limit for limit in self.limits if limit.kind != "concurrency"]
        """The limits that consume units (not concurrency)."""
        self.unit_keys = [(plan, limit.name) for limit in self.unit_limits]
        """Their ``(plan, limit)`` label values."""
        self.spike_limit = self.unit_limits[-1] if self.unit_limits else None
        """Spikes are measured in the unit of the plan's last non-concurrency limit
        (typically the weekly cap); None: in requests."""
        self.hists = [buckets(plan, name) for name in self.names]
        """The utilisation buckets of each limit."""
        self.tables = [table(plan, name) for name in self.names]
        """The top-K table of each limit."""
        self.quotas = tuple(limit.quota for limit in self.limits)
        """Each limit's quota."""
        self.exact: list[float] = []
        """Pending utilisation readings counted once: ``width`` ratios per reading, flat."""
        self.sampled: list[float] = []
        """Pending readings that each stand for ``sample_every`` allowed decisions."""

    def matches(self, specs: Sequence[Limit]) -> bool:
        """Whether ``specs`` have this plan's shape (limit names, in order)."""
        if specs == self.limits:
            return True
        return len(specs) == self.width and all(
            limit.name == name for limit, name in zip(specs, self.names, strict=True)
        )

    def offer(self, offers: list[list[tuple[str, float]]], now: float) -> None:
        """Offer each limit's ``(customer, utilisation)`` readings to its top-K table."""
        for table, updates in zip(self.tables, offers, strict=True):
            if updates:
                table.offer(updates, now)

    def settle(self, weight: int) -> None:
        """Add the pending readings to the buckets (sampled ones ``weight`` times)."""
        width = self.width
        for flat, times in ((self.exact, 1), (self.sampled, weight)):
            if flat:
                for i, hist in enumerate(self.hists):
                    hist.add(flat[i::width], times)
                flat.clear()


def _lazy(limits: Sequence[LimitStatus]) -> bool:
    """Whether ``limits`` is a `LimitStatuses` (cheap ``specs`` and ``used``)."""
    cls = limits.__class__
    lazy = _LAZY.get(cls)
    if lazy is None:  # an ABC isinstance check costs more than a dict lookup
        lazy = _LAZY[cls] = issubclass(cls, LimitStatuses)
    return lazy


def read_limits(limits: Sequence[LimitStatus]) -> tuple[Sequence[Limit], Sequence[float]]:
    """A decision's limits and each one's ``used``, without building lazy statuses."""
    if _lazy(limits):
        lazy: LimitStatuses = limits  # type: ignore[assignment]
        return lazy.specs, lazy.used
    return tuple(map(_LIMIT, limits)), tuple(map(_USED, limits))


def specs_of(limits: Sequence[LimitStatus]) -> Sequence[Limit]:
    """A decision's limits, without building lazy statuses."""
    if _lazy(limits):
        lazy: LimitStatuses = limits  # type: ignore[assignment]
        return lazy.specs
    return tuple(map(_LIMIT, limits))


def binding_limit(decision: Decision) -> str:
    """The refusing limit with the longest wait (first in plan order on a tie)."""
    best: LimitStatus | None = None
    for status in decision.limits:
        if not status.allowed and (best is None or status.retry_after > best.retry_after):
            best = status
    return "" if best is None else best.limit.name


def at_least_full_where_refused(
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
