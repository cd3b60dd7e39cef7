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


def status(spec: TokenBucket, backlog: float, allowed: bool, retry_us: float) -> LimitStatus:
    """The status of a bucket holding ``backlog`` microseconds of debt."""
    interval = spec.interval_us
    available = (spec.capacity * interval - backlog) / interval
    remaining = math.floor(available + EPSILON)
    if remaining < 0:
        remaining = 0
    if backlog <= 0:
        refill_us = 0.0
    else:
        refill_us = (remaining + 1 - available) * interval
        if refill_us > backlog:
            refill_us = backlog
    return _new(
        LimitStatus,
        (
            spec,
            allowed,
            remaining,
            backlog / interval,
            retry_us / 1e6,
            refill_us / 1e6,
            backlog / 1e6,
        ),
    )


def check(
    spec: TokenBucket, tat: State, now: int, cost: float, lease: object = None
) -> tuple[State, LimitStatus, float]:
    """Try to take ``cost`` units at ``now``.

    Returns (state after, status, time after which the state no longer matters). When the
    cost is refused the returned state is the unchanged one.
    """
    interval = spec.interval_us
    backlog = tat - now if tat is not None and tat > now else 0.0
    needed = backlog + cost * interval
    burst = spec.capacity * interval
    if needed > burst:
        retry_us = math.inf if cost > spec.capacity else needed - burst
        return tat, status(spec, backlog, False, retry_us), now + backlog
    new_tat = now + math.floor(needed)
    if needed <= 0:
        return None, _new(LimitStatus, (spec, True, spec.capacity, 0.0, 0.0, 0.0, 0.0)), now
    # the status of the admitted request, as `status` computes it
    available = (burst - needed) / interval
    remaining = math.floor(available + EPSILON)
    refill_us = (remaining + 1 - available) * interval
    if refill_us > needed:
        refill_us = needed
    return (
        new_tat if new_tat > now else None,
        _new(
            LimitStatus,
            (spec, True, remaining, needed / interval, 0.0, refill_us / 1e6, needed / 1e6),
        ),
        new_tat,
    )


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
