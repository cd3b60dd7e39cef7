"""The rolling window's arithmetic over flat tuples, as it was before the packed ring.

State: ``(total, start_0, count_0, start_1, count_1, ...)`` of the non-empty buckets,
oldest first, or None. Rebuilding the tuple on every call made it O(buckets) per call,
but it is short and plainly right: the packed `Ring` must agree with it on every count,
start, total and retry-after.
"""

from __future__ import annotations

import math

from quotaguard.core.policy import RollingWindow

Flat = tuple[float, ...] | None


def drop_time(spec: RollingWindow, start: float) -> float:
    end = start + spec.window_us
    return end - end % spec.granularity_us + spec.granularity_us


def evict(spec: RollingWindow, state: Flat, now: int) -> Flat:
    if state is None:
        return None
    oldest = now - now % spec.granularity_us - spec.window_us
    if state[1] >= oldest:
        return state
    total = state[0]
    index = 1
    while index < len(state) and state[index] < oldest:
        total -= state[index + 1]
        index += 2
    if index >= len(state):
        return None
    return (total, *state[index:])


def retry_us(spec: RollingWindow, state: Flat, now: int, cost: float) -> float:
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


def add(spec: RollingWindow, state: Flat, now: int, cost: float) -> Flat:
    current = now - now % spec.granularity_us
    if state is None:
        return (cost, current, cost)
    if state[-2] == current:
        return (state[0] + cost, *state[1:-1], state[-1] + cost)
    return (state[0] + cost, *state[1:], current, cost)


def step(spec: RollingWindow, state: Flat, now: int, cost: float) -> tuple[Flat, bool]:
    state = evict(spec, state, now)
    if cost > spec.quota and state is None:
        return None, False
    if state is not None and state[0] + cost > spec.quota:
        return state, False
    return (add(spec, state, now, cost) if cost > 0 else state), True


def settle(spec: RollingWindow, state: Flat, now: int, reserved_at: int, delta: float) -> Flat:
    state = evict(spec, state, now)
    if delta > 0:
        return add(spec, state, now, delta)
    if delta < 0 and state is not None:
        start = reserved_at - reserved_at % spec.granularity_us
        for index in range(1, len(state), 2):
            if state[index] == start:
                refund = min(-delta, state[index + 1])
                count = state[index + 1] - refund
                total = state[0] - refund
                if count > 0:
                    return (total, *state[1:index], start, count, *state[index + 2 :])
                if len(state) == 3:
                    return None
                return (total, *state[1:index], *state[index + 2 :])
    return state
