"""The guard's arguments, checked and copied before anything is asked of a backend."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from quotaguard.core import inputs
from quotaguard.core.catalogue import PlanCatalogue
from quotaguard.core.errors import InvalidRequestError, shown
from quotaguard.core.policy import Cost, Plan

PlansArgument = PlanCatalogue | Iterable[Plan] | Mapping[str, Plan] | str | Path
"""A catalogue, plans, or the path of a TOML plans file."""


def catalogue_of(plans: PlansArgument, default_plan: str | None) -> PlanCatalogue:
    """The catalogue that ``plans`` describe, with ``default_plan`` as its default."""
    if isinstance(plans, PlanCatalogue):
        if default_plan is not None and default_plan != plans.default:
            return PlanCatalogue(plans.plans, default=default_plan)
        return plans
    if isinstance(plans, str | Path):
        loaded = PlanCatalogue.from_toml(plans)
        return PlanCatalogue(loaded.plans, default=default_plan or loaded.default)
    if isinstance(plans, Plan):
        plans = [plans]
    return PlanCatalogue(plans, default=default_plan)


def check_plan(catalogue: PlanCatalogue, plan: object) -> str:
    """A plan name of ``catalogue``; `UnknownPlanError` if it has none of that name."""
    if not isinstance(plan, str):
        raise InvalidRequestError(f"plan must be a plan name, got {shown(plan)}")
    plan = str.__str__(plan)
    catalogue[plan]
    return plan


def check_scope(scope: object) -> str:
    """Validate a scope name; `InvalidRequestError` naming it when it is not one."""
    return inputs.name(scope, "scope")


def check_request(
    catalogue: PlanCatalogue, customer: object, cost: object, scope: object, plan: object
) -> tuple[str, Cost, str | None, str | None]:
    """A request's arguments, checked and copied (see `quotaguard.core.inputs`)."""
    return (
        inputs.customer_id(customer),
        inputs.cost(cost),
        None if scope is None else check_scope(scope),
        None if plan is None else check_plan(catalogue, plan),
    )


def check_lease_id(lease_id: object) -> str:
    """A lease id: a non-empty string."""
    if not isinstance(lease_id, str) or not lease_id:
        raise InvalidRequestError(f"lease_id must be a non-empty string, got {shown(lease_id)}")
    return str.__str__(lease_id)


def check_settle(
    lease_id: object, actual: object, customer: object, plan: object
) -> tuple[str, Cost]:
    """A settlement's lease id and actual cost (``customer`` and ``plan`` are only checked)."""
    if customer is not None and not isinstance(customer, str):
        raise InvalidRequestError(f"customer must be a string, got {shown(customer)}")
    if plan is not None and not isinstance(plan, str):
        raise InvalidRequestError(f"plan must be a plan name, got {shown(plan)}")
    return check_lease_id(lease_id), inputs.cost(actual, "actual cost")


def new_lease_id() -> str:
    """A fresh, unguessable lease id."""
    return os.urandom(12).hex()
