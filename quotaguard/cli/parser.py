"""The argument parser of the ``quotaguard`` command: every command, option and help text."""

from __future__ import annotations

import argparse
import getpass
from collections.abc import Callable
from typing import Any, NoReturn

from quotaguard import __version__
from quotaguard.cli.commands import changes, demo, plans, reads
from quotaguard.cli.errors import EXIT_USAGE

__all__ = ["build_parser", "default_actor"]

Handler = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line: ``quotaguard: error: ...``."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("quotaguard").strip()
        hint = f" (see: quotaguard {command} --help)" if command else " (see: quotaguard --help)"
        self.exit(EXIT_USAGE, f"quotaguard: error: {message}{hint}\n")


def default_actor() -> str:
    """``cli:`` and the user's login name, for the audit trail."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no $USER
        user = "unknown"
    return f"cli:{user}"


def _shared_options() -> tuple[argparse.ArgumentParser, ...]:
    """The parent parsers: storage and plans, the actor of changes, ``--json`` of reads."""
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
        default=default_actor(),
        help="who is making the change, for the audit trail (default: cli:$USER)",
    )
    reader = _Parser(add_help=False)
    reader.add_argument("--json", action="store_true", help="print JSON (see docs/cli.md)")
    return common, writer, reader


def _add_plans_commands(commands: Any, reader: argparse.ArgumentParser) -> None:
    group = commands.add_parser("plans", help="plans file tools", description="plans file tools")
    plan_commands = group.add_subparsers(dest="plans_command", metavar="COMMAND")
    plan_commands.required = True
    sub = plan_commands.add_parser(
        "check", help="validate a plans file", description="validate a plans file", parents=[reader]
    )
    sub.add_argument("file", metavar="SOURCE", help="a TOML file or a Python module:attribute")
    sub.set_defaults(handler=plans.check)
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
    sub.set_defaults(handler=plans.export, command="plans export")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``quotaguard`` command."""
    common, writer, reader = _shared_options()
    parser = _Parser(
        prog="quotaguard",
        description="Look at and change quotaguard customer state; run the demo.",
        epilog="Exit codes: 0 ok, 1 runtime/backend error, 2 usage error, 3 invalid plans "
        "file, 4 unknown customer/plan/limit or invalid request.",
    )
    parser.add_argument("--version", action="version", version=f"quotaguard {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    def add(name: str, handler: Handler, help_text: str, *parents: Any) -> Any:
        sub = commands.add_parser(name, help=help_text, description=help_text, parents=parents)
        sub.set_defaults(handler=handler)
        return sub

    sub = add("usage", reads.usage, "a customer's usage of every limit", common, reader)
    sub.add_argument("customer", metavar="CUSTOMER")
    sub.add_argument("--plan", help="the plan a request would name (when none is assigned)")

    sub = add("top", reads.top, "the customers nearest their caps", common, reader)
    sub.add_argument("--limit", metavar="L", help="rank by this limit (default: any limit)")
    sub.add_argument("--count", metavar="N", type=int, default=20, help="rows (default 20)")
    sub.add_argument(
        "--scan", metavar="N", type=int, default=10_000, help="customers examined (default 10000)"
    )

    sub = add("assign", changes.assign, "put a customer on a plan ('none' removes)", common, writer)
    sub.add_argument("customer", metavar="CUSTOMER")
    sub.add_argument("plan", metavar="PLAN")

    sub = add("override", changes.override, "override one limit for one customer", common, writer)
    sub.add_argument("customer", metavar="CUSTOMER")
    sub.add_argument("limit", metavar="LIMIT")
    sub.add_argument(
        "value", metavar="VALUE", help="an integer quota, a rate such as 1000/hour, or none"
    )
    sub.add_argument("--plan", help="the plan whose limit is overridden (default: the customer's)")

    help_text = "revoke a customer at once, on every worker"
    sub = add("revoke", changes.revoke, help_text, common, writer)
    sub.add_argument("customer", metavar="CUSTOMER")
    sub.add_argument("--reason", required=True, help="shown to the customer in 403 responses")
    sub.add_argument(
        "--allow-scope",
        metavar="SCOPE=PLAN",
        type=changes.scope_pair,
        action="append",
        default=[],
        help="a scope still allowed, on its own plan (repeatable)",
    )

    sub = add("restore", changes.restore, "lift a customer's revocation", common, writer)
    sub.add_argument("customer", metavar="CUSTOMER")

    sub = add("reset", changes.reset, "forget a customer's usage", common, writer)
    sub.add_argument("customer", metavar="CUSTOMER")
    sub.add_argument(
        "--limit", metavar="L", action="append", help="only this limit (repeatable; default all)"
    )

    sub = add("audit", reads.audit, "who changed what about a customer", common, reader)
    sub.add_argument("customer", metavar="CUSTOMER")
    sub.add_argument("--count", metavar="N", type=int, default=50, help="entries (default 50)")

    _add_plans_commands(commands, reader)

    sub = add("demo", demo.demo, "run the demo of a source checkout: an LLM API under load")
    sub.add_argument("--no-progress", action="store_true", help="no progress bar")
    sub.add_argument(
        "--serve",
        metavar="SECONDS",
        type=float,
        default=0.0,
        help="keep the demo server up this long afterwards, to explore it with curl",
    )
    return parser
