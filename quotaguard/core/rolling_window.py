"""Rolling window as pure functions over a packed, bounded ring of bucket counts.

A state is a `Ring`, or None when empty: an immutable header ``(total, first, last,
last_count, counts, head, tail)``. ``last`` is the start of the newest bucket, counted in
``last_count``; the closed buckets before it are packed in ``counts[head:tail]``, one slot
per granule from ``first`` (every start a multiple of the granularity G in microseconds),
empty granules as zeros. ``first`` is always a non-empty bucket (the last when there is no
closed slot). At ``now`` the window counts the buckets whose start is at or after
``current - window``, where ``current`` is the start of the bucket holding ``now``: that
is at most ``window / G + 1`` buckets.

Error bound: the count at ``now`` covers every event in ``(now - window, now]`` and none
before ``now - window - G``. So it never admits more than the quota within any span of
``window``, and it counts at most one bucket's span of events beyond the window.

Cost: adding to the newest bucket builds a new header and leaves the counts alone;
opening a bucket appends the closed one to ``counts`` in place when no other header can
see past this one's ``tail`` (else it copies the live slots first), so the counts are
shared by every version of a state and none of them changes. Eviction moves ``head``.
The live slots are copied to a fresh array once the dead prefix is as long as them, so
every call is amortised O(1) whatever the number of buckets. Counts are packed in the
narrowest array type that holds them (1 byte per bucket for counts below 256, widened to
2, 4 or 8 bytes, or doubles for fractions, when a count needs it).

A refusal finds retry-after by a running sum over the live slots (``itertools.accumulate``
and ``bisect``, in C: at most ``window / G`` slots). A settlement's refund into a closed
bucket copies the live slots once (a memcpy of at most ``window / G`` slots); a refund
into the newest bucket, or an extra charge, costs what a decision costs.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left
from itertools import accumulate
from typing import Any

from quotaguard.core.decision import LimitStatus
from quotaguard.core.policy import RollingWindow
from quotaguard.core.token_bucket import EPSILON

_new = tuple.__new__
_floor = math.floor

_WIDER = {"B": "H", "H": "I", "I": "Q"}
_COMPACT_AFTER = 32  # dead slots kept before copying the live ones is worth it


class Ring(tuple[Any, ...]):
    """A rolling window's state: ``(total, first, last, last_count, counts, head, tail)``.

    Equal rings count the same buckets: ``==`` compares `buckets`, not the packing.
    """

    __slots__ = ()

    def buckets(self) -> tuple[float, ...]:
        """The non-empty buckets as ``(total, start_0, count_0, start_1, ...)``, oldest first."""
        counts, granularity = self[4], 0
        flat: list[float] = [self[0]]
        head, tail = self[5], self[6]
        if tail > head:
            granularity = (self[2] - self[1]) // (tail - head)
        for offset, count in enumerate(counts[head:tail]):
            if count:
                flat += (self[1] + offset * granularity, count)
        flat += (self[2], self[3])
        return tuple(flat)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Ring):
            other = other.buckets()
        return self.buckets() == other

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Ring{self.buckets()!r}"


State = Ring | None

_NO_COUNTS = array("B")


def _ring(
    total: float, first: int, last: int, last_count: float, counts: array[Any], head: int, tail: int
) -> Ring:
    return _new(Ring, (total, first, last, last_count, counts, head, tail))


def _packed(values: list[float]) -> array[Any]:
    """``values`` in the narrowest array type that holds them."""
    for code in "BHIQ":
        try:
            return array(code, values)
        except (OverflowError, TypeError):
            continue
    return array("d", values)


def _widened(counts: array[Any], value: float) -> array[Any]:
    """``counts`` in an array type that also holds ``value``."""
    code: str = counts.typecode
    while value.__class__ is int and value >= 0 and code in _WIDER:
        code = _WIDER[code]
        try:
            array(code, (value,))
        except OverflowError:
            continue
        return array(code, counts)
    return array("d", counts)


def from_buckets(spec: RollingWindow, buckets: tuple[float, ...] | list[float] | None) -> State:
    """The state holding ``buckets``: ``(total, start_0, count_0, ...)``, oldest first.

    Starts are multiples of ``spec``'s granularity; the Redis backend's replies and
    `convert` build states this way.
    """
    if buckets is None or len(buckets) < 3:
        return None
    granularity = spec.granularity_us
    first = int(buckets[1])
    last = int(buckets[-2])
    slots: list[float] = [0] * ((last - first) // granularity)
    for index in range(1, len(buckets) - 2, 2):
        slots[(int(buckets[index]) - first) // granularity] += buckets[index + 1]
    counts = _packed(slots) if slots else _NO_COUNTS
    return _ring(buckets[0], first, last, buckets[-1], counts, 0, len(slots))


def _opened(spec: RollingWindow, state: Ring, current: int, total: float, cost: float) -> Ring:
    """``state`` with its newest bucket closed and a bucket at ``current`` holding ``cost``."""
    counts, head, tail = state[4], state[5], state[6]
    if (
        counts is _NO_COUNTS
        or tail != len(counts)
        or (head >= _COMPACT_AFTER and head >= tail - head)
    ):
        counts = counts[head:tail]  # another header sees past tail, or compaction is due
        tail -= head
        head = 0
    closed = state[3]
    try:
        counts.append(closed)
    except (OverflowError, TypeError):
        counts = _widened(counts, closed)
        counts.append(closed)
    gap = (current - state[2]) // spec.granularity_us - 1
    if gap > 0:
        counts.frombytes(bytes(gap * counts.itemsize))  # zero in every array type
    return _ring(total, state[1], current, cost, counts, head, tail + 1 + gap)


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
    granularity = spec.granularity_us
    oldest = now - now % granularity - spec.window_us
    first = state[1]
    if first >= oldest:
        return state
    total, counts, head, tail = state[0], state[4], state[5], state[6]
    while head < tail and first < oldest:
        total -= counts[head]
        head += 1
        first += granularity
    while head < tail and not counts[head]:  # the oldest bucket kept is a non-empty one
        head += 1
        first += granularity
    if head == tail:
        if state[2] < oldest:
            return None
        first = state[2]
    return _ring(total, first, state[2], state[3], counts, head, tail)


def _retry_us(spec: RollingWindow, state: State, now: int, cost: float) -> float:
    if cost > spec.quota:
        return math.inf
    if state is None:
        return 0.0
    excess = state[0] + cost - spec.quota
    head, tail = state[5], state[6]
    if tail > head:
        freed = list(accumulate(state[4][head:tail], initial=0.0))
        found = bisect_left(freed, excess, 1)
        if found < len(freed):
            return drop_time(spec, state[1] + (found - 1) * spec.granularity_us) - now
    return drop_time(spec, state[2]) - now


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
    buckets = state.buckets()
    granularity = spec.granularity_us
    converted: list[float] = [buckets[0]]
    for index in range(1, len(buckets), 2):
        latest = buckets[index] + old_granularity_us - 1
        if latest > now:
            latest = now
        start = latest - latest % granularity
        if len(converted) > 1 and converted[-2] == start:
            converted[-1] += buckets[index + 1]
        else:
            converted += (start, buckets[index + 1])
    return from_buckets(spec, converted)


def status(
    spec: RollingWindow, state: State, now: int, allowed: bool, retry_us: float
) -> LimitStatus:
    """The status of the window holding ``state`` at ``now`` (see `status_of`)."""
    return status_of(spec, state, now, allowed, retry_us)


def _added(spec: RollingWindow, state: State, current: int, cost: float) -> Ring:
    """``state`` (evicted) with ``cost`` more counted in the bucket at ``current``."""
    if state is None:
        return _ring(cost, current, current, cost, _NO_COUNTS, 0, 0)
    if state[2] == current:
        return _ring(
            state[0] + cost, state[1], current, state[3] + cost, state[4], state[5], state[6]
        )
    return _opened(spec, state, current, state[0] + cost, cost)


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
        state = _new(Ring, (cost, current, current, cost, _NO_COUNTS, 0, 0))
        return state, True, end - end % granularity + granularity, 0.0
    total = state[0] + cost
    if total > spec.quota:
        return state, False, drop_time(spec, state[2]), _wait_us(spec, state, now, cost)
    if cost > 0:
        if state[2] == current:
            state = _new(
                Ring, (total, state[1], current, state[3] + cost, state[4], state[5], state[6])
            )
        else:
            state = _opened(spec, state, current, total, cost)
    last_end = state[2] + window
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
    end = state[2] + spec.window_us
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
    return state[0]  # type: ignore[no-any-return]


def check(
    spec: RollingWindow, state: State, now: int, cost: float, lease: object = None
) -> tuple[State, LimitStatus, float]:
    """`step`, with the status: (state after, status, expiry)."""
    new_state, allowed, expiry, retry_us = step(spec, state, now, cost)
    return new_state, status(spec, new_state, now, allowed, retry_us), expiry


def _refunded(spec: RollingWindow, state: Ring, start: int, refund: float) -> State:
    """``state`` with up to ``refund`` units taken out of the bucket at ``start``, if kept."""
    granularity = spec.granularity_us
    first, last, counts, head, tail = state[1], state[2], state[4], state[5], state[6]
    if start == last:
        taken = min(refund, state[3])
        count = state[3] - taken
        if count > 0:
            return _ring(state[0] - taken, first, last, count, counts, head, tail)
        if head == tail:
            return None
        while not counts[tail - 1]:  # the newest non-empty closed bucket becomes the last
            tail -= 1
        tail -= 1
        last = first + (tail - head) * granularity
        return _ring(state[0] - taken, first, last, counts[tail], counts, head, tail)
    if start < first or start > last or (start - first) % granularity:
        return state
    index = head + (start - first) // granularity
    if not counts[index]:
        return state
    taken = min(refund, counts[index])
    counts = counts[head:tail]  # copied: older versions of the state keep their counts
    tail -= head
    index -= head
    count = counts[index] - taken
    try:
        counts[index] = count
    except (OverflowError, TypeError):
        counts = _widened(counts, count)
        counts[index] = count
    head = 0
    while head < tail and not counts[head]:
        head += 1
        first += granularity
    if head == tail:
        first = last
    return _ring(state[0] - taken, first, last, state[3], counts, head, tail)


def settle(
    spec: RollingWindow, state: State, now: int, reserved_at: int, lease_id: str, delta: float
) -> tuple[State, float]:
    """Charge ``delta`` more units (refund when negative) for a lease.

    Extra units are counted now; a refund comes out of the bucket the reservation went
    into, if that bucket is still in the window. Returns (state after, expiry).
    """
    state = evict(spec, state, now)
    if delta > 0:
        state = _added(spec, state, now - now % spec.granularity_us, delta)
    elif delta < 0 and state is not None:
        state = _refunded(spec, state, reserved_at - reserved_at % spec.granularity_us, -delta)
    expiry = drop_time(spec, state[2]) if state is not None else float(now)
    return state, expiry
