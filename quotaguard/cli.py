"""The operator command line: look at and change customer state in a running service.

::

    quotaguard usage acme --storage redis://cache:6379/0 --plans plans.toml
    quotaguard top --limit weekly --count 10
    quotaguard assign acme pro
    quotaguard override acme weekly 10000000      # or a rate "1000/hour", or none
    quotaguard revoke acme --reason "Billing review." --allow-scope benchmark=benchmark
    quotaguard restore acme
    quotaguard reset acme --limit burst
    quotaguard audit acme --count 20
    quotaguard plans check plans.toml
    quotaguard demo

Every command takes ``--storage URI`` (default: ``$QUOTAGUARD_STORAGE``, else
``memory://``, which is private to the CLI's own process and so only useful for trying
the commands) and ``--plans FILE`` (default: ``$QUOTAGUARD_PLANS``). Read commands
(``usage``, ``top``, ``audit``, ``plans check``) take ``--json``. Changes are recorded
in the backend's audit trail under ``--actor`` (default ``cli:$USER``).

Every argument is validated before anything is changed, so a bad argument never leaves
partial state. Errors are one line on stderr, ``quotaguard: error: ...``.

Exit codes:

- 0: success;
- 1: runtime error (the backend is unreachable or failed, ...);
- 2: usage error (bad or missing arguments or options, bad storage URI);
- 3: invalid configuration (the plans file cannot be read or is invalid);
- 4: unknown customer, plan or limit, or an invalid request (bad value, not revoked, ...).
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn, TextIO

from redis.exceptions import RedisError

from quotaguard._version import __version__
from quotaguard.backends.base import Backend
from quotaguard.core import inputs
from quotaguard.core.catalogue import PlanCatalogue
from quotaguard.core.customer import NO_META, CustomerMeta
from quotaguard.core.errors import (
    BackendUnavailable,
    ConfigurationError,
    InvalidRequestError,
    QuotaguardError,
    shown,
)
from quotaguard.core.policy import Limit, check_name
from quotaguard.guard import Guard, Usage, overridden_limit
from quotaguard.plan_sources import catalogue_to_toml, load_catalogue

__all__ = [
    "EXIT_CONFIG",
    "EXIT_ERROR",
    "EXIT_INVALID",
    "EXIT_OK",
    "EXIT_USAGE",
    "CLIError",
    "main",
]

EXIT_OK = 0
"""Success."""
EXIT_ERROR = 1
"""A runtime error: the backend is unreachable or failed."""
EXIT_USAGE = 2
"""Bad or missing arguments or options (argparse's own code)."""
EXIT_CONFIG = 3
"""The plans file cannot be read or is invalid."""
EXIT_INVALID = 4
"""Unknown customer, plan or limit, or an invalid request."""

MEMORY_WARNING = (
    "quotaguard: warning: storage is memory://, which is private to this process: it cannot "
    "inspect or change a running service (give --storage redis://... or set "
    "QUOTAGUARD_STORAGE)"
)


class CLIError(Exception):
    """An error with the exit code the CLI ends with."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        """The exit code."""


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line: ``quotaguard: error: ...``."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("quotaguard").strip()
        hint = f" (see: quotaguard {command} --help)" if command else " (see: quotaguard --help)"
        self.exit(EXIT_USAGE, f"quotaguard: error: {message}{hint}\n")


# -- helpers --------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    """A short human duration: ``0s``, ``45s``, ``3m05s``, ``4h10m``, ``6d23h``, ``never``."""
    if seconds == math.inf:
        return "never"
    whole = math.ceil(seconds)
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _number(value: float) -> str:
    text = f"{value:,.1f}"
    return text.removesuffix(".0")


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _json_float(value: float) -> float | None:
    return None if math.isinf(value) else round(value, 3)


def table(header: Sequence[str], rows: Iterable[Sequence[str]], numeric: Sequence[int] = ()) -> str:
    """Align ``rows`` under ``header``; columns listed in ``numeric`` align right."""
    body = [list(row) for row in rows]
    widths = [max(len(row[i]) for row in [list(header), *body]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(width) if index in numeric else cell.ljust(width)
            for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(header), line(["-" * width for width in widths]), *map(line, body)])


def _emit(out: TextIO, document: Any) -> None:
    out.write(json.dumps(document, indent=2, sort_keys=False) + "\n")


# -- building the guard ----------------------------------------------------------------


def _storage(args: argparse.Namespace) -> str:
    storage = args.storage or os.environ.get("QUOTAGUARD_STORAGE") or "memory://"
    return str(storage)


def _catalogue(args: argparse.Namespace, required: bool) -> PlanCatalogue:
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


def _guard(args: argparse.Namespace, *, plans_required: bool = True) -> Guard:
    catalogue = _catalogue(args, plans_required)
    if args.backend is not None:
        return Guard(catalogue, args.backend)
    storage = _storage(args)
    if storage.split("://", 1)[0].lower() == "memory":
        args.stderr.write(MEMORY_WARNING + "\n")
    try:
        return Guard(catalogue, storage)
    except ConfigurationError as error:
        raise CLIError(EXIT_USAGE, f"--storage: {error}") from None


def _known(guard: Guard, customer: str, meta: CustomerMeta, usage: Usage | None) -> bool:
    """Whether anything is stored about ``customer``: settings, usage or audit entries."""
    if meta != NO_META:
        return True
    if usage is not None and any(status.used for status in usage.limits):
        return True
    return bool(guard.audit(customer, 1))


def _unknown(customer: str) -> CLIError:
    return CLIError(
        EXIT_INVALID,
        f"unknown customer {customer!r}: nothing is stored about it (no usage, settings or "
        "audit entries)",
    )


def _check_customer(customer: str) -> str:
    try:
        return inputs.customer_id(customer)
    except InvalidRequestError as error:
        raise CLIError(EXIT_INVALID, str(error)) from None


def _usage_or_none(guard: Guard, customer: str, plan: str | None = None) -> Usage | None:
    """The customer's usage, or None when no plan applies to them (no default plan)."""
    if not guard.catalogue.plans:
        return None
    meta = guard.customer(customer)
    if meta.plan is None and plan is None and guard.catalogue.default is None:
        return None
    return guard.usage(customer, plan=plan)


# -- documents ------------------------------------------------------------------------


def limit_document(limit: Limit) -> dict[str, Any]:
    """A limit as JSON: name, kind, quota, unit, window in seconds."""
    return {
        "name": limit.name,
        "kind": limit.kind,
        "quota": limit.quota,
        "unit": limit.unit,
        "window_seconds": limit.window_seconds,
    }


def usage_document(usage: Usage) -> dict[str, Any]:
    """The ``usage --json`` document (see docs/cli.md)."""
    meta = usage.meta
    revocation = meta.revocation
    return {
        "customer": usage.customer,
        "plan": usage.plan,
        "assigned_plan": meta.plan,
        "shadow": meta.shadow,
        "overrides": [limit.name for limit in meta.overrides],
        "revocation": None
        if revocation is None
        else {
            "reason": revocation.reason,
            "allow_scopes": dict(revocation.allow_scopes),
            "revoked_at": revocation.revoked_at,
        },
        "limits": [
            {
                "name": status.name,
                "kind": status.limit.kind,
                "unit": status.limit.unit,
                "quota": status.quota,
                "used": status.used,
                "remaining": status.remaining,
                "utilization": round(status.utilization, 6),
                "refill_after": _json_float(status.refill_after),
                "reset_after": _json_float(status.reset_after),
            }
            for status in usage.limits
        ],
    }


# -- commands -------------------------------------------------------------------------


def _cmd_usage(args: argparse.Namespace) -> int:
    customer = _check_customer(args.customer)
    guard = _guard(args)
    if args.plan is not None:
        guard.catalogue[args.plan]
    meta = guard.customer(customer)
    usage = _usage_or_none(guard, customer, args.plan)
    if usage is None:
        raise CLIError(
            EXIT_INVALID,
            f"no plan applies to customer {customer!r}: it has no assigned plan and the "
            "plans file has no default_plan (give --plan)",
        )
    if not _known(guard, customer, meta, usage):
        raise _unknown(customer)
    if args.json:
        _emit(args.stdout, usage_document(usage))
        return EXIT_OK
    out = args.stdout
    notes = [f"plan {usage.plan}"]
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
            _number(status.used),
            f"{status.quota:,}",
            f"{status.remaining:,}",
            f"{status.utilization:.0%}",
            _duration(status.refill_after) if status.refill_after else "-",
            _duration(status.reset_after) if status.reset_after else "-",
        )
        for status in usage.limits
    ]
    header = ("limit", "kind", "unit", "used", "quota", "remaining", "used%", "refill in")
    out.write(
        table((*header, "resets in"), rows, numeric=(3, 4, 5, 6, 7, 8)) + "\n",
    )
    return EXIT_OK


