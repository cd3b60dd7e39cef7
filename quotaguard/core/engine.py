"""All of a request's limits, decided together: all-or-nothing.

The engine is what every backend runs: the memory backend calls it directly under a
lock, the Redis backend runs the same arithmetic in Lua. It is pure: states in, states
and statuses out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from quotaguard.core import concurrency
from quotaguard.core.compiled import BY_PLAN, compiled, outcome, remember
from quotaguard.core.compiled import EvaluatedStatuses as EvaluatedStatuses
from quotaguard.core.decision import Decision, LimitStatus, LimitStatuses, Outcome
from quotaguard.core.kinds import CHECKS, SETTLES, STEPS
from quotaguard.core.policy import Concurrency, Cost, Limit, Plan, charge

_new = tuple.__new__

NO_STATUSES = LimitStatuses(())
"""The statuses of a decision that applied no limits."""


def evaluate(
    limits: Sequence[Limit],
    states: Sequence[Any],
    now: int,
    cost: Cost,
    lease: concurrency.Lease | None = None,
) -> tuple[bool, list[Any], LimitStatuses, float]:
    """Decide ``cost`` at ``now`` against every limit, all-or-nothing.

    Returns (allowed, states to store, statuses, expiry). When refused, the states to
    store are the inputs unchanged and the statuses of the limits that would have
    admitted the cost show them as they are (nothing consumed). The statuses are built
    only when read.

    The work is done by a function compiled once per tuple of limits (see
    `quotaguard.core.compiled`), which saves the loop's overhead, the larger part of a
    decision's cost in Python. Backends call `evaluate_plan`, which finds the compiled
    function by the plan.
    """
    per_unit = not (cost.__class__ is int or cost.__class__ is float)
    return compiled(tuple(limits), per_unit)(states, now, cost, lease)  # type: ignore[no-any-return]


def evaluate_plan(
    plan: Plan,
    states: Sequence[Any],
    now: int,
    cost: Cost,
    lease: concurrency.Lease | None = None,
) -> tuple[bool, list[Any], LimitStatuses, float]:
    """`evaluate` for ``plan``'s limits, with the compiled function found by the plan."""
    per_unit = not (cost.__class__ is int or cost.__class__ is float)
    entry = BY_PLAN[per_unit].get(id(plan))
    if entry is None or entry[0] is not plan:
        entry = remember(plan, per_unit)
    return entry[1](states, now, cost, lease)  # type: ignore[no-any-return]


def evaluate_slowly(
    limits: Sequence[Limit],
    states: Sequence[Any],
    now: int,
    cost: Cost,
    lease: concurrency.Lease | None = None,
) -> tuple[bool, list[Any], LimitStatuses, float]:
    """`evaluate` as a plain loop: the reference the compiled functions must match."""
    results = [
        STEPS[limit.__class__](limit, state, now, charge(limit, cost), lease)
        for limit, state in zip(limits, states, strict=True)
    ]
    return outcome(limits, states, now, results)


def peek(limits: Sequence[Limit], states: Sequence[Any], now: int) -> tuple[LimitStatus, ...]:
    """The statuses of every limit at ``now``, consuming nothing."""
    return tuple(
        CHECKS[limit.__class__](limit, states[index], now, 0, None)[1]
        for index, limit in enumerate(limits)
    )


def settle(
    limits: Sequence[Limit],
    states: Sequence[Any],
    now: int,
    reserved_at: int,
    lease_id: str,
    estimate: Cost,
    actual: Cost,
) -> tuple[list[Any], float]:
    """Apply a lease's settlement to every limit: charge ``actual`` instead of ``estimate``.

    Returns (states to store, expiry).
    """
    new_states: list[Any] = []
    expiry = float(now)
    for index, limit in enumerate(limits):
        delta = charge(limit, actual) - charge(limit, estimate)
        state, until = SETTLES[limit.__class__](
            limit, states[index], now, reserved_at, lease_id, delta
        )
        new_states.append(state)
        if until > expiry:
            expiry = until
    return new_states, expiry


DEFAULT_LEASE_TTL_US = 600_000_000
"""How long a lease lasts when neither the call nor a concurrency limit says (10 min)."""


def lease_ttl(limits: Sequence[Limit], ttl: int | None) -> int:
    """A lease's time-to-live in microseconds.

    ``ttl`` if given, else the plan's longest concurrency ``lease_ttl``, else
    `DEFAULT_LEASE_TTL_US`.
    """
    if ttl is not None:
        return ttl
    ttls = [limit.lease_ttl_us for limit in limits if isinstance(limit, Concurrency)]
    return max(ttls) if ttls else DEFAULT_LEASE_TTL_US


def retry_after(statuses: Sequence[LimitStatus]) -> float:
    """The earliest time, in seconds, at which every refusing limit admits the cost.

    Each refusing limit's own retry-after already accounts for the cost, and a limit only
    becomes more permissive as time passes, so the answer is the latest of them
    (``math.inf`` if any can never admit it).
    """
    latest = 0.0
    for status in statuses:
        if not status.allowed and status.retry_after > latest:
            latest = status.retry_after
    return latest


def decision(
    customer: str,
    plan: Plan,
    scope: str | None,
    cost: Cost,
    allowed: bool,
    statuses: Sequence[LimitStatus],
    shadow: bool,
) -> Decision:
    """Build the Decision for an evaluated request, applying shadow mode."""
    if allowed:
        return _new(
            Decision,
            (True, Outcome.ALLOWED, customer, plan.name, scope, cost, statuses, 0.0, None),
        )
    wait = retry_after(statuses)
    if shadow:
        return Decision(
            True, Outcome.SHADOW_DENIED, customer, plan.name, scope, cost, statuses, wait
        )
    return Decision(False, Outcome.DENIED, customer, plan.name, scope, cost, statuses, wait)


def revoked(customer: str, scope: str | None, cost: Cost, reason: str) -> Decision:
    """The Decision for a customer revoked for this scope."""
    return Decision(
        False, Outcome.REVOKED, customer, None, scope, cost, NO_STATUSES, math.inf, reason
    )
