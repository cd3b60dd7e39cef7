"""The ``reason`` label of ``quotaguard_backend_errors_total``."""

from __future__ import annotations

import re

__all__ = ["error_reason"]


def error_reason(error: BaseException) -> str:
    """A short label for a backend failure: timeout, connection, noscript or its class."""
    cause = error.__cause__ or error.__context__ or error
    name = type(cause).__name__
    lowered = name.lower()
    if "timeout" in lowered:
        return "timeout"
    if "connection" in lowered or isinstance(cause, ConnectionError | OSError):
        return "connection"
    if "noscript" in str(cause).lower()[:64]:
        return "noscript"
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()[:40] or "other"