def _cmd_top(args: argparse.Namespace) -> int:
    if args.count < 1:
        raise CLIError(EXIT_USAGE, f"--count must be at least 1, got {args.count}")
    guard = _guard(args)
    if args.limit is not None:
        check_limit_name(guard.catalogue, args.limit)
    rows: list[dict[str, Any]] = []
    for customer in guard.customers(args.scan):
        try:
            usage = _usage_or_none(guard, customer)
        except InvalidRequestError:
            continue  # e.g. a customer of a plan that is no longer in the catalogue
        if usage is None:
            continue
        statuses = [s for s in usage.limits if args.limit is None or s.name == args.limit]
        if not statuses:
            continue
        worst = max(statuses, key=lambda status: status.utilization)
        rows.append(
            {
                "customer": customer,
                "plan": usage.plan,
                "limit": worst.name,
                "unit": worst.limit.unit,
                "used": worst.used,
                "quota": worst.quota,
                "remaining": worst.remaining,
                "utilization": round(worst.utilization, 6),
                "reset_after": _json_float(worst.reset_after),
                "revoked": usage.meta.revocation is not None,
            }
        )
    rows.sort(key=lambda row: (-row["utilization"], row["customer"]))
    rows = rows[: args.count]
    if args.json:
        _emit(args.stdout, {"limit": args.limit, "customers": rows})
        return EXIT_OK
    if not rows:
        args.stdout.write("no customers with stored usage\n")
        return EXIT_OK
    lines = [
        (
            row["customer"] + (" (revoked)" if row["revoked"] else ""),
            row["plan"],
            row["limit"],
            _number(row["used"]),
            f"{row['quota']:,}",
            f"{row['utilization']:.0%}",
            "-" if not row["reset_after"] else _duration(row["reset_after"]),
        )
        for row in rows
    ]
    header = ("customer", "plan", "limit", "used", "quota", "used%", "resets in")
    args.stdout.write(table(header, lines, numeric=(3, 4, 5, 6)) + "\n")
    return EXIT_OK


