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

import logging
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from quotaguard.backends.base import InProcessAsync
from quotaguard.core.decision import Decision, Outcome
from quotaguard.core.errors import ConfigurationError, InvalidRequestError, QuotaguardError
from quotaguard.core.policy import Concurrency, Cost
from quotaguard.guard import AsyncGuard, Guard, GuardBase
from quotaguard.lease import AsyncLease

from ._refusals import log_once, problem_for_error
from ._types import ASGIApp, Message, RawHeaders, Receive, Scope, Send, header
from .dialects import Dialect, dialect_of, responses_by_route
from .headers import HeaderBuilder, HeaderOptions
from .identify import FirstOf, Identifier, Identity, challenge_for, declared_plans
from .problem import Problem, ProblemTypes, customer_required, instance_of, problem_for
from .routes import JSONBody, Route, Routes

__all__ = ["QuotaMiddleware", "RequestQuota", "add_cost", "report_cost", "request_quota"]

logger = logging.getLogger("quotaguard")

SCOPE_KEY = "quotaguard"
"""The ASGI scope key under which the middleware leaves the request's `RequestQuota`."""


class RequestQuota:
    """One request's quota: who, the decision, and the cost reported by the endpoint.

    Found at ``scope["quotaguard"]`` (see `request_quota`). An endpoint whose route
    settles later reports the actual cost with `report` (a total) or `add` (an
    increment, e.g. per streamed chunk).
    """

    __slots__ = ("actual", "decision", "identity", "lease", "route")

    def __init__(
        self, identity: Identity, decision: Decision, lease: AsyncLease | None, route: Route
    ) -> None:
        self.identity = identity
        """Who the request was charged to."""
        self.decision = decision
        """The decision that admitted it."""
        self.lease = lease
        """The reservation to settle, when the route settles later."""
        self.route = route
        """The route rule applied."""
        self.actual: Cost | None = None
        """The actual cost reported so far, or None."""

    def report(self, total: Cost) -> None:
        """Set the actual cost of the request (in the route's unit, if it has one)."""
        self.actual = total

    def add(self, units: float) -> None:
        """Add ``units`` (in the route's unit) to the actual cost reported so far."""
        actual = self.actual
        if isinstance(actual, Mapping):
            raise TypeError("add() needs a numeric cost; report() set a per-unit mapping")
        self.actual = (actual or 0) + units


def request_quota(request: Any) -> RequestQuota | None:
    """The `RequestQuota` of a request (an ASGI scope, or anything with a ``.scope``)."""
    scope = getattr(request, "scope", request)
    found = scope.get(SCOPE_KEY)
    return found if isinstance(found, RequestQuota) else None


def report_cost(request: Any, total: Cost) -> None:
    """Report the actual cost of ``request`` (a scope or a Starlette/FastAPI Request)."""
    quota = request_quota(request)
    if quota is not None:
        quota.report(total)


def add_cost(request: Any, units: float) -> None:
    """Add ``units`` to the actual cost of ``request`` (e.g. per streamed chunk)."""
    quota = request_quota(request)
    if quota is not None:
        quota.add(units)


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


def _nobody(scope: Scope) -> None:
    """Identifies no one: only the middleware's identification (or anonymous) applies."""
    return None


def _identifier(identify: Identifier | Sequence[Identifier] | None) -> Identifier:
    if identify is None:
        return _nobody
    if isinstance(identify, Sequence):
        return FirstOf(identify) if len(identify) != 1 else identify[0]
    return identify


def _challenge(identify: Identifier, challenge: str | None) -> str:
    """The ``WWW-Authenticate`` value of a 401: given, else from the identifiers."""
    value = challenge or challenge_for(identify) or 'Bearer realm="api"'
    if not value.isprintable() or not value.isascii():
        raise ConfigurationError(f"a WWW-Authenticate challenge must be printable ASCII: {value!r}")
    return value


def check_plans(guard: GuardBase, identify: Identifier, anonymous: Identity | None) -> None:
    """Fail at construction on a plan the identifiers or ``anonymous`` name but lack."""
    plans = declared_plans(identify)
    if anonymous is not None and anonymous.plan is not None:
        plans.append(anonymous.plan)
    for plan in plans:
        try:
            guard.catalogue[plan]
        except QuotaguardError as error:
            raise ConfigurationError(
                f"an identifier names a plan the guard lacks: {error}"
            ) from None


