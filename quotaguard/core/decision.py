"""Value objects that describe the result of a decision.

`Decision` and `LimitStatus` are immutable named tuples: they are created on every call,
so they are kept as cheap to build as a tuple.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple, overload

import attrs

from quotaguard.core.policy import Cost, Limit, charge

MOST_SECONDS = 999_999_999_999_999
"""The largest refill-after `LimitStatuses.remaining_and_refill_seconds` reports: the
largest integer a structured header field (RFC 9651) can carry."""


def whole_seconds_up(seconds: float) -> int:
    """``seconds`` rounded up to whole seconds, 0 if not positive, at most `MOST_SECONDS`.

    The rule of every wait and refill the headers show (``inf`` and NaN read as the most).
    """
    return 0 if seconds <= 0 else math.ceil(seconds) if seconds < MOST_SECONDS else MOST_SECONDS


class Outcome(enum.StrEnum):
    """How a decision ended; also the ``decision`` label of the metrics."""

    ALLOWED = "allowed"
    """Every limit admitted the cost; it has been consumed."""
    DENIED = "denied"
    """At least one limit refused; nothing was consumed."""
    REVOKED = "revoked"
    """The customer is revoked for this scope."""
    SHADOW_DENIED = "shadow_denied"
    """A limit refused, but shadow mode let the call through; nothing was consumed."""
    FAIL_OPEN = "fail_open"
    """The backend failed and the failure policy admitted the call."""
    FAIL_CLOSED = "fail_closed"
    """The backend failed and the failure policy refused the call."""


_LIMITED = (Outcome.DENIED, Outcome.SHADOW_DENIED)


class LimitStatus(NamedTuple):
    """The state of one limit as a decision saw it. Times are in seconds."""

    limit: Limit
    """The limit (its name, kind, quota and unit)."""
    allowed: bool
    """Whether this limit admitted the cost."""
    remaining: int
    """Units that could still be consumed now (rounded down, never negative)."""
    used: float
    """Units counted against the limit now (may exceed the quota after over-use)."""
    retry_after: float
    """0 when admitted; else seconds until this limit would admit the cost, or
    ``math.inf`` when the cost can never fit."""
    refill_after: float
    """Seconds until more quota becomes available (0 when already full)."""
    reset_after: float
    """Seconds until the limit is back to its full quota."""

    @property
    def name(self) -> str:
        """The limit's name."""
        return self.limit.name

    @property
    def quota(self) -> int:
        """The limit's quota (capacity, window quota or maximum in flight)."""
        return self.limit.quota

    @property
    def utilization(self) -> float:
        """``used / quota``, from 0 upwards (above 1 while in debt)."""
        return self.used / self.limit.quota


class LimitStatuses(Sequence[LimitStatus]):
    """The statuses of a decision's limits, computed when first read.

    Building a status costs more than deciding, and many callers only look at
    ``allowed``; so a decision keeps what it needs to build them (``payload``) and a
    subclass's ``build`` makes them once, on first access. Compares equal to a tuple of
    the same statuses.
    """

    __slots__ = ("_payload", "_statuses")
    build: Callable[[Any], tuple[LimitStatus, ...]] = staticmethod(lambda payload: payload)

    def __init__(self, payload: Any) -> None:
        self._payload = payload
        self._statuses: tuple[LimitStatus, ...] | None = None

    @property
    def statuses(self) -> tuple[LimitStatus, ...]:
        """The statuses as a tuple."""
        statuses = self._statuses
        if statuses is None:
            statuses = self._statuses = self.build(self._payload)
            self._payload = None
        return statuses

    @property
    def specs(self) -> tuple[Limit, ...]:
        """The limits, without building their statuses."""
        return tuple(status.limit for status in self.statuses)

    @property
    def used(self) -> tuple[float, ...]:
        """Each limit's ``used`` value, without building the statuses when avoidable."""
        return tuple(status.used for status in self.statuses)

    @property
    def remaining_and_refill(self) -> tuple[tuple[int, float], ...]:
        """Each limit's ``(remaining, refill_after)``, as its status shows them.

        What the ``RateLimit`` header needs, computed without building the statuses
        when avoidable.
        """
        return tuple((status.remaining, status.refill_after) for status in self.statuses)

    @property
    def remaining_and_refill_seconds(self) -> tuple[int, ...]:
        """Flat ``(remaining_0, refill_0, remaining_1, refill_1, ...)`` in whole numbers.

        Each limit's remaining (at least 0) and its refill-after in whole seconds, rounded
        up and capped at `MOST_SECONDS`: the numbers of the ``RateLimit`` header, computed
        without building the statuses when avoidable.
        """
        values: list[int] = []
        for remaining, refill in self.remaining_and_refill:
            values.append(remaining if remaining > 0 else 0)
            values.append(whole_seconds_up(refill))
        return tuple(values)

    @overload
    def __getitem__(self, index: int) -> LimitStatus: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[LimitStatus, ...]: ...

    def __getitem__(self, index: int | slice) -> LimitStatus | tuple[LimitStatus, ...]:
        return self.statuses[index]

    def __len__(self) -> int:
        return len(self.statuses)

    def __iter__(self) -> Iterator[LimitStatus]:
        return iter(self.statuses)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, LimitStatuses):
            return self.statuses == other.statuses
        if isinstance(other, tuple):
            return self.statuses == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.statuses)

    def __repr__(self) -> str:
        return repr(self.statuses)


