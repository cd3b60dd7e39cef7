"""Rolling window as pure functions over a bounded run of buckets.

State: a tuple ``(total, start_0, count_0, start_1, count_1, ...)`` of the non-empty
buckets, oldest first, each ``start`` a multiple of the granularity G in microseconds; or
None when empty. At ``now`` the window counts the buckets whose start is at or after
``current - window``, where ``current`` is the start of the bucket holding ``now``: that
is at most ``window / G + 1`` buckets.

Error bound: the count at ``now`` covers every event in ``(now - window, now]`` and none
before ``now - window - G``. So it never admits more than the quota within any span of
``window``, and it counts at most one bucket's span of events beyond the window.

Each call drops expired buckets from the front and adds to the last one, so the work
per call is amortised O(1); only a refusal walks the buckets to compute retry-after.
"""

from __future__ import annotations

import math

from quotaguard.core.decision import LimitStatus
from quotaguard.core.policy import RollingWindow
from quotaguard.core.token_bucket import EPSILON

_new = tuple.__new__
_floor = math.floor

State = tuple[float, ...] | None


def drop_time(spec: RollingWindow, start: float) -> float:
    """The first instant at which the bucket starting at ``start`` leaves the window.

    That is the start of the first bucket after ``start + window``; for an aligned start,
    ``start + window + granularity``.
    """
    end = start + spec.window_us
    return end - end % spec.granularity_us + spec.granularity_us


def evict(spec: RollingWindow, state: State, now: int) -> State:
    """Drop the buckets that have left the window at ``now``."""
    if state is None:
        return None
    oldest = now - now % spec.granularity_us - spec.window_us
    if state[1] >= oldest:
        return state
    total = state[0]
    index = 1
    size = len(state)
    while index < size and state[index] < oldest:
        total -= state[index + 1]
        index += 2
    if index >= size:
        return None
    return (total, *state[index:])


def _retry_us(spec: RollingWindow, state: State, now: int, cost: float) -> float:
    if cost > spec.quota:
        return math.inf
    if state is None:
        return 0.0
    excess = state[0] + cost - spec.quota
    freed = 0.0
    for index in range(1, len(state), 2):
        freed += state[index + 1]
        if freed >= excess:
            return drop_time(spec, state[index]) - now
    return drop_time(spec, state[-2]) - now


def _wait_us(spec: RollingWindow, state: State, now: int, cost: float) -> float:
    """Whole microseconds to wait before ``cost`` fits: waiting that long admits it."""
    wait = _retry_us(spec, state, now, cost)
    if wait == math.inf:
        return wait
    wait = math.ceil(wait)
    for _ in range(4):  # a sum of fractional counts may round the other way: look again
        later = now + wait
        if step(spec, state, later, cost)[1]:
            break
        wait += max(1, math.ceil(_retry_us(spec, evict(spec, state, later), later, cost)))
    return float(wait)


def convert(spec: RollingWindow, old_granularity_us: int, state: State, now: int) -> State:
    """A state kept with buckets of ``old_granularity_us``, in ``spec``'s buckets.

    Each bucket's count moves to the new bucket holding the latest instant its events
    can have happened: exactly the new window's own buckets when the new granularity is
    a multiple of the old one, else counted a little longer than needed (never less).
    The total is kept.
    """
    if state is None:
        return None
    granularity = spec.granularity_us
    converted: list[float] = [state[0]]
    for index in range(1, len(state), 2):
        latest = state[index] + old_granularity_us - 1
        if latest > now:
            latest = now
        start = latest - latest % granularity
        if len(converted) > 1 and converted[-2] == start:
            converted[-1] += state[index + 1]
        else:
            converted += (start, state[index + 1])
    return tuple(converted)


def status(
    spec: RollingWindow, state: State, now: int, allowed: bool, retry_us: float
) -> LimitStatus:
    """The status of the window holding ``state`` at ``now`` (see `status_of`)."""
    return status_of(spec, state, now, allowed, retry_us)