def check_limit_name(catalogue: PlanCatalogue, name: str) -> str:
    """``name`` if some plan of ``catalogue`` has a limit of that name, else exit code 4."""
    names = sorted({n for plan in catalogue.plans.values() for n in plan.names})
    if name not in names:
        raise CLIError(
            EXIT_INVALID,
            f"unknown limit {shown(name)}; the plans have {', '.join(names) or 'no limits'}",
        )
    return name


def _done(args: argparse.Namespace, message: str) -> int:
    args.stdout.write(f"{message} (recorded in the audit trail as {args.actor})\n")
    return EXIT_OK


def _cmd_assign(args: argparse.Namespace) -> int:
    customer = _check_customer(args.customer)
    guard = _guard(args)
    plan: str | None = args.plan
    if plan == "none" and plan not in guard.catalogue:
        plan = None
    else:
        guard.catalogue[plan]  # type: ignore[index]  # UnknownPlanError -> exit 4
    guard.assign(customer, plan, actor=args.actor)
    if plan is None:
        return _done(args, f"customer {customer}: plan assignment removed")
    return _done(args, f"customer {customer}: assigned to plan {plan}")


def _override_value(text: str) -> int | str | None:
    value = text.strip()
    if value.lower() == "none":
        return None
    if value.lstrip("+-").isascii() and value.lstrip("+-").isdigit():
        number = int(value) if len(value) < 20 else 2**64  # the guard refuses it by name
        if number <= 0:
            raise CLIError(EXIT_INVALID, f"a quota must be a positive integer, got {text!r}")
        return number
    return value