_KNOWN: dict[type, bool] = {}


def as_statuses(limits: Sequence[LimitStatus]) -> LimitStatuses:
    """``limits`` (a decision's ``limits``) as `LimitStatuses`, for its cheap accessors.

    The guard's decisions already carry `LimitStatuses`, returned as they are; any other
    sequence of statuses is wrapped.
    """
    cls = limits.__class__
    known = _KNOWN.get(cls)
    if known is None:  # a dict lookup costs less than an ABC isinstance check
        known = _KNOWN[cls] = issubclass(cls, LimitStatuses)
    if known:
        return limits  # type: ignore[return-value]
    return LimitStatuses(tuple(limits))


class Decision(NamedTuple):
    """The answer to one request: allowed or not, why, and the state of every limit."""

    allowed: bool
    """Whether the caller may proceed (true also for shadow-denied and fail-open)."""
    outcome: Outcome
    """How the decision ended."""
    customer: str
    """The customer the decision is for."""
    plan: str | None
    """The plan whose limits were applied (None when revoked or the backend failed)."""
    scope: str | None
    """The scope of the request, if any."""
    cost: Cost
    """The cost asked for (a number, or an amount per unit)."""
    limits: Sequence[LimitStatus]
    """The state of every limit of the plan, in plan order (built on first access)."""
    retry_after: float
    """0 when admitted; seconds until every refusing limit would admit the cost; or
    ``math.inf`` when the cost can never fit on this plan."""
    reason: str | None = None
    """The operator's reason when revoked; a description when the backend failed."""

    @property
    def denied_by(self) -> tuple[str, ...]:
        """The names of the limits that refused the cost."""
        return tuple(status.limit.name for status in self.limits if not status.allowed)

    @property
    def shadowed(self) -> bool:
        """True when a limit refused but shadow mode let the call through."""
        return self.outcome is Outcome.SHADOW_DENIED

    @property
    def revoked(self) -> bool:
        """True when the customer is revoked for this scope."""
        return self.outcome is Outcome.REVOKED

    @property
    def never(self) -> bool:
        """True when the cost can never be admitted on this plan (cost > capacity)."""
        return self.retry_after == math.inf and self.outcome in _LIMITED

    def limit(self, name: str) -> LimitStatus:
        """The status of the limit called ``name``; `KeyError` if the plan has none."""
        for status in self.limits:
            if status.limit.name == name:
                return status
        raise KeyError(name)

    def describe(self) -> str:
        """One human sentence about the decision, with numbers."""
        if self.outcome is Outcome.REVOKED:
            return f"Access revoked for customer {self.customer!r}: {self.reason}"
        if self.outcome in (Outcome.FAIL_OPEN, Outcome.FAIL_CLOSED):
            return f"Rate-limit backend unavailable ({self.outcome.value}): {self.reason}"
        refused = [status for status in self.limits if not status.allowed]
        if not refused:
            return f"Allowed cost {_format(self.cost)} for customer {self.customer!r}."
        parts = [
            f"{status.limit.name}: {status.remaining} {status.limit.unit} remaining, "
            f"{charge(status.limit, self.cost):g} requested"
            for status in refused
        ]
        if self.never:
            tail = f"the cost can never be admitted on plan {self.plan!r}."
        else:
            tail = f"retry after {math.ceil(self.retry_after)}s."
        return f"Quota exceeded ({'; '.join(parts)}); {tail}"


@attrs.frozen
class Settlement:
    """The result of settling a lease."""

    lease_id: str
    """The lease settled."""
    estimate: Cost
    """The cost reserved."""
    actual: Cost
    """The cost finally charged."""
    already_settled: bool
    """True when the lease had been settled before; nothing was charged this time."""

    @property
    def delta(self) -> float | dict[str, float]:
        """Charged on top of the estimate (negative for a refund); per unit for mappings."""
        if isinstance(self.estimate, Mapping) or isinstance(self.actual, Mapping):
            estimate = _per_unit(self.estimate)
            actual = _per_unit(self.actual)
            return {
                unit: actual.get(unit, 0) - estimate.get(unit, 0)
                for unit in sorted(set(estimate) | set(actual))
            }
        return self.actual - self.estimate


def _format(cost: Cost) -> str:
    if isinstance(cost, Mapping):
        return ", ".join(f"{amount:g} {unit}" for unit, amount in sorted(cost.items()))
    return f"{cost:g}"


def _per_unit(cost: Cost) -> Mapping[str, float]:
    return cost if isinstance(cost, Mapping) else {"*": cost}
