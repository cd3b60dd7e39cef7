"""`QuotaMiddleware`: a pure ASGI middleware that applies a guard to every HTTP request.

::

    app = QuotaMiddleware(app, AsyncGuard(plans, default_plan="free"),
                          identify=APIKey(lookup=customers.get), routes=[exempt("/healthz")])

Each request is identified, matched to a route rule, decided (all the plan's limits at
once), then either refused with a problem+json body (400/401/403/429/503) or served with
``RateLimit-Policy`` / ``RateLimit`` headers; no quotaguard error becomes a 500. A
route whose actual cost is known only after the response reserves its estimate and
settles once the body is complete; an error, a client disconnect or a cancelled stream
still settles and frees the slot.
Websocket and lifespan scopes pass straight through.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from quotaguard.core.decision import Outcome
from quotaguard.core.errors import ConfigurationError, QuotaguardError
from quotaguard.core.policy import Concurrency, Cost
from quotaguard.guard import AsyncGuard, Guard

from . import _setup
from ._body import read_body, replaying
from ._refusals import problem_for_error
from ._settling import Settling
from ._types import ASGIApp, Message, RawHeaders, Receive, Scope, Send
from .dialects import Dialect, dialect_of, responses_by_route
from .headers import HeaderBuilder, HeaderOptions
from .identify import Identifier, Identity
from .problem import Problem, ProblemTypes, customer_required, instance_of, problem_for
from .quota import SCOPE_KEY, RequestQuota, add_cost, report_cost, request_quota
from .routes import JSONBody, Route, Routes

__all__ = ["QuotaMiddleware", "RequestQuota", "add_cost", "report_cost", "request_quota"]


def as_async_guard(guard: Guard | AsyncGuard) -> AsyncGuard:
    """An `AsyncGuard` for ``guard``; a sync `Guard` is accepted on the memory backend only."""
    if isinstance(guard, AsyncGuard):
        return guard
    if isinstance(guard, Guard):
        try:
            return AsyncGuard.sharing(guard)
        except ConfigurationError:
            pass
    raise ConfigurationError(
        "the ASGI integrations need an AsyncGuard (a sync Guard is accepted only on the "
        f"memory backend), got {guard!r}"
    )


class QuotaMiddleware:
    """Rate limits and quotas for every HTTP request of an ASGI app.

    ``identify`` (required): an identifier or a list tried in order, e.g.
    ``APIKey(lookup=customers.get)``.
    ``anonymous``: the plan (or `Identity`) for unidentified requests; None answers 401
    with ``WWW-Authenticate: challenge`` (by default each credential kind's challenge).
    ``routes``: `Route` rules (cost, scope, exemption, settling). ``headers`` and
    ``problems`` configure the response headers and the problem ``type`` URIs. Plans
    named by ``anonymous`` or by a `ClientIP` are checked here; a plan named at run time
    (by a lookup or a token claim) that the catalogue lacks answers 403.
    ``dialect``: ``"ietf"`` (default), ``"openai"`` or ``"anthropic"`` (or a `Dialect`),
    the wire format of every response quotaguard writes; a `Route` may override it.
    """

    def __init__(
        self,
        app: ASGIApp,
        guard: Guard | AsyncGuard,
        *,
        identify: Identifier | Sequence[Identifier] | None = None,
        routes: Routes | Iterable[Route] = (),
        anonymous: Identity | str | None = None,
        headers: HeaderOptions | None = None,
        problems: ProblemTypes | None = None,
        challenge: str | None = None,
        dialect: Dialect | str = "ietf",
    ) -> None:
        if identify is None:
            raise ConfigurationError(
                "QuotaMiddleware needs identify=, e.g. APIKey(lookup=customers.get) "
                "(see docs/security.md)"
            )
        self.app = app
        self.guard = as_async_guard(guard)
        self.routes = routes if isinstance(routes, Routes) else Routes(routes)
        self.identify = _setup.identifier(identify)
        self.anonymous = _setup.anonymous(anonymous)
        _setup.check_plans(self.guard, self.identify, self.anonymous)
        self.problems = problems or ProblemTypes()
        self.challenge = _setup.challenge(self.identify, challenge)
        options = headers or HeaderOptions()
        self._headers = HeaderBuilder(options, self.guard.clock)
        self._hint = options.concurrency_retry_after
        limits = [limit for plan in self.guard.catalogue.plans.values() for limit in plan.limits]
        # plans with a concurrency limit need a lease per request
        self._hold = any(isinstance(limit, Concurrency) for limit in limits)
        # when every limit counts requests, {"requests": n} is the plain number n
        self._plain = all(limit.unit == "requests" for limit in limits)
        # per route (by id; `routes` keeps them alive): (fixed cost or None, reserve a lease)
        self._how: dict[int, tuple[Cost | None, bool]] = {}
        for route in (*self.routes.rules, self.routes.default):
            cost = route.fixed_cost
            if cost is not None and self._plain and route.unit == "requests":
                cost = route.cost  # type: ignore[assignment]
            self._how[id(route)] = (cost, route.deferred or self._hold)
        # per route (by id) that speaks a provider's dialect: its responses
        self._dialects = responses_by_route(
            (*self.routes.rules, self.routes.default),
            dialect_of(dialect),
            self.guard.catalogue,
            problems=self.problems,
            ietf=self._headers,
            clock=self.guard.clock,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = self.routes.match(scope["method"], scope["path"])
        if route.exempt:
            await self.app(scope, receive, send)
            return
        identity: Any = self.identify(scope)
        if identity is not None and identity.__class__ is not Identity:
            identity = await identity
        if identity is None:
            identity = self.anonymous
            if identity is None:
                problem = customer_required(instance_of(scope), self.problems, self.challenge)
                if id(route) in self._dialects:
                    problem = self._dialects[id(route)].customer_required(
                        instance_of(scope), self.challenge
                    )
                await _refuse(problem, [], send)
                return
        cost, reserve = self._how[id(route)]
        if cost is None:
            rule = route.cost
            if isinstance(rule, JSONBody):
                read = await read_body(scope, receive, rule.max_bytes)
                if read is None:
                    return  # the client left while sending its body: nobody to answer
                cost = route.estimate(read[0])
                receive = replaying(read[1], receive)
            else:
                cost = route.cost_of(scope)
        lease = None
        guard = self.guard
        try:
            if reserve:
                lease = await guard.reserve(
                    identity.customer, cost, scope=route.scope, plan=identity.plan
                )
                decision = lease.decision
            else:
                # decided at once when the backend needs no I/O (memory): no coroutines
                decided = guard.acquire_nowait(
                    identity.customer, cost, scope=route.scope, plan=identity.plan
                )
                if decided is None:
                    decided = await guard.acquire(
                        identity.customer, cost, scope=route.scope, plan=identity.plan
                    )
                decision = decided
        except QuotaguardError as error:
            await _refuse(problem_for_error(error, instance_of(scope), self.problems), [], send)
            return
        dialect = self._dialects.get(id(route))
        if dialect is not None:
            extra = dialect.headers(decision)
        else:
            extra = self._headers(decision) if decision.outcome is not Outcome.FAIL_OPEN else []
        if not decision.allowed:
            if dialect is not None:
                await _refuse(dialect.refusal(decision, instance_of(scope)), extra, send)
                return
            refusal = problem_for(decision, instance_of(scope), self.problems, self._hint)
            await _refuse(refusal, extra, send)  # type: ignore[arg-type]
            return
        quota = scope[SCOPE_KEY] = RequestQuota(identity, decision, lease, route)
        if lease is None or lease.lease_id is None:
            await self.app(scope, receive, _with_headers(send, extra))
            return
        await Settling(quota, lease, scope, send, extra).run(self.app, receive)


def _with_headers(send: Send, extra: RawHeaders) -> Send:
    if not extra:
        return send

    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), *extra]}
        await send(message)

    return send_with_headers


async def _refuse(problem: Problem, extra: RawHeaders, send: Send) -> None:
    headers = problem.raw_headers()
    headers.extend(extra)
    await send({"type": "http.response.start", "status": problem.status, "headers": headers})
    await send({"type": "http.response.body", "body": problem.body, "more_body": False})
