"""The Anthropic dialect: ``anthropic-ratelimit-*`` headers and ``{"type": "error"}`` bodies.

Per family (``requests``, ``tokens``, ``input-tokens``, ``output-tokens``), for the most
restrictive limit shown under it, with the reset in RFC 3339::

    anthropic-ratelimit-tokens-limit: 200000
    anthropic-ratelimit-tokens-remaining: 199200
    anthropic-ratelimit-tokens-reset: 2026-01-01T05:00:00Z

and the unified family Claude Code reads for its 5-hour and weekly caps, with resets as
Unix seconds::

    anthropic-ratelimit-unified-status: allowed_warning
    anthropic-ratelimit-unified-5h-status: allowed_warning
    anthropic-ratelimit-unified-5h-utilization: 0.85
    anthropic-ratelimit-unified-5h-reset: 1767243600
    anthropic-ratelimit-unified-7d-status: allowed
    anthropic-ratelimit-unified-7d-utilization: 0.12
    anthropic-ratelimit-unified-7d-reset: 1767830400
    anthropic-ratelimit-unified-representative-claim: five_hour
    anthropic-ratelimit-unified-reset: 1767243600

A window's status is ``rejected`` while it refuses, ``allowed_warning`` from the
dialect's ``warning_at`` utilisation, else ``allowed``; its reset is when it admits again
(refusing) or when its usage has rolled off entirely (admitting, or refusing a cost that
can never fit). The representative
claim is the refusing window with the longest wait, else the most used one; the unified
status and reset are that window's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from quotaguard.core.decision import LimitStatus

from .config import FAMILIES, UNIFIED_CLAIMS
from .values import epoch_seconds, most_used, remaining, rfc3339, utilization

__all__ = ["ERRORS", "error_document", "family_headers", "unified_headers", "window_status"]

ERRORS: Mapping[str, tuple[int, str]] = {
    # kind: (status, error.type)
    "limited": (429, "rate_limit_error"),
    "exhausted": (429, "rate_limit_error"),
    "revoked": (403, "permission_error"),
    "unavailable": (529, "overloaded_error"),
    "unidentified": (401, "authentication_error"),
}
"""Per refusal kind: the status and ``error.type``."""

_UNIFIED = b"anthropic-ratelimit-unified-"
# per family, and per unified window: the header names, encoded once
_FAMILY_NAMES = {
    family: tuple(
        f"anthropic-ratelimit-{family}-{field}".encode()
        for field in ("limit", "remaining", "reset")
    )
    for family in FAMILIES["anthropic"]
}
_WINDOW_NAMES = {
    window: tuple(
        _UNIFIED + f"{window}-{field}".encode() for field in ("status", "utilization", "reset")
    )
    for window in UNIFIED_CLAIMS
}
_CLAIMS = {window: claim.encode() for window, claim in UNIFIED_CLAIMS.items()}


def family_headers(picked: Mapping[str, LimitStatus], now: float) -> list[tuple[bytes, bytes]]:
    """The per-family lines for the limit picked per family (``now`` in Unix seconds)."""
    lines: list[tuple[bytes, bytes]] = []
    for family, status in picked.items():
        limit, left, reset = _FAMILY_NAMES[family]
        lines.append((limit, str(status.limit.quota).encode()))
        lines.append((left, str(remaining(status)).encode()))
        lines.append((reset, rfc3339(now, status.reset_after).encode()))
    return lines


def window_status(status: LimitStatus, warning_at: float) -> str:
    """``rejected``, ``allowed_warning`` or ``allowed`` for one unified window."""
    if not status.allowed:
        return "rejected"
    if status.used / status.limit.quota >= warning_at:
        return "allowed_warning"
    return "allowed"


def _reset(status: LimitStatus, now: float) -> int:
    # a cost that can never fit (retry_after is inf) is shown the window's own reset
    wait = status.retry_after
    return epoch_seconds(now, status.reset_after if status.allowed or wait == math.inf else wait)


def unified_headers(
    windows: Mapping[str, LimitStatus], now: float, warning_at: float
) -> list[tuple[bytes, bytes]]:
    """The ``anthropic-ratelimit-unified-*`` lines for the limit picked per window."""
    if not windows:
        return []
    lines: list[tuple[bytes, bytes]] = []
    shown: dict[str, tuple[bytes, bytes]] = {}
    for window, status in windows.items():
        names = _WINDOW_NAMES[window]
        state = shown[window] = (
            window_status(status, warning_at).encode(),
            str(_reset(status, now)).encode(),
        )
        lines.append((names[0], state[0]))
        lines.append((names[1], utilization(status).encode()))
        lines.append((names[2], state[1]))
    claim = most_used(list(windows.values()))
    window = next(window for window, status in windows.items() if status is claim)
    lines.append((_UNIFIED + b"status", shown[window][0]))
    lines.append((_UNIFIED + b"representative-claim", _CLAIMS[window]))
    lines.append((_UNIFIED + b"reset", shown[window][1]))
    return lines


def error_document(kind: str, message: str, overloaded_status: int = 529) -> tuple[int, Any]:
    """(status, body document) of a refusal of ``kind`` (see `ERRORS`)."""
    status, error_type = ERRORS[kind]
    if kind == "unavailable":
        status = overloaded_status
    return status, {"type": "error", "error": {"type": error_type, "message": message}}
