"""The one decision pipeline: resolve -> evaluate -> conclude, pure and backend-free."""

from __future__ import annotations

import pytest

from quotaguard import CustomerMeta, Outcome, Plan, PlanCatalogue, Revocation, TokenBucket
from quotaguard.core.decision import Decision
from quotaguard.core.errors import UnknownPlanError
from quotaguard.core.pipeline import conclude, evaluate, resolve, shadowed, viewed
from quotaguard.core.request import Request

NOW = 1_767_225_600_000_000
FREE = Plan("free", [TokenBucket("burst", 2, "1/minute")])
BENCH = Plan("bench", [TokenBucket("burst", 5, "1/minute")])
SHADOW_PLAN = Plan("trial", [TokenBucket("burst", 1, "1/minute")], shadow=True)
CATALOGUE = PlanCatalogue([FREE, BENCH, SHADOW_PLAN], default="free")
REVOKED = CustomerMeta(revocation=Revocation("abuse", {"benchmark": "bench"}))


def decide(request: Request, meta: CustomerMeta | None, states: list[object]) -> Decision:
    target = resolve(CATALOGUE, request, meta)
    if isinstance(target, Decision):
        return target
    allowed, new_states, statuses, _ = evaluate(target, states, NOW, request.cost, request.lease)
    states[:] = new_states
    return conclude(request, target, meta, allowed, statuses)


def test_a_request_without_settings_runs_on_the_plan_it_asks_for_or_the_default() -> None:
    assert resolve(CATALOGUE, Request("c", 1), None) is FREE
    assert resolve(CATALOGUE, Request("c", 1, plan="bench"), None) is BENCH
    with pytest.raises(UnknownPlanError):
        resolve(CATALOGUE, Request("c", 1, plan="gold"), None)


def test_an_assignment_wins_over_the_requested_plan() -> None:
    assert resolve(CATALOGUE, Request("c", 1, plan="free"), CustomerMeta(plan="bench")) is BENCH


def test_a_revocation_refuses_with_its_reason_except_in_its_allowed_scopes() -> None:
    refused = resolve(CATALOGUE, Request("c", 3, scope="chat"), REVOKED)
    assert isinstance(refused, Decision)
    assert (refused.outcome, refused.reason, refused.cost) == (Outcome.REVOKED, "abuse", 3)
    assert resolve(CATALOGUE, Request("c", 1, scope="benchmark"), REVOKED) is BENCH


def test_a_view_ignores_a_revocation_that_refuses_the_scope() -> None:
    assert viewed(CATALOGUE, REVOKED, None, "chat") is FREE
    assert viewed(CATALOGUE, REVOKED, None, "benchmark") is BENCH
    assert viewed(CATALOGUE, None, "bench", None) is BENCH


def test_evaluation_is_all_or_nothing_and_conclusion_names_the_plan() -> None:
    states: list[object] = [None]
    first = decide(Request("c", 2), None, states)
    assert (first.allowed, first.outcome, first.plan) == (True, Outcome.ALLOWED, "free")
    kept = list(states)
    denied = decide(Request("c", 1), None, states)
    assert (denied.allowed, denied.outcome, denied.denied_by) == (False, Outcome.DENIED, ("burst",))
    assert states == kept  # a refusal stores nothing new
    assert denied.retry_after > 0


@pytest.mark.parametrize(
    ("guard", "plan", "customer", "expected"),
    [
        (False, FREE, None, False),
        (True, FREE, None, True),
        (False, SHADOW_PLAN, None, True),
        (True, FREE, False, False),  # the customer's own setting wins
        (False, SHADOW_PLAN, False, False),
        (False, FREE, True, True),
    ],
)
def test_shadow_precedence(guard: bool, plan: Plan, customer: bool | None, expected: bool) -> None:
    meta = CustomerMeta(shadow=customer)
    assert shadowed(Request("c", 1, shadow=guard), plan, meta) is expected


def test_a_shadowed_denial_is_admitted_and_reported() -> None:
    states: list[object] = [None]
    decide(Request("c", 2), None, states)
    denied = decide(Request("c", 1, shadow=True), None, states)
    assert (denied.allowed, denied.outcome) == (True, Outcome.SHADOW_DENIED)
