"""Forwarding a response, then settling its request's lease with the actual cost."""

from __future__ import annotations

import logging
from typing import Any

from quotaguard.core.errors import InvalidRequestError, QuotaguardError
from quotaguard.core.policy import Cost
from quotaguard.lease import AsyncLease

from ._refusals import log_once
from ._types import ASGIApp, Message, RawHeaders, Receive, Scope, Send
from .quota import RequestQuota

logger = logging.getLogger("quotaguard")


class Settling:
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
