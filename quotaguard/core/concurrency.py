"""Concurrency slots as pure functions.

State: a tuple ``(lease_id_0, expires_0, lease_id_1, expires_1, ...)`` of the leases
holding a slot, or None. A lease's slot frees itself at its expiry (microseconds).
"""

from __future__ import annotations

from quotaguard.core.decision import LimitStatus
from quotaguard.core.policy import Concurrency

State = tuple[str | float, ...] | None
_new = tuple.__new__

Lease = tuple[str, int | None]
"""A lease asking for a slot: (lease id, time-to-live in microseconds or None for the
limit's own ``lease_ttl``)."""


def evict(state: State, now: int) -> State:
    """Drop the slots whose lease has expired at ``now``."""
    if state is None:
        return None
    kept: list[str | float] = []
    for index in range(0, len(state), 2):
        if state[index + 1] > now:  # type: ignore[operator]
            kept += state[index : index + 2]
    return tuple(kept) if kept else None


def status(spec: Concurrency, state: State, now: int, allowed: bool) -> LimitStatus:
    """The status of the slots in ``state`` (already evicted) at ``now``."""
    expiries: list[float] = [] if state is None else list(state[1::2])  # type: ignore[arg-type]
    in_flight = len(expiries)
    remaining = max(spec.max_in_flight - in_flight, 0)
    first = (min(expiries) - now) / 1e6 if expiries else 0.0
    refill = first if remaining == 0 else 0.0
    return _new(
        LimitStatus,
        (
            spec,
            allowed,
            remaining,
            in_flight,
            0.0 if allowed else first,
            refill,
            (max(expiries) - now) / 1e6 if expiries else 0.0,
        ),
    )


def step(
    spec: Concurrency, state: State, now: int, cost: float, lease: Lease | None = None
) -> tuple[State, bool, float, float]:
    """Take a slot for ``lease``, or (without a lease) check that one is free.

    The cost does not matter: each lease holds one slot. Returns (state after, admitted,
    time after which the state no longer matters, retry-after in microseconds).
    """
    state = evict(state, now)
    in_flight = 0 if state is None else len(state) // 2
    if in_flight >= spec.max_in_flight:
        first: float = min(state[1::2])  # type: ignore[index,assignment]
        return state, False, _expiry(state, now), first - now
    if lease is not None:
        ttl = spec.lease_ttl_us if lease[1] is None else lease[1]
        state = (*(state or ()), lease[0], now + ttl)
    return state, True, _expiry(state, now), 0.0


def status_of(
    spec: Concurrency, state: State, now: int, allowed: bool, retry_us: float
) -> LimitStatus:
    """The status of the slots in ``state`` at ``now``."""
    return status(spec, evict(state, now), now, allowed)


def level(spec: Concurrency, state: State, now: int) -> tuple[int, float]:
    """(remaining, refill-after in seconds) at ``now``: the two fields of `status_of`."""
    status = status_of(spec, state, now, True, 0.0)
    return status.remaining, status.refill_after


def used(spec: Concurrency, state: State, now: int) -> float:
    """Slots held at ``now`` (its ``used`` status)."""
    state = evict(state, now)
    return 0 if state is None else len(state) // 2


def check(
    spec: Concurrency, state: State, now: int, cost: float, lease: Lease | None = None
) -> tuple[State, LimitStatus, float]:
    """`step`, with the status: (state after, status, expiry)."""
    new_state, allowed, expiry, _ = step(spec, state, now, cost, lease)
    return new_state, status(spec, new_state, now, allowed), expiry


def settle(
    spec: Concurrency, state: State, now: int, reserved_at: int, lease_id: str, delta: float
) -> tuple[State, float]:
    """Free the slot held by ``lease_id``. Returns (state after, expiry)."""
    state = evict(state, now)
    if state is not None:
        kept: list[str | float] = []
        for index in range(0, len(state), 2):
            if state[index] != lease_id:
                kept += state[index : index + 2]
        state = tuple(kept) if kept else None
    return state, _expiry(state, now)


def _expiry(state: State, now: int) -> float:
    if state is None:
        return float(now)
    return max(state[1::2])  # type: ignore[return-value]
