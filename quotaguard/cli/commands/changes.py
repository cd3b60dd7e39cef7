"""``assign``, ``override``, ``revoke``, ``restore`` and ``reset``: changes to a customer.

Each goes through the guard's operator API, which checks every value (with
`quotaguard.core.inputs`) before anything is stored and writes the audit entry. The
commands add only what an operator's command line needs on top: its arguments parsed
from text, and refusals of changes that would do nothing (restoring a customer who is
not revoked, removing an override that does not exist, resetting a customer nothing is
stored about).
"""

from __future__ import annotations

import argparse

from quotaguard.cli.context import (
    build_guard,
    check_limit_name,
    is_known,
    no_plan_applies,
    plan_applies,
    unknown_customer,
    usage_or_none,
)
from quotaguard.cli.errors import EXIT_INVALID, EXIT_OK, CLIError
from quotaguard.core import inputs

__all__ = ["assign", "override", "override_value", "reset", "restore", "revoke"]


def _done(args: argparse.Namespace, message: str) -> int:
    args.stdout.write(f"{message} (recorded in the audit trail as {args.actor})\n")
    return EXIT_OK


def assign(args: argparse.Namespace) -> int:
    """``assign CUSTOMER PLAN``: put the customer on a plan (``none``: remove it)."""
    customer = inputs.customer_id(args.customer)
    guard = build_guard(args)
    plan: str | None = args.plan
    if plan == "none" and plan not in guard.catalogue:
        plan = None
    guard.assign(customer, plan, actor=args.actor)
    if plan is None:
        return _done(args, f"customer {customer}: plan assignment removed")
    return _done(args, f"customer {customer}: assigned to plan {plan}")


def override_value(text: str) -> int | str | None:
    """The VALUE argument of ``override``: None, a positive integer quota, or a rate.

    ``none`` is None, digits an integer quota (exit code 4 unless positive), anything else
    is returned as text for the guard to check as a rate.
    """
    value = text.strip()
    if value.lower() == "none":
        return None
    if value.lstrip("+-").isascii() and value.lstrip("+-").isdigit():
        number = int(value) if len(value) < 20 else 2**64  # the guard refuses it by name
        if number <= 0:
            raise CLIError(EXIT_INVALID, f"a quota must be a positive integer, got {text!r}")
        return number
    return value


def override(args: argparse.Namespace) -> int:
    """``override CUSTOMER LIMIT VALUE``: override one limit for one customer."""
    customer = inputs.customer_id(args.customer)
    value = override_value(args.value)
    guard = build_guard(args)
    if args.plan is not None:
        guard.catalogue[args.plan]
    meta = guard.customer(customer)
    if value is None:
        if all(limit.name != args.limit for limit in meta.overrides):
            raise CLIError(
                EXIT_INVALID, f"customer {customer!r} has no override of limit {args.limit!r}"
            )
    elif not plan_applies(guard.catalogue, meta, args.plan):
        raise no_plan_applies(customer)
    guard.override(customer, args.limit, value, plan=args.plan, actor=args.actor)
    if value is None:
        return _done(args, f"customer {customer}: override of {args.limit} removed")
    return _done(args, f"customer {customer}: {args.limit} overridden with {value}")


def scope_pair(text: str) -> tuple[str, str]:
    """An ``--allow-scope SCOPE=PLAN`` argument as (scope, plan)."""
    scope, sep, plan = text.partition("=")
    if not sep or not scope or not plan:
        raise argparse.ArgumentTypeError(f"expected SCOPE=PLAN, got {text!r}")
    return scope.strip(), plan.strip()


def revoke(args: argparse.Namespace) -> int:
    """``revoke CUSTOMER --reason TEXT [--allow-scope SCOPE=PLAN ...]``."""
    customer = inputs.customer_id(args.customer)
    reason = args.reason.strip()
    if not reason:
        raise CLIError(EXIT_INVALID, "--reason must not be empty: it is shown to the customer")
    inputs.text(reason, "--reason")
    scopes: dict[str, str] = {}
    for scope, plan in args.allow_scope:
        if scopes.get(scope, plan) != plan:
            raise CLIError(EXIT_INVALID, f"scope {scope!r} is given twice with different plans")
        scopes[scope] = plan
    scopes = inputs.scope_plans(scopes)
    guard = build_guard(args, plans_required=bool(scopes))
    guard.revoke(customer, reason, allow_scopes=scopes, actor=args.actor)
    allowed = ", ".join(f"{s} on plan {p}" for s, p in sorted(scopes.items())) or "nothing"
    return _done(args, f"customer {customer}: revoked; still allowed: {allowed}")


def restore(args: argparse.Namespace) -> int:
    """``restore CUSTOMER``: lift the customer's revocation."""
    customer = inputs.customer_id(args.customer)
    guard = build_guard(args, plans_required=False)
    if guard.customer(customer).revocation is None:
        raise CLIError(EXIT_INVALID, f"customer {customer!r} is not revoked; nothing to restore")
    guard.restore(customer, actor=args.actor)
    return _done(args, f"customer {customer}: revocation lifted")


def reset(args: argparse.Namespace) -> int:
    """``reset CUSTOMER [--limit L ...]``: forget the usage of some limits, or of all."""
    customer = inputs.customer_id(args.customer)
    guard = build_guard(args)
    limits: list[str] | None = None
    if args.limit:
        limits = [check_limit_name(guard.catalogue, name) for name in args.limit]
    meta = guard.customer(customer)
    if not is_known(guard, customer, meta, usage_or_none(guard, customer)):
        raise unknown_customer(customer)
    guard.reset(customer, limits, actor=args.actor)
    which = "all limits" if limits is None else ", ".join(sorted(set(limits)))
    return _done(args, f"customer {customer}: usage of {which} reset")
