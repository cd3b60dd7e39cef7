"""The exception hierarchy: everything quotaguard raises derives from `QuotaguardError`."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from quotaguard.core.decision import Decision


def shown(value: object) -> str:
    """``repr(value)``, cut to a length fit for an error message."""
    try:
        text = repr(value)
    except Exception:  # a hostile __repr__ must not hide the real error
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 120 else text[:117] + "..."


class QuotaguardError(Exception):
    """Root of every error quotaguard raises."""


class ConfigurationError(QuotaguardError, ValueError):
    """A limit, plan, catalogue or guard was configured with a bad value.

    Raised at construction time; the message names the offending value.
    """


class InvalidRequestError(QuotaguardError, ValueError):
    """A call was made with bad input (negative cost, empty customer id, ...).

    Raised before any stored state is touched, so nothing has changed.
    """


class UnknownPlanError(InvalidRequestError, LookupError):
    """A plan name was used that the plan catalogue does not contain."""


class UnknownLimitError(InvalidRequestError, LookupError):
    """A limit name was used that the customer's plan does not contain."""


class LeaseError(QuotaguardError):
    """A lease could not be settled (unknown, or its record has expired)."""


class BackendUnavailable(QuotaguardError):
    """The storage backend could not be reached or answered with an error.

    The original exception is chained as ``__cause__``. The guard turns this into a
    fail-open or fail-closed decision according to its failure policy.
    """


class QuotaExceeded(QuotaguardError):
    """Raised by integrations (decorators) when a decision does not admit a call.

    The full `Decision` is available as ``decision``.
    """

    def __init__(self, decision: Decision) -> None:
        super().__init__(decision.describe())
        self.decision = decision
