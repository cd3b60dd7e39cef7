"""Token bucket (GCRA) as pure functions.

State: the theoretical arrival time ``tat`` in whole microseconds, or ``(tat, carry)``
when the backlog has a fraction of a microsecond ``carry`` (0 < carry < 1) beyond ``tat``,
or None for a full bucket. The bucket's backlog at ``now`` is
``max((tat - now) + carry, 0)``; it holds ``capacity * interval`` microseconds at most,
and a settled over-use may push it beyond that (debt, at most `MAX_BACKLOG_US`), which
delays later requests until it drains.

Every operation is a fixed sequence of IEEE-754 double operations so that the Redis Lua
implementation reproduces it bit for bit. ``tat`` is kept whole because a float
timestamp near 1.8e15 keeps only quarter-microsecond precision; the carry keeps the
fraction exactly, so a bucket refilling faster than one unit per microsecond still
admits exactly its capacity.
"""

from __future__ import annotations

import math

from quotaguard.core.decision import LimitStatus
from quotaguard.core.policy import TokenBucket
from quotaguard.core.rates import MAX_DURATION_US

EPSILON = 1e-9
"""Tolerance, in units, that absorbs rounding in ``x * interval / interval``."""

MAX_BACKLOG_US = MAX_DURATION_US
"""The most debt a bucket records (about 142 years of refill, in microseconds)."""

State = int | tuple[int, float] | None

_new = tuple.__new__
_floor = math.floor
_ceil = math.ceil


def backlog_of(tat: State, now: int) -> float:
    """The backlog, in microseconds, of the bucket whose state is ``tat``, at ``now``."""
    if tat is None:
        return 0
    if tat.__class__ is int:
        return tat - now if tat > now else 0
    backlog = (tat[0] - now) + tat[1]  # type: ignore[index]
    return backlog if backlog > 0 else 0


def after(now: int, needed: float) -> State:
    """The state holding a backlog of ``needed`` microseconds at ``now``."""
    if needed > MAX_BACKLOG_US:
        needed = MAX_BACKLOG_US
    if needed <= 0:
        return None
    whole = _floor(needed)
    carry = needed - whole
    if carry:
        return (now + whole, carry)
    return now + whole


def room(spec: TokenBucket) -> float:
    """The most backlog, in microseconds, after which a cost is still admitted."""
    return spec.room_us


def _wait_us(spec: TokenBucket, tat: State, now: int, cost: float) -> float:
    """The whole microseconds until ``cost`` first fits: waiting that long admits it."""
    charge = cost * spec.interval_us
    limit = room(spec)
    wait = max(1, _ceil(backlog_of(tat, now) + charge - limit))
    while backlog_of(tat, now + wait) + charge > limit:
        wait += 1  # the rounding of the estimate fell short by a fraction
    while wait > 1 and backlog_of(tat, now + wait - 1) + charge <= limit:
        wait -= 1
    return float(wait)


def step(
    spec: TokenBucket, tat: State, now: int, cost: float, lease: object = None
) -> tuple[State, bool, float, float]:
    """Try to take ``cost`` units at ``now``, without building a status.

    Returns (state after, admitted, time after which the state no longer matters,
    retry-after in whole microseconds: 0 when admitted, ``math.inf`` when it can never
    fit). When refused, the state is the unchanged one.
    """
    # `backlog_of` and `after`, inlined: this is the hot path of every decision
    if tat is None:
        backlog: float = 0
    elif tat.__class__ is int:
        backlog = tat - now if tat > now else 0
    else:
        backlog = (tat[0] - now) + tat[1]  # type: ignore[index]
        if backlog < 0:
            backlog = 0
    charge = cost * spec.interval_us
    needed = backlog + charge
    if needed > spec.room_us:
        if cost > spec.capacity or charge > spec.room_us:
            return tat, False, now + backlog, math.inf
        return tat, False, now + backlog, _wait_us(spec, tat, now, cost)
    if needed <= 0:
        return None, True, now, 0.0
    if needed > MAX_BACKLOG_US:
        needed = MAX_BACKLOG_US
    whole = _floor(needed)
    if needed == whole:
        new_tat = now + whole
        return new_tat, True, new_tat, 0.0
    return (now + whole, needed - whole), True, now + whole + 1, 0.0


def convert(spec: TokenBucket, old_interval_us: float, tat: State, now: int) -> State:
    """A state kept for a bucket refilling every ``old_interval_us``, as ``spec``'s.

    The bucket keeps the units it has used, clamped to ``spec``'s capacity.
    """
    backlog = backlog_of(tat, now)
    if backlog <= 0:
        return None
    used = backlog / old_interval_us
    if used > spec.capacity:
        used = spec.capacity
    return after(now, used * spec.interval_us)


def shown(spec: TokenBucket, tat: State, now: int) -> tuple[int, float]:
    """(remaining, refill-after in microseconds) at ``now``, as `status_of` shows them."""
    backlog = backlog_of(tat, now)
    if backlog <= 0:
        return spec.capacity, 0.0
    interval = spec.interval_us
    available = spec.capacity - backlog / interval
    remaining = _floor(available + EPSILON)
    if remaining < 0:
        remaining = 0
    refill_us = (remaining + 1 - available) * interval
    return remaining, (refill_us if refill_us < backlog else backlog)


def status_of(
    spec: TokenBucket, tat: State, now: int, allowed: bool, retry_us: float
) -> LimitStatus:
    """The status of the bucket whose state is ``tat`` at ``now``."""
    backlog = backlog_of(tat, now)
    if backlog <= 0:
        return _new(LimitStatus, (spec, allowed, spec.capacity, 0.0, retry_us / 1e6, 0.0, 0.0))
    remaining, refill_us = shown(spec, tat, now)
    return _new(
        LimitStatus,
        (
            spec,
            allowed,
            remaining,
            backlog / spec.interval_us,
            retry_us / 1e6,
            refill_us / 1e6,
            backlog / 1e6,
        ),
    )


def used(spec: TokenBucket, tat: State, now: int) -> float:
    """Units counted against the bucket at ``now`` (its ``used`` status)."""
    return backlog_of(tat, now) / spec.interval_us


def check(
    spec: TokenBucket, tat: State, now: int, cost: float, lease: object = None
) -> tuple[State, LimitStatus, float]:
    """`step`, with the status: (state after, status, expiry)."""
    new_tat, allowed, expiry, retry_us = step(spec, tat, now, cost)
    return new_tat, status_of(spec, new_tat if allowed else tat, now, allowed, retry_us), expiry


def settle(
    spec: TokenBucket, tat: State, now: int, reserved_at: int, lease_id: str, delta: float
) -> tuple[State, float]:
    """Charge ``delta`` more units (refund when negative) for a settled lease.

    A refund never fills the bucket beyond full; debt stops at `MAX_BACKLOG_US`.
    Returns (state after, expiry).
    """
    needed = backlog_of(tat, now) + delta * spec.interval_us
    if needed <= 0:
        return None, now
    state = after(now, needed)
    return state, now + _ceil(needed if needed < MAX_BACKLOG_US else MAX_BACKLOG_US)
