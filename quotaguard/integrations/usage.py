"""Let customers see their own usage: a JSON document and a small ASGI ``/usage`` app.

The document, for a customer on a plan with a burst limit and a weekly token cap::

    {"plan": "pro",
     "limits": [{"name": "burst", "kind": "token_bucket", "unit": "requests",
                 "quota": 60, "used": 3, "remaining": 57, "window_seconds": 60,
                 "refill_after_seconds": 1, "reset_after_seconds": 3}, ...],
     "revoked": null}

Counts are integers (remaining rounded down, used up) and times are whole seconds
rounded up, as in the headers. The customer id itself is not echoed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs

from quotaguard.core.decision import LimitStatus
from quotaguard.core.errors import QuotaguardError
from quotaguard.guard import AsyncGuard, Guard, Usage

from . import _setup
from ._refusals import problem_for_error
from ._types import Receive, Scope, Send
from .asgi import as_async_guard
from .dialects import Dialect, responses_for
from .identify import Identifier
from .problem import Problem, ProblemTypes, customer_required, instance_of, method_not_allowed
from .quota import identified

__all__ = ["UsageEndpoint", "limit_document", "usage_document"]


def _seconds_up(value: float) -> int:
    return 0 if value <= 0 else (2**53 if value == math.inf else math.ceil(value))


def limit_document(status: LimitStatus) -> dict[str, Any]:
    """One limit's usage as plain JSON-able values."""
    limit = status.limit
    return {
        "name": limit.name,
        "kind": limit.kind,
        "unit": limit.unit,
        "quota": limit.quota,
        "used": max(math.ceil(status.used - 1e-9), 0),
        "remaining": max(int(status.remaining), 0),
        "window_seconds": limit.window_seconds,
        "refill_after_seconds": _seconds_up(status.refill_after),
        "reset_after_seconds": _seconds_up(status.reset_after),
    }


def usage_document(usage: Usage) -> dict[str, Any]:
    """A customer's `Usage` as a JSON-able document (see the module docstring)."""
    revocation = usage.revocation
    return {
        "plan": usage.plan,
        "limits": [limit_document(status) for status in usage.limits],
        "revoked": None
        if revocation is None
        else {
            "reason": revocation.reason,
            "allowed_scopes": [scope for scope, _ in revocation.allow_scopes],
        },
    }


class UsageEndpoint:
    """An ASGI app answering ``GET`` (and ``HEAD``) with the caller's own usage document.

    Route to it like any ASGI app (``Route("/usage", UsageEndpoint(guard, identify))``).
    ``?scope=benchmark`` shows the plan that applies to that scope (useful for a revoked
    customer's remaining allowance). Behind `QuotaMiddleware` it reuses the middleware's
    identification; ``identify`` (None: only that) identifies requests it did not see.
    Errors are problem+json: 401 without a customer (in the wire format of ``dialect``,
    as the middleware's), 400 for a bad ``scope``, 403 for a plan the catalogue lacks,
    405 for another method, 503 while the backend is down.
    """

    def __init__(
        self,
        guard: Guard | AsyncGuard,
        identify: Identifier | Sequence[Identifier] | None = None,
        *,
        problems: ProblemTypes | None = None,
        challenge: str | None = None,
        dialect: Dialect | str = "ietf",
    ) -> None:
        self.guard = as_async_guard(guard)
        self.identify = _setup.identifier(identify)
        _setup.check_plans(self.guard, self.identify, None)
        self.problems = problems or ProblemTypes()
        self.challenge = _setup.challenge(self.identify, challenge)
        self._dialect = responses_for(dialect, problems=self.problems)

    def customer_required(self, instance: str) -> Problem:
        """The 401 refusal of a request that names no customer, in the dialect spoken."""
        if self._dialect is not None:
            return self._dialect.customer_required(instance, self.challenge)
        return customer_required(instance, self.problems, self.challenge)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request."""
        if scope["type"] != "http":
            return
        instance = instance_of(scope)
        if scope["method"] not in ("GET", "HEAD"):
            await _refuse(send, method_not_allowed(instance))
            return
        identity = await identified(scope, self.identify)
        if identity is None:
            await _refuse(send, self.customer_required(instance))
            return
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        wanted = query.get("scope", [None])[0]
        try:
            usage = await self.guard.usage(identity.customer, scope=wanted, plan=identity.plan)
        except QuotaguardError as error:
            await _refuse(send, problem_for_error(error, instance, self.problems))
            return
        body = json.dumps(usage_document(usage), separators=(",", ":")).encode()
        headers = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]
        await _send(send, 200, body, headers, scope["method"] == "HEAD")


async def _refuse(send: Send, problem: Problem) -> None:
    await _send(send, problem.status, problem.body, problem.raw_headers())


async def _send(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]], head: bool = False
) -> None:
    if not any(name == b"content-length" for name, _ in headers):
        headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})
