"""All of a request's limits, decided together: all-or-nothing.

The engine is what every backend runs: the memory backend calls it directly under a
lock, the Redis backend runs the same arithmetic in Lua. It is pure: states in, states
and statuses out.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

from quotaguard.core import concurrency, rolling_window, token_bucket
from quotaguard.core.decision import Decision, LimitStatus, LimitStatuses, Outcome
from quotaguard.core.policy import (
    Concurrency,
    Cost,
    Limit,
    Plan,
    RollingWindow,
    TokenBucket,
    charge,
)

_new = tuple.__new__

Step = Callable[[Any, Any, int, float, Any], tuple[Any, bool, float, float]]
StatusOf = Callable[[Any, Any, int, bool, float], LimitStatus]
Check = Callable[[Any, Any, int, float, Any], tuple[Any, LimitStatus, float]]
Settle = Callable[[Any, Any, int, int, str, float], tuple[Any, float]]

STEPS: dict[type, Step] = {
    TokenBucket: token_bucket.step,
    RollingWindow: rolling_window.step,
    Concurrency: concurrency.step,
}
STATUSES: dict[type, StatusOf] = {
    TokenBucket: token_bucket.status_of,
    RollingWindow: rolling_window.status_of,
    Concurrency: concurrency.status_of,
}
SHOWN: dict[type, Callable[[Any, Any, int], tuple[int, float]]] = {
    TokenBucket: token_bucket.shown,
    RollingWindow: rolling_window.shown,
    Concurrency: concurrency.shown,
}
"""Per kind: ``(limit, state, now) -> (remaining, refill-after in microseconds)``."""
USED: dict[type, Callable[[Any, Any, int], float]] = {
    TokenBucket: token_bucket.used,
    RollingWindow: rolling_window.used,
    Concurrency: concurrency.used,
}
CHECKS: dict[type, Check] = {
    TokenBucket: token_bucket.check,
    RollingWindow: rolling_window.check,
    Concurrency: concurrency.check,
}
SETTLES: dict[type, Settle] = {
    TokenBucket: token_bucket.settle,
    RollingWindow: rolling_window.settle,
    Concurrency: concurrency.settle,
}


NO_STATUSES = LimitStatuses(())
"""The statuses of a decision that applied no limits."""

Verdicts = tuple[
    Callable[..., Any], Sequence[Limit], Sequence[Any], int, Sequence[bool], Sequence[float]
]
"""What building the statuses needs: the builder (`build_statuses` or a compiled one),
limits, the states to show, now, admitted flags and retry-afters (microseconds)."""


def build_statuses(verdicts: Verdicts) -> tuple[LimitStatus, ...]:
    """The statuses of a decision's limits, from what `evaluate` kept."""
    _, limits, states, now, allowed, retries = verdicts
    statuses = []
    for index, limit in enumerate(limits):
        statuses.append(
            STATUSES[limit.__class__](limit, states[index], now, allowed[index], retries[index])
        )
    return tuple(statuses)


class EvaluatedStatuses(LimitStatuses):
    """Statuses built on first access from what `evaluate` kept."""

    __slots__ = ()
    build = staticmethod(lambda verdicts: verdicts[0](verdicts))

    @property
    def specs(self) -> tuple[Limit, ...]:
        """The limits, without building their statuses."""
        payload = self._payload
        if payload is None:
            return super().specs
        return tuple(payload[1])

    def kept(self) -> tuple[Sequence[Limit], Sequence[Any], int] | None:
        """(limits, states, now) while the statuses are unbuilt, else None.

        With `SHOWN` and `USED`, a hot path (response headers, metrics) reads what it
        needs without building every status.
        """
        payload = self._payload
        return None if payload is None else (payload[1], payload[2], payload[3])

    @property
    def used(self) -> tuple[float, ...]:
        """Each limit's ``used`` value, computed without building the statuses."""
        payload = self._payload
        if payload is None:
            return super().used
        used_of = getattr(payload[0], "used", None)  # compiled with the plan's builder
        if used_of is not None:
            return used_of(payload)  # type: ignore[no-any-return]
        _, limits, states, now, _, _ = payload
        return tuple(
            USED[limit.__class__](limit, states[index], now) for index, limit in enumerate(limits)
        )


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

    The work is done by a function compiled once per tuple of limits (see `_compile`),
    which saves the loop's overhead, the larger part of a decision's cost in Python.
    Backends call `evaluate_plan`, which keeps the compiled function on the plan.
    """
    per_unit = not (cost.__class__ is int or cost.__class__ is float)
    return _compiled(tuple(limits), per_unit)(states, now, cost, lease)  # type: ignore[no-any-return]


def evaluate_plan(
    plan: Plan,
    states: Sequence[Any],
    now: int,
    cost: Cost,
    lease: concurrency.Lease | None = None,
) -> tuple[bool, list[Any], LimitStatuses, float]:
    """`evaluate` for ``plan``'s limits, with the compiled function kept on the plan."""
    per_unit = not (cost.__class__ is int or cost.__class__ is float)
    compiled = plan.evaluators[per_unit]
    if compiled is None:
        compiled = plan.evaluators[per_unit] = _compile(plan.limits, per_unit)
    return compiled(states, now, cost, lease)  # type: ignore[no-any-return]


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
    return _outcome(limits, states, now, results)