def step(
    spec: RollingWindow, state: State, now: int, cost: float, lease: object = None
) -> tuple[State, bool, float, float]:
    """Try to count ``cost`` units at ``now``, without building a status.

    Returns (state after, admitted, time after which the state no longer matters,
    retry-after in microseconds: 0 when admitted, ``math.inf`` when it can never fit).
    When refused, the state is the evicted, otherwise unchanged, one.
    """
    granularity = spec.granularity_us
    window = spec.window_us
    current = now - now % granularity
    if state is not None and state[1] < current - window:
        state = evict(spec, state, now)
    if state is None:
        if cost > spec.quota:
            return None, False, now, math.inf
        if cost <= 0:
            return None, True, now, 0.0
        end = current + window
        return (cost, current, cost), True, end - end % granularity + granularity, 0.0
    total = state[0] + cost
    if total > spec.quota:
        return state, False, drop_time(spec, state[-2]), _wait_us(spec, state, now, cost)
    if cost > 0:
        if state[-2] == current:
            state = (total, *state[1:-1], state[-1] + cost)
        else:
            state = (total, *state[1:], current, cost)
    last_end = state[-2] + window
    return state, True, last_end - last_end % granularity + granularity, 0.0


def shown(spec: RollingWindow, state: State, now: int) -> tuple[int, float]:
    """(remaining, refill-after in microseconds) at ``now``, as `status_of` shows them."""
    if state is None:
        return spec.quota, 0.0
    granularity = spec.granularity_us
    window = spec.window_us
    if state[1] < now - now % granularity - window:
        state = evict(spec, state, now)
        if state is None:
            return spec.quota, 0.0
    remaining = _floor(spec.quota - state[0] + EPSILON)
    if remaining > 0:
        end = state[1] + window  # the oldest bucket's drop time, as in `drop_time`
        return remaining, end - end % granularity + granularity - now
    return 0, _retry_us(spec, state, now, 1)


def status_of(
    spec: RollingWindow, state: State, now: int, allowed: bool, retry_us: float
) -> LimitStatus:
    """The status of the window whose state is ``state`` at ``now``."""
    if state is not None and state[1] < now - now % spec.granularity_us - spec.window_us:
        state = evict(spec, state, now)
    if state is None:
        return _new(LimitStatus, (spec, allowed, spec.quota, 0, retry_us / 1e6, 0.0, 0.0))
    remaining, refill_us = shown(spec, state, now)
    end = state[-2] + spec.window_us
    reset_us = end - end % spec.granularity_us + spec.granularity_us - now
    return _new(
        LimitStatus,
        (spec, allowed, remaining, state[0], retry_us / 1e6, refill_us / 1e6, reset_us / 1e6),
    )


def used(spec: RollingWindow, state: State, now: int) -> float:
    """Units counted in the window at ``now`` (its ``used`` status)."""
    if state is None:
        return 0
    if state[1] < now - now % spec.granularity_us - spec.window_us:
        state = evict(spec, state, now)
        if state is None:
            return 0
    return state[0]


def check(
    spec: RollingWindow, state: State, now: int, cost: float, lease: object = None
) -> tuple[State, LimitStatus, float]:
    """`step`, with the status: (state after, status, expiry)."""
    new_state, allowed, expiry, retry_us = step(spec, state, now, cost)
    return new_state, status(spec, new_state, now, allowed, retry_us), expiry


def _add(spec: RollingWindow, state: State, now: int, cost: float) -> State:
    current = now - now % spec.granularity_us
    if state is None:
        return (cost, current, cost)
    if state[-2] == current:
        return (state[0] + cost, *state[1:-1], state[-1] + cost)
    return (state[0] + cost, *state[1:], current, cost)


def settle(
    spec: RollingWindow, state: State, now: int, reserved_at: int, lease_id: str, delta: float
) -> tuple[State, float]:
    """Charge ``delta`` more units (refund when negative) for a lease.

    Extra units are counted now; a refund comes out of the bucket the reservation went
    into, if that bucket is still in the window. Returns (state after, expiry).
    """
    state = evict(spec, state, now)
    if delta > 0:
        state = _add(spec, state, now, delta)
    elif delta < 0 and state is not None:
        start = reserved_at - reserved_at % spec.granularity_us
        for index in range(1, len(state), 2):
            if state[index] == start:
                refund = min(-delta, state[index + 1])
                count = state[index + 1] - refund
                total = state[0] - refund
                if count > 0:
                    state = (total, *state[1:index], start, count, *state[index + 2 :])
                elif len(state) == 3:
                    state = None
                else:
                    state = (total, *state[1:index], *state[index + 2 :])
                break
    expiry = drop_time(spec, state[-2]) if state is not None else float(now)
    return state, expiry
