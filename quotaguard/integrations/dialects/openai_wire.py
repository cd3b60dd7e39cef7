"""The OpenAI dialect: ``x-ratelimit-*`` headers and ``{"error": {...}}`` bodies.

Headers, per family (``requests``, ``tokens``), for the most restrictive limit shown
under it::

    x-ratelimit-limit-requests: 60
    x-ratelimit-remaining-requests: 59
    x-ratelimit-reset-requests: 1s
    x-ratelimit-limit-tokens: 200000
    x-ratelimit-remaining-tokens: 199200
    x-ratelimit-reset-tokens: 4h59m0s

Bodies: ``{"error": {"message", "type", "param", "code"}}``, the message being
quotaguard's own sentence.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from quotaguard.core.decision import LimitStatus

from .config import FAMILIES
from .values import duration, remaining, seconds_up

__all__ = ["ERRORS", "error_document", "family_headers"]

ERRORS: Mapping[str, tuple[int, str, str | None]] = {
    # kind: (status, type, code); a "limited" type is the family of the limit that refused
    "limited": (429, "requests", "rate_limit_exceeded"),
    "exhausted": (429, "insufficient_quota", "insufficient_quota"),
    "revoked": (403, "invalid_request_error", "access_revoked"),
    "unavailable": (503, "server_error", "service_unavailable"),
    "unidentified": (401, "invalid_request_error", "invalid_api_key"),
}
"""Per refusal kind: the status, ``error.type`` and ``error.code``."""


# per family: the header names, encoded once
_NAMES = {
    family: tuple(
        f"x-ratelimit-{field}-{family}".encode() for field in ("limit", "remaining", "reset")
    )
    for family in FAMILIES["openai"]
}


def family_headers(picked: Mapping[str, LimitStatus]) -> list[tuple[bytes, bytes]]:
    """The ``x-ratelimit-*`` lines for the limit picked per family (limits first, as OpenAI)."""
    limits: list[tuple[bytes, bytes]] = []
    left: list[tuple[bytes, bytes]] = []
    resets: list[tuple[bytes, bytes]] = []
    for family, status in picked.items():
        names = _NAMES[family]
        limits.append((names[0], str(status.limit.quota).encode()))
        left.append((names[1], str(remaining(status)).encode()))
        resets.append((names[2], duration(seconds_up(status.reset_after)).encode()))
    return limits + left + resets


def error_document(kind: str, message: str, family: str | None = None) -> tuple[int, Any]:
    """(status, body document) of a refusal of ``kind`` (see `ERRORS`).

    ``family`` is the family of the limit that refused a ``limited`` request.
    """
    status, kind_type, code = ERRORS[kind]
    if kind == "limited" and family is not None:
        kind_type = family
    return status, {"error": {"message": message, "type": kind_type, "param": None, "code": code}}
