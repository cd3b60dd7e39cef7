"""The failure policy: what a decision is when the backend cannot be reached."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from quotaguard.core.decision import Decision, Outcome
from quotaguard.core.errors import BackendUnavailable, ConfigurationError, shown
from quotaguard.core.request import Request

from .observers import Observer, tell_backend_error

logger = logging.getLogger("quotaguard")

LOG_EVERY = 10.0
"""At most one warning about an unavailable backend per this many seconds."""


def check_failure(failure: object) -> str:
    """The failure policy, "open" or "closed"; `ConfigurationError` for anything else."""
    if not isinstance(failure, str) or failure not in ("open", "closed"):
        raise ConfigurationError(f"failure must be 'open' or 'closed', got {shown(failure)}")
    return failure


class FailureLog:
    """Remembers when the guard last warned about its backend (rate-limits the log)."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last = 0.0
        """When the last warning was logged (``time.monotonic()``)."""

    def failed(
        self,
        failure: str,
        backend: str,
        request: Request,
        error: BackendUnavailable,
        observers: Sequence[Observer],
    ) -> Decision:
        """The decision for ``request`` when ``backend`` failed: log, tell, apply ``failure``.

        Fail-open admits (outcome ``fail_open``), fail-closed refuses (``fail_closed``,
        retry after 1 second); neither knows a plan or limit statuses.
        """
        now = time.monotonic()
        if now - self.last > LOG_EVERY:
            self.last = now
            logger.warning(
                "quotaguard backend %s unavailable (fail-%s): %s", backend, failure, error
            )
        tell_backend_error(observers, backend, error)
        customer, cost, scope = request.customer, request.cost, request.scope
        if failure == "open":
            return Decision(
                True, Outcome.FAIL_OPEN, customer, None, scope, cost, (), 0.0, str(error)
            )
        return Decision(
            False, Outcome.FAIL_CLOSED, customer, None, scope, cost, (), 1.0, str(error)
        )