def _cmd_override(args: argparse.Namespace) -> int:
    customer = _check_customer(args.customer)
    value = _override_value(args.value)
    guard = _guard(args)
    if args.plan is not None:
        guard.catalogue[args.plan]
    meta = guard.customer(customer)
    if value is None:
        if all(limit.name != args.limit for limit in meta.overrides):
            raise CLIError(
                EXIT_INVALID, f"customer {customer!r} has no override of limit {args.limit!r}"
            )
    else:
        if meta.plan is None and args.plan is None and guard.catalogue.default is None:
            raise CLIError(
                EXIT_INVALID,
                f"no plan applies to customer {customer!r}: it has no assigned plan and the "
                "plans file has no default_plan (give --plan)",
            )
        base = guard.catalogue.assigned(meta.plan, args.plan)
        try:
            current = base.limit(args.limit)
        except KeyError:
            names = ", ".join(base.names) or "none"
            raise CLIError(
                EXIT_INVALID, f"plan {base.name!r} has no limit {args.limit!r}; it has {names}"
            ) from None
        try:
            overridden_limit(current, value)  # validate before changing anything
        except (ConfigurationError, InvalidRequestError) as error:
            raise CLIError(EXIT_INVALID, str(error)) from None
    guard.override(customer, args.limit, value, plan=args.plan, actor=args.actor)
    if value is None:
        return _done(args, f"customer {customer}: override of {args.limit} removed")
    return _done(args, f"customer {customer}: {args.limit} overridden with {value}")


def _scope_pair(text: str) -> tuple[str, str]:
    scope, sep, plan = text.partition("=")
    if not sep or not scope or not plan:
        raise argparse.ArgumentTypeError(f"expected SCOPE=PLAN, got {text!r}")
    return scope.strip(), plan.strip()


def _cmd_revoke(args: argparse.Namespace) -> int:
    customer = _check_customer(args.customer)
    reason = args.reason.strip()
    if not reason:
        raise CLIError(EXIT_INVALID, "--reason must not be empty: it is shown to the customer")
    try:
        inputs.text(reason, "--reason")
    except InvalidRequestError as error:
        raise CLIError(EXIT_INVALID, str(error)) from None
    scopes: dict[str, str] = {}
    for scope, plan in args.allow_scope:
        try:
            check_name(scope, "scope")
        except ConfigurationError as error:
            raise CLIError(EXIT_INVALID, str(error)) from None
        if scope in scopes and scopes[scope] != plan:
            raise CLIError(EXIT_INVALID, f"scope {scope!r} is given twice with different plans")
        scopes[scope] = plan
    guard = _guard(args, plans_required=bool(scopes))
    for plan in scopes.values():
        guard.catalogue[plan]
    guard.revoke(customer, reason, allow_scopes=scopes, actor=args.actor)
    allowed = ", ".join(f"{s} on plan {p}" for s, p in sorted(scopes.items())) or "nothing"
    return _done(args, f"customer {customer}: revoked; still allowed: {allowed}")


def _cmd_restore(args: argparse.Namespace) -> int:
    customer = _check_customer(args.customer)
    guard = _guard(args, plans_required=False)
    if guard.customer(customer).revocation is None:
        raise CLIError(EXIT_INVALID, f"customer {customer!r} is not revoked; nothing to restore")
    guard.restore(customer, actor=args.actor)
    return _done(args, f"customer {customer}: revocation lifted")


def _cmd_reset(args: argparse.Namespace) -> int:
    customer = _check_customer(args.customer)
    guard = _guard(args)
    limits: list[str] | None = None
    if args.limit:
        limits = [check_limit_name(guard.catalogue, name) for name in args.limit]
    meta = guard.customer(customer)
    if not _known(guard, customer, meta, _usage_or_none(guard, customer)):
        raise _unknown(customer)
    guard.reset(customer, limits, actor=args.actor)
    which = "all limits" if limits is None else ", ".join(sorted(set(limits)))
    return _done(args, f"customer {customer}: usage of {which} reset")


def _cmd_audit(args: argparse.Namespace) -> int:
    customer = _check_customer(args.customer)
    if args.count < 1:
        raise CLIError(EXIT_USAGE, f"--count must be at least 1, got {args.count}")
    guard = _guard(args, plans_required=False)
    entries = guard.audit(customer, args.count)
    if not entries:
        meta = guard.customer(customer)
        if not _known(guard, customer, meta, _usage_or_none(guard, customer)):
            raise _unknown(customer)
    if args.json:
        documents = [{**entry.to_dict(), "time": _iso(entry.at)} for entry in entries]
        _emit(args.stdout, {"customer": customer, "entries": documents})
        return EXIT_OK
    if not entries:
        args.stdout.write(f"customer {customer}: no audit entries\n")
        return EXIT_OK
    rows = [
        (_iso(entry.at), entry.actor, entry.action, entry.detail, entry.reason or "")
        for entry in entries
    ]
    args.stdout.write(table(("time (UTC)", "actor", "action", "detail", "reason"), rows) + "\n")
    return EXIT_OK


