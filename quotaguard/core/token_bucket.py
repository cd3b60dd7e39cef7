"""Token bucket (GCRA) as pure functions.

State: the theoretical arrival time ``tat`` in whole microseconds, or None for a full
bucket. The bucket's backlog at ``now`` is ``max(tat - now, 0)``; it holds
``capacity * interval`` microseconds at most, and a settled over-use may push it beyond
that (debt), which delays later requests until it drains.

Every operation is a fixed sequence of IEEE-754 double operations so that the Redis Lua
implementation reproduces it bit for bit. The stored ``tat`` is rounded down to a whole
microsecond: a float timestamp near 1.8e15 keeps only quarter-microsecond precision, and
rounding the wrong way would refuse a request the bucket has room for. Rounding down
errs the other way by under one microsecond of refill per call.
"""

from __future__ import annotations

import math

from quotaguard.core.decision import LimitStatus
from quotaguard.core.policy import TokenBucket

EPSILON = 1e-9
"""Tolerance, in units, that absorbs rounding in ``x * interval / interval``."""

State = int | None

_new = tuple.__new__
_floor = math.floor


def step(
    spec: TokenBucket, tat: State, now: int, cost: float, lease: object = None
) -> tuple[State, bool, float, float]:
    """Try to take ``cost`` units at ``now``, without building a status.

    Returns (state after, admitted, time after which the state no longer matters,
    retry-after in microseconds: 0 when admitted, ``math.inf`` when it can never fit).
    When refused, the state is the unchanged one.
    """
    interval = spec.interval_us
    backlog = tat - now if tat is not None and tat > now else 0
    needed = backlog + cost * interval
    burst = spec.capacity * interval
    if needed > burst:
        return tat, False, now + backlog, math.inf if cost > spec.capacity else needed - burst
    if needed <= 0:
        return None, True, now, 0.0
    new_tat = now + math.floor(needed)
    return (new_tat if new_tat > now else None), True, new_tat, 0.0


def shown(spec: TokenBucket, tat: State, now: int) -> tuple[int, float]:
    """(remaining, refill-after in microseconds) at ``now``, as `status_of` shows them."""
    if tat is None or tat <= now:
        return spec.capacity, 0.0
    interval = spec.interval_us
    backlog = tat - now
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
    if tat is None or tat <= now:
        return _new(LimitStatus, (spec, allowed, spec.capacity, 0.0, retry_us / 1e6, 0.0, 0.0))
    remaining, refill_us = shown(spec, tat, now)
    backlog = tat - now
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
    return (tat - now) / spec.interval_us if tat is not None and tat > now else 0.0


def check(
    spec: TokenBucket, tat: State, now: int, cost: float, lease: object = None
) -> tuple[State, LimitStatus, float]:
    """`step`, with the status: (state after, status, expiry)."""
    new_tat, allowed, expiry, retry_us = step(spec, tat, now, cost)
    return new_tat, status_of(spec, new_tat if allowed else tat, now, allowed, retry_us), expiry


def settle(
    spec: TokenBucket, tat: State, now: int, reserved_at: int, lease_id: str, delta: float
) -> tuple[State, int]:
    """Charge ``delta`` more units (refund when negative) for a settled lease.

    A refund never fills the bucket beyond full. Returns (state after, expiry).
    """
    backlog = tat - now if tat is not None and tat > now else 0
    tat = now + math.floor(backlog + delta * spec.interval_us)
    if tat <= now:
        return None, now
    return tat, tat
