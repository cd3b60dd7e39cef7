"""Guard errors met while serving a request, turned into problem+json answers.

The integrations never let a quotaguard error become a 500: a plan the catalogue lacks
is a 403, a request the guard cannot decide (a cost or customer id it refuses) a 400,
a backend that cannot answer ``/usage`` a 503. Each cause is logged once (per message,
bounded), never with a credential: the guard's messages carry plan and limit names.
"""

from __future__ import annotations

import logging

from quotaguard.core.errors import (
    BackendUnavailable,
    InvalidRequestError,
    QuotaguardError,
    UnknownPlanError,
)

from .problem import Problem, ProblemTypes, bad_request, plan_unavailable, temporarily_unavailable

logger = logging.getLogger("quotaguard")

_LOGGED: set[str] = set()
_MAX_LOGGED = 256


def log_once(message: str) -> None:
    """Log a warning the first time ``message`` is seen (up to 256 distinct messages)."""
    if message in _LOGGED or len(_LOGGED) >= _MAX_LOGGED:
        return
    _LOGGED.add(message)
    logger.warning("%s", message)


def problem_for_error(error: QuotaguardError, instance: str, types: ProblemTypes) -> Problem:
    """The answer to a request whose decision raised ``error`` (re-raised if unforeseen)."""
    if isinstance(error, UnknownPlanError):
        log_once(f"quotaguard: an identity names a plan the catalogue lacks ({error})"[:400])
        return plan_unavailable(instance, types)
    if isinstance(error, InvalidRequestError):
        log_once(f"quotaguard: a request could not be decided ({error})"[:400])
        return bad_request(instance, "This request's cost or identity cannot be rate limited.")
    if isinstance(error, BackendUnavailable):
        return temporarily_unavailable(instance, types)
    raise error
