"""What the sync and async Redis backends share around each call.

The settings, the failure log, the local answers and the one-time eviction check.
"""

from __future__ import annotations

from typing import Any

from quotaguard.core.catalogue import PlanCatalogue
from quotaguard.core.customer import CustomerMeta
from quotaguard.core.decision import Decision, Outcome
from quotaguard.core.errors import BackendUnavailable
from quotaguard.core.policy import Cost

from .boundary import FailureLog
from .codec import Operation
from .eviction import EvictionHook, warn_about
from .local import LocalAnswers, known_revocation
from .settings import ClientSettings


class Edge:
    """The per-backend state at the boundary with Redis."""

    def __init__(self, settings: ClientSettings | None, on_eviction_risk: EvictionHook | None):
        self.settings = settings or ClientSettings()
        """Timeouts, budget, connections and local cache."""
        self.failures = FailureLog()
        """Logs failures with their traceback, rate-limited."""
        self.local = LocalAnswers(self.settings)
        """Denials this process remembers."""
        self.on_eviction_risk = on_eviction_risk
        """Called once when the server's maxmemory-policy can evict quotaguard's keys."""
        self.eviction_risk: str | None = None
        """The warning about the server's maxmemory-policy, None when it is safe."""
        self.eviction_checked = False
        """Whether the policy has been read (once per backend, on its first call)."""

    def checked_eviction(self, info: Any) -> None:
        """Record the ``INFO memory`` reply(s) of the server(s) and warn once."""
        self.eviction_checked = True
        self.eviction_risk = warn_about(info, self.on_eviction_risk)

    def unless_denied(
        self,
        catalogue: PlanCatalogue,
        customer: str,
        cost: Cost,
        scope: str | None,
        plan: str | None,
        shadow: bool,
        now: int | None,
        operation: Operation[Decision],
    ) -> Operation[Decision]:
        """``operation``, unless a remembered denial answers first.

        A denial Redis answers is remembered. Checked when the operation starts, that is
        once the call has its turn: calls that queued behind the one that found the
        customer over a limit are answered here without a round trip.
        """
        known = self.local.denial(catalogue, customer, cost, scope, plan, shadow, now)
        if known is not None:
            return known
        decision = yield from operation
        if decision.outcome is Outcome.DENIED:
            self.local.remember(catalogue, decision, plan, shadow, now)
        return decision

    def outage_answer(
        self,
        error: BackendUnavailable,
        seen: dict[str, tuple[str, CustomerMeta]],
        catalogue: PlanCatalogue,
        customer: str,
        cost: Cost,
        scope: str | None,
        plan: str | None,
        shadow: bool,
        now: int | None,
    ) -> Decision:
        """A known revocation or denial for a request Redis could not answer; else raise."""
        answer = known_revocation(catalogue, seen, customer, cost, scope, plan)
        if answer is None:
            answer = self.local.denial(
                catalogue, customer, cost, scope, plan, shadow, now, outage=True
            )
        if answer is None:
            raise error
        return answer