def _outcome(
    limits: Sequence[Limit],
    states: Sequence[Any],
    now: int,
    results: Sequence[tuple[Any, bool, float, float]],
) -> tuple[bool, list[Any], LimitStatuses, float]:
    new_states = [result[0] for result in results]
    flags = [result[1] for result in results]
    retries = [result[3] for result in results]
    expiry = max((result[2] for result in results), default=now)
    if all(flags):
        # the statuses keep their own copy: the caller may store (or change) new_states
        kept = tuple(new_states)
        statuses = EvaluatedStatuses((build_statuses, limits, kept, now, flags, retries))
        return True, new_states, statuses, max(expiry, now)
    # show the refusing limits as they were seen, the others untouched
    shown = [
        new if not flag else old for new, flag, old in zip(new_states, flags, states, strict=True)
    ]
    statuses = EvaluatedStatuses((build_statuses, limits, shown, now, flags, retries))
    return False, list(states), statuses, max(expiry, now)


@functools.lru_cache(maxsize=1024)
def _compiled(limits: tuple[Limit, ...], per_unit: bool) -> Callable[..., Any]:
    # for `evaluate`, which callers with a `Plan` avoid: `evaluate_plan` keeps its own
    return _compile(limits, per_unit)


def _compile(limits: Sequence[Limit], per_unit: bool) -> Callable[..., Any]:
    """Generate `evaluate` unrolled for these limits.

    The way attrs and namedtuple generate their methods: the generated code calls the
    same `step` functions in the same order as `evaluate_slowly` and returns the same
    values, without the loop.
    """
    count = len(limits)
    names: dict[str, Any] = {
        "limits": limits,
        "Statuses": EvaluatedStatuses,
        "outcome": _outcome,
        "all_true": (True,) * count,
        "zeros": (0.0,) * count,
    }
    calls = ", ".join(
        f"status{index}(limit{index}, states[{index}], now, allowed[{index}], retries[{index}])"
        for index in range(count)
    )
    used_calls = ", ".join(
        f"used{index}(limit{index}, states[{index}], now)" for index in range(count)
    )
    comma = "," if count == 1 else ""
    lines = [
        "def build(verdicts):",
        "    _, _, states, now, allowed, retries = verdicts",
        f"    return ({calls}{comma})",
        "",
        "def used(verdicts):",
        "    _, _, states, now, _, _ = verdicts",
        f"    return ({used_calls}{comma})",
        "",
        "build.used = used",
        "",
        "def evaluate(states, now, cost, lease):",
    ]
    for index, limit in enumerate(limits):
        names[f"status{index}"] = STATUSES[limit.__class__]
        names[f"used{index}"] = USED[limit.__class__]
        names[f"step{index}"] = STEPS[limit.__class__]
        names[f"limit{index}"] = limit
        if per_unit:
            default = 1 if limit.unit == "requests" else 0
            lines.append(f"    c{index} = cost.get({limit.unit!r}, {default})")
        amount = f"c{index}" if per_unit else "cost"
        lines.append(
            f"    r{index} = step{index}(limit{index}, states[{index}], now, {amount}, lease)"
        )
    results = ", ".join(f"r{index}" for index in range(count))
    if count == 0:
        lines.append("    return True, [], Statuses((build, limits, (), now, (), ())), now")
    else:
        admitted = " and ".join(f"r{index}[1]" for index in range(count))
        new_states = ", ".join(f"r{index}[0]" for index in range(count))
        lines.append(f"    if {admitted}:")
        lines.append(f"        shown = ({new_states},)")
        lines.append("        expiry = r0[2]")
        for index in range(1, count):
            lines.append(f"        if r{index}[2] > expiry:")
            lines.append(f"            expiry = r{index}[2]")
        lines.append("        statuses = Statuses((build, limits, shown, now, all_true, zeros))")
        lines.append("        return True, list(shown), statuses, expiry")
        lines.append(f"    return outcome(limits, states, now, ({results},))")
    source = "\n".join(lines)
    exec(compile(source, f"<quotaguard evaluate {count} limits>", "exec"), names)
    return names["evaluate"]  # type: ignore[no-any-return]


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
