"""The in-memory backend: the core pipeline applied under per-customer striped locks.

It is the embedded default and the reference the Redis backend is tested against, so it
does nothing but call the pure core.

Memory stays bounded without a background thread: every state knows the instant after
which it can no longer affect a decision, and each call re-checks a few stored entries
from a snapshot of the keys (renewed once it is used up), deleting the expired ones. A
live customer's state is never evicted.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable, Collection
from typing import Any

import attrs

from quotaguard.clock import Clock, SystemClock
from quotaguard.core import engine
from quotaguard.core.audit import AUDIT_KEEP, AuditEntry
from quotaguard.core.catalogue import PlanCatalogue
from quotaguard.core.customer import NO_META, CustomerMeta
from quotaguard.core.decision import Decision, LimitStatus, Settlement
from quotaguard.core.errors import ConfigurationError, LeaseError, shown
from quotaguard.core.meaning import convert, meaning, slot, slot_name
from quotaguard.core.pipeline import conclude, evaluate, resolve, viewed
from quotaguard.core.policy import Cost, Plan
from quotaguard.core.request import Request

from .base import MetaChange

# A customer's record: [expires_us, limits, other limits' states or None, *states].
# The states line up with the limits they were computed for; states of limits outside
# the current plan (after a plan change, or a revoked customer's scope plan) wait in the
# dict at index 2, by slot (name and kind), as (meaning, state): see quotaguard.core.meaning.
_EXPIRES, _LIMITS, _EXTRAS, _STATES = 0, 1, 2, 3
_new = tuple.__new__
Record = list[Any]


@attrs.frozen
class _LeaseRecord:
    customer: str
    plan: Plan
    estimate: Cost
    reserved_at: int
    expires_at: int
    retain_until: int
    settled: Cost | None = None


class _Sweeper:
    """Deletes expired entries of a dict a few at a time, from a snapshot of its keys."""

    def __init__(self, entries: dict[str, Any], expired: Callable[[Any, int], bool]) -> None:
        self._entries = entries
        self._expired = expired
        self._keys: list[str] = []
        self._position = 0
        self._lock = threading.Lock()

    def sweep(self, now: int, batch: int, lock_for: Callable[[str], threading.Lock]) -> None:
        if not self._lock.acquire(blocking=False):
            return
        try:
            if self._position >= len(self._keys):
                self._keys = list(self._entries)
                self._position = 0
            end = self._position + batch
            for key in self._keys[self._position : end]:
                entry = self._entries.get(key)
                if entry is None or not self._expired(entry, now):
                    continue
                with lock_for(key):  # it may have been renewed meanwhile: look again
                    entry = self._entries.get(key)
                    if entry is not None and self._expired(entry, now):
                        del self._entries[key]
            self._position = end
        finally:
            self._lock.release()


def _record_expired(record: Record, now: int) -> bool:
    return bool(record[_EXPIRES] <= now)


def _lease_expired(lease: _LeaseRecord, now: int) -> bool:
    return lease.retain_until <= now


class MemoryBackend:
    """Keeps every customer's state in this process. Thread-safe, bounded, lock-striped.

    Use it for one process (or for tests); several processes each get their own limits,
    so use Redis to share them.
    """

    name = "memory"

    def __init__(
        self, clock: Clock | None = None, *, stripes: int = 64, sweep_batch: int = 16
    ) -> None:
        if stripes <= 0 or stripes & (stripes - 1):
            raise ConfigurationError(f"stripes must be a power of two, got {stripes!r}")
        if sweep_batch <= 0:
            raise ConfigurationError(f"sweep_batch must be positive, got {sweep_batch!r}")
        self._clock = clock if clock is not None else SystemClock()
        self._now = self._clock.now_us
        self._records: dict[str, Record] = {}
        self._meta: dict[str, CustomerMeta] = {}
        self._leases: dict[str, _LeaseRecord] = {}
        self._audit: dict[str, deque[AuditEntry]] = {}
        self._locks = tuple(threading.Lock() for _ in range(stripes))
        self._mask = stripes - 1
        self._nones: dict[int, tuple[None, ...]] = {}
        self._calls = 0
        self._sweep_batch = sweep_batch
        self._record_sweeper = _Sweeper(self._records, _record_expired)
        self._lease_sweeper = _Sweeper(self._leases, _lease_expired)

    def __repr__(self) -> str:
        return f"MemoryBackend(clock={self._clock!r}, customers={len(self._records)})"

    def _lock(self, customer: str) -> threading.Lock:
        return self._locks[hash(customer) & self._mask]

    def __len__(self) -> int:
        """How many customers have stored usage."""
        return len(self._records)

    # -- decisions -------------------------------------------------------------------

    def decide(self, catalogue: PlanCatalogue, request: Request) -> Decision:
        """See `quotaguard.backends.base.Backend.decide`."""
        customer, cost, _, requested, now, lease, _ = request
        if now is None:
            now = self._now()
        meta = self._meta.get(customer) if self._meta else None
        if meta is None:  # no settings: the requested or default plan (see `resolve`)
            plan: Any = catalogue.get(requested)
        else:
            plan = resolve(catalogue, request, meta)
            if plan.__class__ is Decision:
                return plan
        with self._locks[hash(customer) & self._mask]:
            record = self._records.get(customer)  # `_live`, inline: the hot path
            if record is not None and record[_EXPIRES] <= now:
                record = None
            if record is not None and record[_LIMITS] is plan.limits:
                states: Any = record[_STATES:]
            else:
                states = self._states(record, plan, now)
            allowed, new_states, statuses, expiry = evaluate(plan, states, now, cost, lease)
            if allowed:
                if (
                    record is not None
                    and record[_EXTRAS] is None
                    and record[_LIMITS] is plan.limits
                ):
                    record[_EXPIRES] = expiry
                    record[_STATES:] = new_states
                else:
                    self._store(customer, record, plan, new_states, expiry)
                if lease is not None:
                    ttl = engine.lease_ttl(plan.limits, lease[1])
                    self._leases[lease[0]] = _LeaseRecord(
                        customer, plan, cost, now, now + ttl, now + 2 * ttl
                    )
            elif record is not None and self._converts(record, plan):
                # the first decision under a changed definition keeps its conversion
                self._store(customer, record, plan, list(states), expiry)
        self._calls += 1
        if not self._calls & 15:
            self._sweep(now)
        return conclude(request, plan, meta, allowed, statuses)

    def settle(
        self, catalogue: PlanCatalogue, lease_id: str, actual: Cost, now: int | None
    ) -> Settlement:
        """See `quotaguard.backends.base.Backend.settle`."""
        if now is None:
            now = self._clock.now_us()
        lease = self._leases.get(lease_id)
        if lease is None or lease.retain_until <= now:
            raise LeaseError(f"unknown or expired lease {shown(lease_id)}")
        with self._lock(lease.customer):
            lease = self._leases[lease_id]
            if lease.settled is not None:
                return Settlement(lease_id, lease.estimate, lease.settled, True)
            record = self._live(lease.customer, now)
            states = self._states(record, lease.plan, now)
            new_states, expiry = engine.settle(
                lease.plan.limits, states, now, lease.reserved_at, lease_id, lease.estimate, actual
            )
            self._store(lease.customer, record, lease.plan, new_states, expiry)
            self._leases[lease_id] = attrs.evolve(lease, settled=actual)
        return Settlement(lease_id, lease.estimate, actual, False)

    def peek(
        self,
        catalogue: PlanCatalogue,
        customer: str,
        scope: str | None,
        plan: str | None,
        now: int | None,
    ) -> tuple[str, tuple[LimitStatus, ...]]:
        """See `quotaguard.backends.base.Backend.peek`."""
        if now is None:
            now = self._clock.now_us()
        target = viewed(catalogue, self._meta.get(customer), plan, scope)
        with self._lock(customer):
            states = self._states(self._live(customer, now), target, now)
            return target.name, engine.peek(target.limits, states, now)

    # -- records ---------------------------------------------------------------------

    def _live(self, customer: str, now: int) -> Record | None:
        """``customer``'s record, None once past its expiry (swept or not: it reads the same)."""
        record = self._records.get(customer)
        if record is not None and record[_EXPIRES] <= now:
            return None
        return record

    def _states(self, record: Record | None, plan: Plan, now: int) -> list[Any] | tuple[None, ...]:
        """The stored states as ``plan``'s limits read them at ``now``; changes nothing.

        A state kept for another definition of a limit of the same name is converted
        (see `quotaguard.core.meaning`).
        """
        if record is None:
            nones = self._nones.get(len(plan.names))
            if nones is None:
                nones = self._nones[len(plan.names)] = (None,) * len(plan.names)
            return nones
        if record[_LIMITS] is plan.limits:
            return record[_STATES:]
        kept = self._kept(record)
        states = []
        for limit in plan.limits:
            found = kept.get(slot(limit))
            states.append(None if found is None else convert(found[0], found[1], limit, now))
        return states

    def _converts(self, record: Record, plan: Plan) -> bool:
        """Whether ``plan`` reads a state of ``record`` kept for another definition."""
        if record[_LIMITS] is plan.limits:
            return False
        kept = self._kept(record)
        for limit in plan.limits:
            found = kept.get(slot(limit))
            if found is not None and found[0] != meaning(limit):
                return True
        return False

    @staticmethod
    def _kept(record: Record) -> dict[str, tuple[str, Any]]:
        """Every stored state of ``record`` by slot, as (meaning, state)."""
        kept: dict[str, tuple[str, Any]] = dict(record[_EXTRAS] or {})
        for limit, state in zip(record[_LIMITS], record[_STATES:], strict=True):
            if state is not None:
                kept[slot(limit)] = (meaning(limit), state)
        return kept

    def _store(
        self,
        customer: str,
        record: Record | None,
        plan: Plan,
        states: list[Any],
        expiry: float,
    ) -> None:
        """Store ``states``, computed for ``plan``'s limits; keep the others' states."""
        if record is None:
            if any(state is not None for state in states):
                self._records[customer] = [expiry, plan.limits, None, *states]
            return
        if record[_LIMITS] is plan.limits and record[_EXTRAS] is None:
            record[_EXPIRES] = expiry
            record[_STATES:] = states
            return
        others = self._kept(record)
        for limit in plan.limits:
            others.pop(slot(limit), None)
        if others and record[_EXPIRES] > expiry:
            expiry = record[_EXPIRES]
        record[_EXPIRES] = expiry
        record[_LIMITS] = plan.limits
        record[_EXTRAS] = others or None
        record[_STATES:] = states

    def _sweep(self, now: int) -> None:
        self._record_sweeper.sweep(now, self._sweep_batch, self._lock)
        if self._leases:
            self._lease_sweeper.sweep(now, self._sweep_batch, self._lease_lock)

    def _lease_lock(self, lease_id: str) -> threading.Lock:
        lease = self._leases.get(lease_id)
        return self._lock(lease.customer if lease is not None else lease_id)

    # -- customer settings -----------------------------------------------------------

    def load_meta(self, customer: str) -> CustomerMeta:
        """See `quotaguard.backends.base.Backend.load_meta`."""
        return self._meta.get(customer, NO_META)

    def update_meta(self, customer: str, change: MetaChange) -> CustomerMeta:
        """See `quotaguard.backends.base.Backend.update_meta`."""
        with self._lock(customer):
            meta = change(self._meta.get(customer, NO_META))
            if meta == NO_META:
                self._meta.pop(customer, None)
            else:
                self._meta[customer] = meta
            return meta

    def reset(self, customer: str, limits: Collection[str] | None) -> None:
        """See `quotaguard.backends.base.Backend.reset`."""
        with self._lock(customer):
            record = self._records.get(customer)
            if record is None:
                return
            if limits is None:
                del self._records[customer]
                return
            for index, limit in enumerate(record[_LIMITS]):
                if limit.name in limits:
                    record[_STATES + index] = None
            if record[_EXTRAS]:
                record[_EXTRAS] = {
                    k: v for k, v in record[_EXTRAS].items() if slot_name(k) not in limits
                } or None

    def record_audit(self, customer: str, entry: AuditEntry) -> None:
        """See `quotaguard.backends.base.Backend.record_audit`."""
        with self._lock(customer):
            trail = self._audit.get(customer)
            if trail is None:
                trail = self._audit[customer] = deque(maxlen=AUDIT_KEEP)
            trail.append(entry)

    def audit(self, customer: str, count: int) -> list[AuditEntry]:
        """See `quotaguard.backends.base.Backend.audit`."""
        with self._lock(customer):
            trail = self._audit.get(customer, ())
            return list(reversed(trail))[:count]

    def list_customers(self, count: int) -> list[str]:
        """See `quotaguard.backends.base.Backend.list_customers`."""
        found = dict.fromkeys(itertools.islice(list(self._records), count))
        for customer in list(self._meta):
            if len(found) >= count:
                break
            found.setdefault(customer)
        return list(found)

    def close(self) -> None:
        """Nothing to release."""
