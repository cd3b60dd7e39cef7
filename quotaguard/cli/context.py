"""What every command starts from: the guard over ``--storage`` and ``--plans``.

Also the questions about a customer that several commands ask (is anything stored about
it, does a plan apply to it), with their errors.
"""

from __future__ import annotations

import argparse
import os

from quotaguard import ConfigurationError, CustomerMeta, Guard, PlanCatalogue, Usage
from quotaguard.cli.errors import EXIT_CONFIG, EXIT_INVALID, EXIT_USAGE, CLIError
from quotaguard.core.errors import shown
from quotaguard.plan_sources import load_catalogue

__all__ = [
    "MEMORY_WARNING",
    "build_guard",
    "check_limit_name",
    "is_known",
    "load_plans",
    "no_plan_applies",
    "plan_applies",
    "unknown_customer",
    "usage_or_none",
]

MEMORY_WARNING = (
    "quotaguard: warning: storage is memory://, which is private to this process: it cannot "
    "inspect or change a running service (give --storage redis://... or set "
    "QUOTAGUARD_STORAGE)"
)
"""Printed on stderr when a command runs on ``memory://``."""


def load_plans(args: argparse.Namespace, required: bool) -> PlanCatalogue:
    """The catalogue of ``--plans`` (else ``$QUOTAGUARD_PLANS``).

    Empty when not given and not ``required``; exit code 2 when required and missing, 3
    when it cannot be loaded.
    """
    path = args.plans or os.environ.get("QUOTAGUARD_PLANS")
    if not path:
        if required:
            raise CLIError(
                EXIT_USAGE,
                f"{args.command} needs the plans: give --plans FILE|MODULE:ATTR or set "
                "QUOTAGUARD_PLANS",
            )
        return PlanCatalogue([])
    try:
        return load_catalogue(path)
    except ConfigurationError as error:
        raise CLIError(EXIT_CONFIG, str(error)) from None


def build_guard(args: argparse.Namespace, *, plans_required: bool = True) -> Guard:
    """The guard the command works through.

    On the injected backend, else on ``--storage`` (else ``$QUOTAGUARD_STORAGE``, else
    ``memory://`` with a warning on stderr).
    """
    catalogue = load_plans(args, plans_required)
    if args.backend is not None:
        return Guard(catalogue, args.backend)
    storage = str(args.storage or os.environ.get("QUOTAGUARD_STORAGE") or "memory://")
    if storage.split("://", 1)[0].lower() == "memory":
        args.stderr.write(MEMORY_WARNING + "\n")
    try:
        return Guard(catalogue, storage)
    except ConfigurationError as error:
        raise CLIError(EXIT_USAGE, f"--storage: {error}") from None


def plan_applies(catalogue: PlanCatalogue, meta: CustomerMeta, plan: str | None) -> bool:
    """Whether a plan applies: the customer's assigned plan, ``plan``, or the default."""
    return not (meta.plan is None and plan is None and catalogue.default is None)


def no_plan_applies(customer: str) -> CLIError:
    """The error of a customer with no assigned plan, no ``--plan`` and no default plan."""
    return CLIError(
        EXIT_INVALID,
        f"no plan applies to customer {customer!r}: it has no assigned plan and the "
        "plans file has no default_plan (give --plan)",
    )


def usage_or_none(guard: Guard, customer: str, plan: str | None = None) -> Usage | None:
    """The customer's usage, or None when no plan applies to them (no default plan)."""
    catalogue = guard.catalogue
    if not catalogue.plans or not plan_applies(catalogue, guard.customer(customer), plan):
        return None
    return guard.usage(customer, plan=plan)


def is_known(guard: Guard, customer: str, meta: CustomerMeta, usage: Usage | None) -> bool:
    """Whether anything is stored about ``customer``: settings, usage or audit entries."""
    if meta != CustomerMeta():
        return True
    if usage is not None and any(status.used for status in usage.limits):
        return True
    return bool(guard.audit(customer, 1))


def unknown_customer(customer: str) -> CLIError:
    """The error of a customer nothing is stored about."""
    return CLIError(
        EXIT_INVALID,
        f"unknown customer {customer!r}: nothing is stored about it (no usage, settings or "
        "audit entries)",
    )


def check_limit_name(catalogue: PlanCatalogue, name: str) -> str:
    """``name`` if some plan of ``catalogue`` has a limit of that name, else exit code 4."""
    names = sorted({n for plan in catalogue.plans.values() for n in plan.names})
    if name not in names:
        raise CLIError(
            EXIT_INVALID,
            f"unknown limit {shown(name)}; the plans have {', '.join(names) or 'no limits'}",
        )
    return name