def _cmd_plans_check(args: argparse.Namespace) -> int:
    try:
        catalogue = load_catalogue(args.file)
    except ConfigurationError as error:
        if args.json:
            _emit(args.stdout, {"file": args.file, "valid": False, "error": str(error)})
        raise CLIError(EXIT_CONFIG, str(error)) from None
    plans: dict[str, dict[str, Any]] = {
        name: {"shadow": plan.shadow, "limits": [limit_document(limit) for limit in plan.limits]}
        for name, plan in catalogue.plans.items()
    }
    if args.json:
        _emit(
            args.stdout,
            {
                "file": args.file,
                "valid": True,
                "error": None,
                "default_plan": catalogue.default,
                "plans": plans,
            },
        )
        return EXIT_OK
    out = args.stdout
    default = catalogue.default or "none"
    out.write(f"{args.file}: OK, {len(plans)} plan(s), default plan: {default}\n")
    rows = [
        (
            name + (" (shadow)" if body["shadow"] else ""),
            limit["name"],
            limit["kind"],
            f"{limit['quota']:,}",
            limit["unit"],
            _duration(limit["window_seconds"]),
        )
        for name, body in plans.items()
        for limit in body["limits"]
    ]
    out.write(table(("plan", "limit", "kind", "quota", "unit", "window"), rows, (3,)) + "\n")
    return EXIT_OK


def _cmd_plans_export(args: argparse.Namespace) -> int:
    if args.source is not None:
        args.plans = args.source
    try:
        text = catalogue_to_toml(_catalogue(args, required=True))
    except ConfigurationError as error:
        raise CLIError(EXIT_CONFIG, str(error)) from None
    if args.output is None:
        args.stdout.write(text)
        return EXIT_OK
    try:
        with open(args.output, "w", encoding="utf-8") as file:
            file.write(text)
    except OSError as error:
        raise CLIError(EXIT_ERROR, f"cannot write {args.output!r}: {error}") from None
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from quotaguard.demo import run_demo

    return run_demo(
        out=args.stdout,
        progress=not args.no_progress,
        serve=args.serve,
    )


# -- the parser -----------------------------------------------------------------------


