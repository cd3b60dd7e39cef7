"""Operator changes to a customer's settings, built before anything is stored.

Each builder checks its arguments and returns (customer, the change to the stored
settings, its audit entry); the guard's operations apply it with the backend's atomic
``update_meta`` and record the entry.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping

import attrs

from quotaguard.backends.base import MetaChange
from quotaguard.core import inputs
from quotaguard.core.audit import AuditEntry
from quotaguard.core.catalogue import PlanCatalogue
from quotaguard.core.customer import CustomerMeta, Revocation
from quotaguard.core.errors import (
    ConfigurationError,
    InvalidRequestError,
    UnknownLimitError,
    shown,
)
from quotaguard.core.policy import Concurrency, Limit, RollingWindow, TokenBucket
from quotaguard.core.rates import parse_rate

from .arguments import check_plan

Change = tuple[str, MetaChange, AuditEntry]
"""(customer, the change to their settings, the audit entry that records it)."""


def audit_entry(action: str, detail: str, actor: object, reason: str | None = None) -> AuditEntry:
    """An audit entry stamped now, by ``actor`` (default "api")."""
    return AuditEntry(
        time.time(), inputs.text(actor, "actor", optional=True) or "api", action, detail, reason
    )


def assign(catalogue: PlanCatalogue, customer: str, plan: str | None, actor: str | None) -> Change:
    """Put ``customer`` on ``plan`` (None: back to the per-call or default plan)."""
    customer = inputs.customer_id(customer)
    if plan is not None:
        plan = check_plan(catalogue, plan)
    entry = audit_entry("assign", f"plan={plan or 'none'}", actor)
    return customer, (lambda meta: attrs.evolve(meta, plan=plan)), entry


def override(
    catalogue: PlanCatalogue,
    customer: str,
    limit: str | Limit,
    value: int | str | None,
    plan: str | None,
    actor: str | None,
) -> Change:
    """Override one limit for one customer (see `Guard.override`)."""
    customer = inputs.customer_id(customer)
    change = _override_change(catalogue, limit, value, plan)
    if isinstance(limit, str):
        detail = f"{limit}={'removed' if value is None else value}"
    else:
        detail = f"{limit.name}={limit!r}"
    return customer, change, audit_entry("override", detail, actor)


def _override_change(
    catalogue: PlanCatalogue, limit: str | Limit, value: int | str | None, plan: str | None
) -> MetaChange:
    if isinstance(limit, TokenBucket | RollingWindow | Concurrency):
        spec: Limit = limit
        return lambda meta: meta.with_override(spec)
    name = inputs.name(limit, "limit")
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | str)):
        raise InvalidRequestError(
            f"an override of limit {name!r} must be an integer quota, a rate string or "
            f"None, got {shown(value)}"
        )
    if plan is not None:
        plan = check_plan(catalogue, plan)
    if value is None:
        return lambda meta: meta.without_override(name)

    def change(meta: CustomerMeta) -> CustomerMeta:
        base = catalogue.assigned(meta.plan, plan)
        try:
            current = base.limit(name)
        except KeyError:
            names = ", ".join(base.names) or "none"
            raise UnknownLimitError(
                f"plan {base.name!r} has no limit {name!r}; it has {names}"
            ) from None
        return meta.with_override(overridden_limit(current, value))

    return change


def revoke(
    catalogue: PlanCatalogue,
    customer: str,
    reason: str,
    allow_scopes: Mapping[str, str] | Collection[str] | None,
    actor: str | None,
) -> Change:
    """Stop all use by ``customer`` except ``allow_scopes`` (see `Guard.revoke`)."""
    customer = inputs.customer_id(customer)
    scopes = inputs.scope_plans(allow_scopes)
    revocation = Revocation(inputs.text(reason, "reason"), scopes, time.time())
    for _, plan in revocation.allow_scopes:
        catalogue[plan]
    allowed = ",".join(f"{scope}:{plan}" for scope, plan in revocation.allow_scopes)
    entry = audit_entry("revoke", f"allow_scopes={allowed or 'none'}", actor, reason)
    return customer, (lambda meta: attrs.evolve(meta, revocation=revocation)), entry


def restore(customer: str, actor: str | None) -> Change:
    """Lift a revocation."""
    customer = inputs.customer_id(customer)
    entry = audit_entry("restore", "revocation lifted", actor)
    return customer, (lambda meta: attrs.evolve(meta, revocation=None)), entry


def shadow(customer: str, shadow: bool | None, actor: str | None) -> Change:
    """Per-customer shadow mode: True (never block), False (enforce), None (inherit)."""
    customer = inputs.customer_id(customer)
    flag = inputs.flag(shadow, "shadow")
    entry = audit_entry("shadow", f"shadow={flag}", actor)
    return customer, (lambda meta: attrs.evolve(meta, shadow=flag)), entry


def reset(
    customer: str, limits: Collection[str] | None, actor: str | None
) -> tuple[str, frozenset[str] | None, AuditEntry]:
    """(customer, the limit names to forget or None for all, the audit entry)."""
    customer = inputs.customer_id(customer)
    names = None if limits is None else inputs.names(limits, "limit")
    detail = "limits=" + (",".join(sorted(names)) if names is not None else "all")
    return customer, names, audit_entry("reset", detail, actor)


def overridden_limit(current: Limit, value: int | str) -> Limit:
    """``current`` with an override ``value`` applied.

    An integer quota, or a rate string for a rolling window or a token bucket's refill;
    anything else raises `InvalidRequestError`.
    """
    try:
        if isinstance(value, int) and not isinstance(value, bool):
            return current.with_quota(value)
        if isinstance(value, str):
            text = value.strip()
            if text.isascii() and text.isdigit():
                return current.with_quota(int(text) if len(text) < 20 else 2**64)
            rate = parse_rate(value)
            if isinstance(current, RollingWindow):
                return RollingWindow.from_rate(current.name, rate, unit=current.unit)
            if isinstance(current, TokenBucket):
                return attrs.evolve(current, refill=rate)
    except ConfigurationError as error:
        raise InvalidRequestError(f"cannot override limit {current.name!r}: {error}") from None
    raise InvalidRequestError(
        f"cannot override limit {current.name!r} ({current.kind}) with {value!r}: give an "
        "integer quota, or a rate string for a rolling window or a token bucket's refill"
    )
