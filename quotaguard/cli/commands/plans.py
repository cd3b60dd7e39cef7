"""``plans check`` and ``plans export``: plans sources, checked and written as TOML."""

from __future__ import annotations

import argparse
from typing import Any

from quotaguard import ConfigurationError
from quotaguard.cli.context import load_plans
from quotaguard.cli.errors import EXIT_CONFIG, EXIT_ERROR, EXIT_OK, CLIError
from quotaguard.cli.formatting import duration, emit, limit_document, table
from quotaguard.plan_sources import catalogue_to_toml, load_catalogue

__all__ = ["check", "export"]


def check(args: argparse.Namespace) -> int:
    """``plans check SOURCE``: load the plans, print them or the exact error (exit 3)."""
    try:
        catalogue = load_catalogue(args.file)
    except ConfigurationError as error:
        if args.json:
            emit(args.stdout, {"file": args.file, "valid": False, "error": str(error)})
        raise CLIError(EXIT_CONFIG, str(error)) from None
    plans: dict[str, dict[str, Any]] = {
        name: {"shadow": plan.shadow, "limits": [limit_document(limit) for limit in plan.limits]}
        for name, plan in catalogue.plans.items()
    }
    if args.json:
        document = {"file": args.file, "valid": True, "error": None}
        emit(args.stdout, {**document, "default_plan": catalogue.default, "plans": plans})
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
            duration(limit["window_seconds"]),
        )
        for name, body in plans.items()
        for limit in body["limits"]
    ]
    out.write(table(("plan", "limit", "kind", "quota", "unit", "window"), rows, (3,)) + "\n")
    return EXIT_OK


def export(args: argparse.Namespace) -> int:
    """``plans export [SOURCE] [--output FILE]``: the plans as an equivalent TOML file."""
    if args.source is not None:
        args.plans = args.source
    try:
        text = catalogue_to_toml(load_plans(args, required=True))
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
