"""How the CLI shows things: durations, numbers, times, aligned tables, JSON documents.

Pure functions of their arguments; the commands decide what to show, these how.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from quotaguard import Limit, Usage

__all__ = [
    "duration",
    "emit",
    "iso_time",
    "json_seconds",
    "limit_document",
    "number",
    "table",
    "usage_document",
]


def duration(seconds: float) -> str:
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


def number(value: float) -> str:
    """``value`` with thousands separators and at most one decimal: ``1,500``, ``2.5``."""
    text = f"{value:,.1f}"
    return text.removesuffix(".0")


def iso_time(at: float) -> str:
    """Seconds since the epoch as ISO 8601 UTC to the second: ``2026-01-01T00:00:00Z``."""
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def json_seconds(value: float) -> float | None:
    """A time in seconds for a JSON document: rounded to the millisecond, None for never."""
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


def emit(out: TextIO, document: Any) -> None:
    """Write ``document`` to ``out`` as indented JSON and a newline."""
    out.write(json.dumps(document, indent=2, sort_keys=False) + "\n")


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
                "refill_after": json_seconds(status.refill_after),
                "reset_after": json_seconds(status.reset_after),
            }
            for status in usage.limits
        ],
    }
