"""``usage``, ``top`` and ``audit``: looking at customers, changing nothing."""

from __future__ import annotations

import argparse
from typing import Any

from quotaguard import InvalidRequestError
from quotaguard.cli.context import (
    build_guard,
    check_limit_name,
    is_known,
    no_plan_applies,
    unknown_customer,
    usage_or_none,
)
from quotaguard.cli.errors import EXIT_OK, EXIT_USAGE, CLIError
from quotaguard.cli.formatting import (
    duration,
    emit,
    iso_time,
    json_seconds,
    number,
    table,
    usage_document,
)
from quotaguard.core import inputs

__all__ = ["audit", "top", "usage"]


def _positive_count(count: int) -> int:
    if count < 1:
        raise CLIError(EXIT_USAGE, f"--count must be at least 1, got {count}")
    return count


def usage(args: argparse.Namespace) -> int:
    """``usage CUSTOMER``: the customer's usage of every limit, as a table or JSON."""
    customer = inputs.customer_id(args.customer)
    guard = build_guard(args)
    if args.plan is not None:
        guard.catalogue[args.plan]
    meta = guard.customer(customer)
    found = usage_or_none(guard, customer, args.plan)
    if found is None:
        raise no_plan_applies(customer)
    if not is_known(guard, customer, meta, found):
        raise unknown_customer(customer)
    if args.json:
        emit(args.stdout, usage_document(found))
        return EXIT_OK
    out = args.stdout
    notes = [f"plan {found.plan}"]
    if meta.plan is not None:
        notes.append("assigned by an operator")
    if meta.overrides:
        notes.append("overrides: " + ", ".join(limit.name for limit in meta.overrides))
    if meta.shadow is not None:
        notes.append(f"shadow: {'on' if meta.shadow else 'off'}")
    out.write(f"customer {customer} ({'; '.join(notes)})\n")
    if meta.revocation is not None:
        scopes = ", ".join(f"{s} on {p}" for s, p in meta.revocation.allow_scopes) or "none"
        out.write(f"REVOKED: {meta.revocation.reason} (still allowed: {scopes})\n")
    rows = [
        (
            status.name,
            status.limit.kind,
            status.limit.unit,
            number(status.used),
            f"{status.quota:,}",
            f"{status.remaining:,}",
            f"{status.utilization:.0%}",
            duration(status.refill_after) if status.refill_after else "-",
            duration(status.reset_after) if status.reset_after else "-",
        )
        for status in found.limits
    ]
    header = ("limit", "kind", "unit", "used", "quota", "remaining", "used%", "refill in")
    out.write(table((*header, "resets in"), rows, numeric=(3, 4, 5, 6, 7, 8)) + "\n")
    return EXIT_OK


def _top_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    guard = build_guard(args)
    if args.limit is not None:
        check_limit_name(guard.catalogue, args.limit)
    rows: list[dict[str, Any]] = []
    for customer in guard.customers(args.scan):
        try:
            found = usage_or_none(guard, customer)
        except InvalidRequestError:
            continue  # e.g. a customer of a plan that is no longer in the catalogue
        if found is None:
            continue
        statuses = [s for s in found.limits if args.limit is None or s.name == args.limit]
        if not statuses:
            continue
        worst = max(statuses, key=lambda status: status.utilization)
        rows.append(
            {
                "customer": customer,
                "plan": found.plan,
                "limit": worst.name,
                "unit": worst.limit.unit,
                "used": worst.used,
                "quota": worst.quota,
                "remaining": worst.remaining,
                "utilization": round(worst.utilization, 6),
                "reset_after": json_seconds(worst.reset_after),
                "revoked": found.meta.revocation is not None,
            }
        )
    rows.sort(key=lambda row: (-row["utilization"], row["customer"]))
    return rows[: args.count]


def top(args: argparse.Namespace) -> int:
    """``top``: the customers nearest their caps, as a table or JSON."""
    _positive_count(args.count)
    rows = _top_rows(args)
    if args.json:
        emit(args.stdout, {"limit": args.limit, "customers": rows})
        return EXIT_OK
    if not rows:
        args.stdout.write("no customers with stored usage\n")
        return EXIT_OK
    lines = [
        (
            row["customer"] + (" (revoked)" if row["revoked"] else ""),
            row["plan"],
            row["limit"],
            number(row["used"]),
            f"{row['quota']:,}",
            f"{row['utilization']:.0%}",
            "-" if not row["reset_after"] else duration(row["reset_after"]),
        )
        for row in rows
    ]
    header = ("customer", "plan", "limit", "used", "quota", "used%", "resets in")
    args.stdout.write(table(header, lines, numeric=(3, 4, 5, 6)) + "\n")
    return EXIT_OK


def audit(args: argparse.Namespace) -> int:
    """``audit CUSTOMER``: who changed what about the customer, newest first."""
    customer = inputs.customer_id(args.customer)
    _positive_count(args.count)
    guard = build_guard(args, plans_required=False)
    entries = guard.audit(customer, args.count)
    if not entries:
        meta = guard.customer(customer)
        if not is_known(guard, customer, meta, usage_or_none(guard, customer)):
            raise unknown_customer(customer)
    if args.json:
        documents = [{**entry.to_dict(), "time": iso_time(entry.at)} for entry in entries]
        emit(args.stdout, {"customer": customer, "entries": documents})
        return EXIT_OK
    if not entries:
        args.stdout.write(f"customer {customer}: no audit entries\n")
        return EXIT_OK
    rows = [
        (iso_time(entry.at), entry.actor, entry.action, entry.detail, entry.reason or "")
        for entry in entries
    ]
    args.stdout.write(table(("time (UTC)", "actor", "action", "detail", "reason"), rows) + "\n")
    return EXIT_OK