def _anonymous(value: Identity | str | None) -> Identity | None:
    return Identity("anonymous", value) if isinstance(value, str) else value


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
        self.identify = _identifier(identify)
        self.anonymous = _anonymous(anonymous)
        check_plans(self.guard, self.identify, self.anonymous)
        self.problems = problems or ProblemTypes()
        self.challenge = _challenge(self.identify, challenge)
        options = headers or HeaderOptions()
        self._headers = HeaderBuilder(options, self.guard.clock)
        self._hint = options.concurrency_retry_after
        self._inline = self.guard.backend.__class__ is InProcessAsync
        limits = [limit for plan in self.guard.catalogue.plans.values() for limit in plan.limits]
        # plans with a concurrency limit need a lease per request
        self._hold = any(isinstance(limit, Concurrency) for limit in limits)
        # when every limit counts requests, {"requests": n} is the plain number n
        self._plain = all(limit.unit == "requests" for limit in limits)
        # per route (by id; `routes` keeps them alive): (fixed cost or None, reserve a
        # lease, decide inline on the memory backend when the customer allows it)
        self._how: dict[int, tuple[Cost | None, bool, bool]] = {}
        for route in (*self.routes.rules, self.routes.default):
            cost = route.fixed_cost
            if cost is not None and self._plain and route.unit == "requests":
                cost = route.cost  # type: ignore[assignment]
            reserve = route.deferred or self._hold
            inline = self._inline and cost.__class__ is int and cost >= 0 and route.scope is None
            self._how[id(route)] = (cost, reserve, inline)
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
        cost, reserve, inline = self._how[id(route)]
        if cost is None:
            rule = route.cost
            if isinstance(rule, JSONBody):
                read = await _read_body(scope, receive, rule.max_bytes)
                if read is None:
                    return  # the client left while sending its body: nobody to answer
                cost = route.estimate(read[0])
                receive = _replaying(read[1], receive)
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
                decided = None
                if inline:  # the memory backend never waits: decide without two coroutines
                    decided = guard.acquire_nowait(identity.customer, cost, plan=identity.plan)
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
        await _Settling(quota, lease, scope, send, extra).run(self.app, receive)


async def _read_body(
    scope: Scope, receive: Receive, limit: int
) -> tuple[bytes | None, list[Message]] | None:
    """Read the request body, up to ``limit`` bytes: (body or None when larger, messages).

    None when the client disconnected first. The messages read are kept to be replayed.
    """
    declared = header(scope, b"content-length")
    if (
        declared is not None
        and declared.isdigit()
        and (len(declared) > 18 or int(declared) > limit)
    ):
        return None, []  # too large: leave it for the app, unread
    messages: list[Message] = []
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None, messages
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), messages


def _replaying(messages: list[Message], receive: Receive) -> Receive:
    """A ``receive`` that hands out ``messages`` first, untouched, then reads on."""
    if not messages:
        return receive
    pending = deque(messages)

    async def replay() -> Message:
        if pending:
            return pending.popleft()
        return await receive()

    return replay


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


class _Settling:
    """Forwards a response, then settles the lease with the actual cost (exactly once)."""

    __slots__ = ("downstream", "extra", "headers", "lease", "quota", "scope", "settled", "status")

    def __init__(
        self, quota: RequestQuota, lease: AsyncLease, scope: Scope, send: Send, extra: RawHeaders
    ) -> None:
        self.quota = quota
        self.lease = lease
        self.scope = scope
        self.downstream = send
        self.extra = extra
        self.status = 0
        self.headers: RawHeaders = []
        self.settled = False

    async def run(self, app: ASGIApp, receive: Receive) -> None:
        try:
            await app(self.scope, receive, self.send)
        except BaseException:
            await _shielded(self.settle(complete=False))
            raise
        if not self.settled:  # no complete body: disconnected, or the app never finished
            await _shielded(self.settle(complete=False))

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.status = message["status"]
            self.headers = list(message.get("headers", ()))
            message = {**message, "headers": [*self.headers, *self.extra]}
        elif kind == "http.response.body" and not message.get("more_body", False):
            await self.settle(complete=True)  # before the last byte: clients see settled state
        await self.downstream(message)

    def _actual(self, complete: bool) -> Cost | None:
        actual = self.quota.actual
        route = self.quota.route
        if actual is not None or not complete:
            return actual
        if route.settle_header_name is not None:
            for name, value in self.headers:
                if name.lower() == route.settle_header_name:
                    try:
                        return float(value)
                    except ValueError:
                        logger.warning(
                            "quotaguard: response header %s is not a number; settling at the "
                            "estimate",
                            route.settle_header,
                        )
                        break
        if route.settle is not None:
            try:
                return route.settle(self.scope, self.status, self.headers)
            except Exception:
                logger.exception("quotaguard: settle callback failed; settling at the estimate")
        return None

    async def settle(self, complete: bool) -> None:
        if self.settled:
            return
        self.settled = True
        actual = self._actual(complete)
        try:
            try:
                await self.lease.settle(None if actual is None else self.quota.route.charge(actual))
            except InvalidRequestError:
                # NaN, infinite, negative or not a cost at all: the estimate stands
                log_once(
                    "quotaguard: a reported cost is not a finite number >= 0; settling such "
                    "costs at the estimate"
                )
                await self.lease.settle(None)
        except QuotaguardError as error:
            # BackendUnavailable, LeaseError (expired): never an unhandled error in the
            # host app; the lease frees itself at its TTL.
            logger.warning("quotaguard: could not settle lease %s: %s", self.lease.lease_id, error)


async def _shielded(settling: Any) -> None:
    """Await ``settling`` even inside a cancelled (anyio) cancel scope."""
    try:
        import anyio
    except ImportError:  # pragma: no cover - anyio comes with every ASGI framework
        await settling
        return
    with anyio.CancelScope(shield=True):
        await settling
