"""FastAPI helpers: a per-route limit dependency, problem+json errors and a ``/usage`` route.

Importing this module imports FastAPI; nothing else in quotaguard does. ::

    from quotaguard.integrations.fastapi import RateLimit, install, usage_router

    app = FastAPI()
    install(app)                                   # problem+json for refusals
    app.include_router(usage_router(guard, identify))  # GET /usage

    @app.post("/v1/embed", dependencies=[Depends(RateLimit(guard, identify, cost=5))])
    async def embed(...): ...

The dependency decides once per request (all of the plan's limits at once) and puts
``RateLimit-Policy`` / ``RateLimit`` on the response FastAPI builds for the endpoint's
return value. Refusals raise `QuotaHTTPException` (an ``HTTPException``): after
`install` they are answered with the same problem+json bodies as the middleware.
For costs known only after the response (streamed tokens) and for concurrency slots held
while a request runs, use `quotaguard.integrations.asgi.QuotaMiddleware` with `Route`
rules instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Request, Response

from quotaguard.core.decision import Decision, Outcome
from quotaguard.core.errors import QuotaguardError
from quotaguard.core.policy import Cost
from quotaguard.guard import AsyncGuard, Guard

from . import _setup
from ._refusals import problem_for_error
from .asgi import as_async_guard
from .dialects import Dialect, responses_for
from .headers import HeaderBuilder, HeaderOptions
from .identify import Identifier, Identity
from .problem import (
    Problem,
    ProblemTypes,
    customer_required,
    instance_of,
    problem_for,
)
from .quota import identified
from .usage import UsageEndpoint, usage_document

__all__ = [
    "QuotaHTTPException",
    "RateLimit",
    "install",
    "quota_exception_handler",
    "usage_router",
]


class QuotaHTTPException(HTTPException):
    """A refusal (401/403/429/503) carrying its RFC 9457 problem document."""

    def __init__(self, problem: Problem, extra: Sequence[tuple[bytes, bytes]] = ()) -> None:
        headers = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in (*problem.headers, *extra)
        }
        super().__init__(problem.status, detail=problem.document, headers=headers)
        self.problem = problem
        """The problem to send."""


async def quota_exception_handler(request: Request, exc: Exception) -> Response:
    """Answer a `QuotaHTTPException` with its problem+json body and headers."""
    assert isinstance(exc, QuotaHTTPException)
    return Response(
        exc.problem.body,
        status_code=exc.status_code,
        headers=exc.headers,
        media_type=exc.problem.content_type,
    )


def install(app: FastAPI) -> None:
    """Register `quota_exception_handler` on ``app``."""
    app.add_exception_handler(QuotaHTTPException, quota_exception_handler)


class RateLimit:
    """A FastAPI dependency that limits the routes it is attached to.

    ``Depends(RateLimit(guard, identify, cost=1, scope=None))``; the dependency's value
    is the `Decision`. ``cost`` is a number of ``unit`` (default "requests"; None
    charges it to every limit), a per-unit mapping, or a callable given the `Request`.
    When the middleware has already identified the request, that identity is reused;
    else ``identify`` (None: nobody) and then ``anonymous`` apply, as for the middleware.
    A quotaguard error is answered as a problem (400/403), never a 500. ``dialect``
    (``"ietf"``, ``"openai"``, ``"anthropic"`` or a `Dialect`) shapes the headers and
    refusals.
    """

    def __init__(
        self,
        guard: Guard | AsyncGuard,
        identify: Identifier | Sequence[Identifier] | None = None,
        *,
        cost: Cost | Any = 1,
        unit: str | None = "requests",
        scope: str | None = None,
        anonymous: Identity | str | None = None,
        headers: HeaderOptions | None = None,
        problems: ProblemTypes | None = None,
        challenge: str | None = None,
        dialect: Dialect | str = "ietf",
    ) -> None:
        self.guard = as_async_guard(guard)
        self.cost = cost
        self.unit = unit
        self.scope = scope
        self.identify = _setup.identifier(identify)
        self.anonymous = _setup.anonymous(anonymous)
        _setup.check_plans(self.guard, self.identify, self.anonymous)
        self.problems = problems or ProblemTypes()
        self.challenge = _setup.challenge(self.identify, challenge)
        options = headers or HeaderOptions()
        self._headers = HeaderBuilder(options, self.guard.clock)
        self._hint = options.concurrency_retry_after
        self._dialect = responses_for(
            dialect,
            self.guard.catalogue,
            problems=self.problems,
            ietf=self._headers,
            clock=self.guard.clock,
        )

    async def _identity(self, request: Request) -> Identity | None:
        found = await identified(request.scope, self.identify)
        return found if found is not None else self.anonymous

    async def __call__(self, request: Request, response: Response) -> Decision:
        """Decide the request; raise `QuotaHTTPException` when it is refused."""
        identity = await self._identity(request)
        instance = instance_of(request.scope)
        if identity is None:
            if self._dialect is not None:
                raise QuotaHTTPException(self._dialect.customer_required(instance, self.challenge))
            raise QuotaHTTPException(customer_required(instance, self.problems, self.challenge))
        cost = self.cost(request) if callable(self.cost) else self.cost
        if self.unit is not None and isinstance(cost, int | float):
            cost = {self.unit: cost}
        try:
            decision = await self.guard.acquire(
                identity.customer, cost, scope=self.scope, plan=identity.plan
            )
        except QuotaguardError as error:
            raise QuotaHTTPException(problem_for_error(error, instance, self.problems)) from None
        if self._dialect is not None:
            extra = self._dialect.headers(decision)
            problem = None if decision.allowed else self._dialect.refusal(decision, instance)
        else:
            extra = self._headers(decision) if decision.outcome is not Outcome.FAIL_OPEN else []
            problem = problem_for(decision, instance, self.problems, self._hint)
        if problem is not None:
            raise QuotaHTTPException(problem, extra)
        for name, value in extra:
            response.headers[name.decode("latin-1")] = value.decode("latin-1")
        return decision


def usage_router(
    guard: Guard | AsyncGuard,
    identify: Identifier | Sequence[Identifier] | None = None,
    *,
    path: str = "/usage",
    problems: ProblemTypes | None = None,
    challenge: str | None = None,
    dialect: Dialect | str = "ietf",
) -> APIRouter:
    """An ``APIRouter`` with ``GET {path}``: the caller's remaining quota per limit.

    ``?scope=benchmark`` shows the plan that applies to that scope. The response is the
    document of `quotaguard.integrations.usage.usage_document`; errors are problem+json
    as for `quotaguard.integrations.usage.UsageEndpoint` (401 in the wire format of
    ``dialect``, 400, 403, 503); other methods than GET and HEAD get FastAPI's 405.
    """
    endpoint = UsageEndpoint(
        guard, identify, problems=problems, challenge=challenge, dialect=dialect
    )
    router = APIRouter()

    @router.api_route(path, methods=["GET", "HEAD"], summary="Your remaining quota per limit")
    async def usage(request: Request, scope: str | None = None) -> dict[str, Any]:
        identity = await identified(request.scope, endpoint.identify)
        instance = instance_of(request.scope)
        if identity is None:
            raise QuotaHTTPException(endpoint.customer_required(instance))
        try:
            found = await endpoint.guard.usage(identity.customer, scope=scope, plan=identity.plan)
        except QuotaguardError as error:
            raise QuotaHTTPException(
                problem_for_error(error, instance, endpoint.problems)
            ) from None
        return usage_document(found)

    return router
