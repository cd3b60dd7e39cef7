"""The one decision pipeline: resolve the customer's limits -> evaluate -> conclude.

Every backend decides a `Request` with these three steps and only loads and stores
state around them, atomically: the memory backend under its lock; the Redis backend
resolves and concludes here, around one script that runs the evaluation's arithmetic
where the state lives. Each rule lives here once:

- `resolve`: revocation (only its allowed scopes pass, each on its own plan), then the
  operator's assignment, the plan the call asks for, the default plan, then the
  customer's overrides (the order is `quotaguard.core.customer.resolve`);
- `evaluate`: all of the plan's limits, all-or-nothing (`quotaguard.core.engine`);
- `conclude`: the Decision, with shadow precedence (`shadowed`).

Several subjects. The steps take a subject's stored settings and states as plain
arguments, so a decision spanning a customer and its organisation resolves each subject
with `resolve`, evaluates the concatenation of their limits and states in one call
(`evaluate` is all-or-nothing over any sequence of limits), and concludes with the
subjects' settings: none of the steps holds a per-customer assumption beyond its
arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import attrs

from quotaguard.core import engine
from quotaguard.core.catalogue import PlanCatalogue
from quotaguard.core.customer import CustomerMeta, Revocation
from quotaguard.core.customer import resolve as resolve_plan
from quotaguard.core.decision import Decision, LimitStatuses, Outcome
from quotaguard.core.policy import Cost, Plan
from quotaguard.core.request import Request

_new = tuple.__new__
_ALLOWED = Outcome.ALLOWED  # a global is read ten times faster than an enum member

Verdict = tuple[bool, list[Any], LimitStatuses, float]
"""What `evaluate` returns: (allowed, states to store, statuses, expiry in microseconds)."""


def resolve(
    catalogue: PlanCatalogue, request: Request, meta: CustomerMeta | None
) -> Plan | Decision:
    """The plan whose limits decide ``request``, or the revoked Decision that refuses it.

    ``meta`` is the customer's stored settings; None (nothing stored) leaves the plan the
    call asks for, else the default plan: `PlanCatalogue.get`, which a backend may call
    directly when it holds no settings for the customer. Raises `UnknownPlanError` for
    an unknown requested plan and when no plan applies.
    """
    if meta is None:
        return catalogue.get(request.plan)
    target = resolve_plan(catalogue, meta, request.plan, request.scope)
    if target.__class__ is Revocation:
        reason = target.reason
        return engine.revoked(request.customer, request.scope, request.cost, reason)
    return cast(Plan, target)


def viewed(
    catalogue: PlanCatalogue, meta: CustomerMeta | None, plan: str | None, scope: str | None
) -> Plan:
    """The plan whose usage a view of the customer shows (nothing is decided).

    As `resolve`, except that a revocation refusing ``scope`` is ignored: a view of
    usage is not a decision.
    """
    if meta is not None and meta.revocation is not None and meta.revocation.plan_for(scope) is None:
        meta = attrs.evolve(meta, revocation=None)
    target = resolve_plan(catalogue, meta, plan, scope)
    assert isinstance(target, Plan)
    return target


evaluate: Callable[[Plan, Sequence[Any], int, Cost, Any], Verdict] = engine.evaluate_plan
"""``evaluate(plan, states, now, cost, lease)``: decide ``cost`` at ``now`` against every
limit of ``plan``, all-or-nothing (`quotaguard.core.engine.evaluate_plan`).

``states`` line up with ``plan.limits`` (None: never used); when refused, the states to
store are the inputs unchanged."""


def shadowed(request: Request, plan: Plan, meta: CustomerMeta | None) -> bool:
    """Whether a denial of ``request`` is only reported (shadow mode), not enforced.

    The customer's own setting wins when set; else the guard's or the plan's shadow.
    """
    if meta is not None and meta.shadow is not None:
        return meta.shadow
    return request.shadow or plan.shadow


def conclude(
    request: Request,
    plan: Plan,
    meta: CustomerMeta | None,
    allowed: bool,
    statuses: LimitStatuses,
) -> Decision:
    """The Decision for ``request`` once ``plan``'s limits are evaluated."""
    if allowed:
        customer, cost, scope = request.customer, request.cost, request.scope
        return _new(
            Decision, (True, _ALLOWED, customer, plan.name, scope, cost, statuses, 0.0, None)
        )
    return engine.decision(
        request.customer,
        plan,
        request.scope,
        request.cost,
        False,
        statuses,
        shadowed(request, plan, meta),
    )
