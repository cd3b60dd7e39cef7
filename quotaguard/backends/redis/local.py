"""What one process remembers of Redis's answers, to answer without it.

- A customer refused by a token bucket or a rolling window is refused again from memory,
  without a round trip, for ``min(retry_after, max_staleness)`` seconds, for the same
  request (same cost, scope, plan and shadow flag), with the wait that is left of its
  ``retry_after``. While Redis is unreachable the denial holds until its whole
  ``retry_after``.
- A customer this process knows to be revoked (from a decision, a settings read or its
  own change) stays refused while Redis is unreachable, instead of getting the failure
  policy's answer.

Changes made through this process (settings, reset, settling a lease) forget the
customer's denial at once; changes made elsewhere (restore, override, reset, a refund by
settling) reach this process within ``max_staleness``. Concurrency denials are never
cached: a settle can free a slot at any moment.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping

from quotaguard.core.catalogue import PlanCatalogue
from quotaguard.core.customer import CustomerMeta, Revocation, resolve
from quotaguard.core.decision import Decision, LimitStatuses, Outcome
from quotaguard.core.engine import revoked
from quotaguard.core.errors import QuotaguardError
from quotaguard.core.policy import Concurrency, Cost

from .settings import ClientSettings

_Entry = tuple[int, str | None, str | None, bool, Cost, int, int, Decision]
"""(catalogue id, scope, plan, shadow, cost, fresh until, denied until, decision);
times in microseconds of the call's clock (the injected one, or monotonic)."""


def _now_us(now: int | None) -> int:
    return now if now is not None else int(time.monotonic() * 1e6)


class _Remembered(LimitStatuses):
    """The statuses of a decision answered from memory (never remembered again)."""

    __slots__ = ()


def _later(decision: Decision, retry_after: float) -> Decision:
    """``decision`` seen later, when its wait is down to ``retry_after``.

    Every wait is shortened by the time gone; nothing else changes (units refilled
    meanwhile are not counted, so ``remaining`` errs low).
    """
    gone = decision.retry_after - retry_after
    statuses = _Remembered(
        tuple(
            status._replace(
                retry_after=max(0.0, status.retry_after - gone),
                refill_after=max(0.0, status.refill_after - gone),
                reset_after=max(0.0, status.reset_after - gone),
            )
            for status in decision.limits
        )
    )
    return decision._replace(retry_after=retry_after, limits=statuses)


class LocalAnswers:
    """A bounded, thread-safe memory of denials, consulted before and after Redis."""

    def __init__(self, settings: ClientSettings) -> None:
        self.max_staleness_us = int(settings.max_staleness * 1e6)
        """How long a denial is served without asking Redis, in microseconds."""
        self.size = settings.local_cache_size
        """How many customers' denials are kept at most."""
        self._denials: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def denial(
        self,
        catalogue: PlanCatalogue,
        customer: str,
        cost: Cost,
        scope: str | None,
        plan: str | None,
        shadow: bool,
        now: int | None,
        *,
        outage: bool = False,
    ) -> Decision | None:
        """The remembered denial that answers this request, if one does."""
        entry = self._denials.get(customer)
        if entry is None:
            return None
        catalogue_id, d_scope, d_plan, d_shadow, d_cost, fresh, until, decision = entry
        if (
            catalogue_id != id(catalogue)
            or d_scope != scope
            or d_plan != plan
            or d_shadow != shadow
            or d_cost != cost
        ):
            return None
        now_us = _now_us(now)
        if now_us >= (until if outage else fresh):
            return None
        return _later(decision, (until - now_us) / 1e6)

    def remember(
        self,
        catalogue: PlanCatalogue,
        decision: Decision,
        plan: str | None,
        shadow: bool,
        now: int | None,
    ) -> None:
        """Keep ``decision`` when it is a denial that will hold for a while."""
        if self.max_staleness_us <= 0 or decision.outcome is not Outcome.DENIED:
            return
        if decision.limits.__class__ is _Remembered:
            return  # answered from memory: remembering it again would restart its time
        wait = decision.retry_after
        if not 0 < wait < math.inf:
            return
        if any(
            not status.allowed and status.limit.__class__ is Concurrency
            for status in decision.limits
        ):
            return
        start = _now_us(now)
        wait_us = int(wait * 1e6)
        entry: _Entry = (
            id(catalogue),
            decision.scope,
            plan,
            shadow,
            decision.cost,
            start + min(wait_us, self.max_staleness_us),
            start + wait_us,
            decision,
        )
        with self._lock:
            if len(self._denials) >= self.size and decision.customer not in self._denials:
                self._denials.clear()
            self._denials[decision.customer] = entry

    def forget(self, customer: str) -> None:
        """Drop what is remembered of ``customer`` (after a change made here)."""
        with self._lock:
            self._denials.pop(customer, None)

    def __len__(self) -> int:
        return len(self._denials)


def known_revocation(
    catalogue: PlanCatalogue,
    settings: Mapping[str, tuple[str, CustomerMeta]],
    customer: str,
    cost: Cost,
    scope: str | None,
    plan: str | None,
) -> Decision | None:
    """The revoked decision for a request, when the settings seen last revoke it."""
    seen = settings.get(customer)
    if seen is None or seen[1].revocation is None:
        return None
    try:
        target = resolve(catalogue, seen[1], plan, scope)
    except QuotaguardError:
        return None
    if isinstance(target, Revocation):
        return revoked(customer, scope, cost, target.reason)
    return None