def _default_actor() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no $USER
        user = "unknown"
    return f"cli:{user}"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``quotaguard`` command."""
    common = _Parser(add_help=False)
    common.add_argument(
        "--storage",
        metavar="URI",
        help="memory://, redis://host:port/db, rediss://..., redis+cluster://host:port,host:port "
        "(default: $QUOTAGUARD_STORAGE, else memory://)",
    )
    common.add_argument(
        "--plans",
        metavar="SOURCE",
        help="the plans: a TOML file or a Python module:attribute (default: $QUOTAGUARD_PLANS)",
    )
    writer = _Parser(add_help=False)
    writer.add_argument(
        "--actor",
        default=_default_actor(),
        help="who is making the change, for the audit trail (default: cli:$USER)",
    )
    reader = _Parser(add_help=False)
    reader.add_argument("--json", action="store_true", help="print JSON (see docs/cli.md)")

    parser = _Parser(
        prog="quotaguard",
        description="Look at and change quotaguard customer state; run the demo.",
        epilog="Exit codes: 0 ok, 1 runtime/backend error, 2 usage error, 3 invalid plans "
        "file, 4 unknown customer/plan/limit or invalid request.",
    )
    parser.add_argument("--version", action="version", version=f"quotaguard {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    def add(
        name: str, handler: Callable[[argparse.Namespace], int], help_text: str, *parents: Any
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text, parents=parents)
        sub.set_defaults(handler=handler)
        return sub

    sub = add("usage", _cmd_usage, "a customer's usage of every limit", common, reader)
    sub.add_argument("customer", metavar="CUSTOMER")
    sub.add_argument("--plan", help="the plan a request would name (when none is assigned)")

    sub = add("top", _cmd_top, "the customers nearest their caps", common, reader)
    sub.add_argument("--limit", metavar="L", help="rank by this limit (default: any limit)")
    sub.add_argument("--count", metavar="N", type=int, default=20, help="rows (default 20)")
    sub.add_argument(
        "--scan", metavar="N", type=int, default=10_000, help="customers examined (default 10000)"
    )

    sub = add("assign", _cmd_assign, "put a customer on a plan ('none' removes)", common, writer)
    sub.add_argument("customer", metavar="CUSTOMER")
    sub.add_argument("plan", metavar="PLAN")

    sub = add("override", _cmd_override, "override one limit for one customer", common, writer)
    sub.add_argument("customer", metavar="CUSTOMER")
    sub.add_argument("limit", metavar="LIMIT")
    sub.add_argument(
        "value", metavar="VALUE", help="an integer quota, a rate such as 1000/hour, or none"
    )
    sub.add_argument("--plan", help="the plan whose limit is overridden (default: the customer's)")

    sub = add("revoke", _cmd_revoke, "revoke a customer at once, on every worker", common, writer)
    sub.add_argument("customer", metavar="CUSTOMER")
    sub.add_argument("--reason", required=True, help="shown to the customer in 403 responses")
    sub.add_argument(
        "--allow-scope",
        metavar="SCOPE=PLAN",
        type=_scope_pair,
        action="append",
        default=[],
        help="a scope still allowed, on its own plan (repeatable)",
    )

    sub = add("restore", _cmd_restore, "lift a customer's revocation", common, writer)
    sub.add_argument("customer", metavar="CUSTOMER")

    sub = add("reset", _cmd_reset, "forget a customer's usage", common, writer)
    sub.add_argument("customer", metavar="CUSTOMER")
    sub.add_argument(
        "--limit", metavar="L", action="append", help="only this limit (repeatable; default all)"
    )

    sub = add("audit", _cmd_audit, "who changed what about a customer", common, reader)
    sub.add_argument("customer", metavar="CUSTOMER")
    sub.add_argument("--count", metavar="N", type=int, default=50, help="entries (default 50)")

    plans = commands.add_parser("plans", help="plans file tools", description="plans file tools")
    plan_commands = plans.add_subparsers(dest="plans_command", metavar="COMMAND")
    plan_commands.required = True
    sub = plan_commands.add_parser(
        "check", help="validate a plans file", description="validate a plans file", parents=[reader]
    )
    sub.add_argument("file", metavar="SOURCE", help="a TOML file or a Python module:attribute")
    sub.set_defaults(handler=_cmd_plans_check)
    sub = plan_commands.add_parser(
        "export",
        help="write plans as a TOML plans file",
        description="write plans (e.g. defined in Python) as the equivalent TOML plans file",
    )
    sub.add_argument(
        "source",
        metavar="SOURCE",
        nargs="?",
        help="a TOML file or a Python module:attribute (default: --plans, $QUOTAGUARD_PLANS)",
    )
    sub.add_argument("--plans", help=argparse.SUPPRESS)
    sub.add_argument("--output", "-o", metavar="FILE", help="write here instead of stdout")
    sub.set_defaults(handler=_cmd_plans_export, command="plans export")

    sub = add("demo", _cmd_demo, "run the demo: an LLM API under simulated load (no Redis)")
    sub.add_argument("--no-progress", action="store_true", help="no progress bar")
    sub.add_argument(
        "--serve",
        metavar="SECONDS",
        type=float,
        default=0.0,
        help="keep the demo server up this long afterwards, to explore it with curl",
    )
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    backend: Backend | None = None,
) -> int:
    """Run the CLI; returns the exit code (see the module docstring).

    ``argv`` defaults to ``sys.argv[1:]``. ``backend``, when given, is used instead of
    ``--storage`` (to embed the CLI, or to run several commands on one memory backend).
    """
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    parser = build_parser()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            args = parser.parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    args.stdout = out
    args.stderr = err
    args.backend = backend
    for option in ("storage", "plans"):
        if not hasattr(args, option):
            setattr(args, option, None)
    try:
        code: int = args.handler(args)
        return code
    except CLIError as error:
        err.write(f"quotaguard: error: {error}\n")
        return error.code
    except ConfigurationError as error:
        err.write(f"quotaguard: error: {error}\n")
        return EXIT_CONFIG
    except InvalidRequestError as error:
        err.write(f"quotaguard: error: {error}\n")
        return EXIT_INVALID
    except BackendUnavailable as error:
        err.write(f"quotaguard: error: backend unavailable: {error}\n")
        return EXIT_ERROR
    except (QuotaguardError, OSError, RedisError) as error:
        err.write(f"quotaguard: error: {error}\n")
        return EXIT_ERROR
    except KeyboardInterrupt:
        err.write("quotaguard: error: interrupted\n")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
