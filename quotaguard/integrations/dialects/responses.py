"""`DialectResponses`: the headers and refusals of one dialect, built from a decision.

The integrations call it where they would build the IETF headers and problem bodies:
``headers(decision)`` for every decided request, ``refusal(decision, path)`` for a
refused one, ``customer_required(path)`` for an unidentified one. The human sentence of
every refusal is the one the IETF problem body carries (`problem_for`), so a revoked
customer reads the operator's public reason.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from quotaguard.clock import Clock
from quotaguard.core.catalogue import PlanCatalogue
from quotaguard.core.decision import Decision, LimitStatus, Outcome
from quotaguard.core.errors import ConfigurationError, InvalidRequestError
from quotaguard.core.policy import Limit

from .._types import RawHeaders
from ..headers import retry_after_seconds
from ..problem import Problem, ProblemTypes, customer_required, problem_for
from . import anthropic_wire, openai_wire
from .config import Dialect, dialect_of
from .values import most_restrictive, most_used

__all__ = ["JSON_CONTENT_TYPE", "DialectResponses", "responses_by_route", "responses_for"]

JSON_CONTENT_TYPE = "application/json"
"""The media type of the providers' error bodies."""

_NO_STORE = (b"cache-control", b"no-store")
_NO_RETRY = (b"x-should-retry", b"false")

# per tuple of limits: (index, family) and (index, unified window) of the shown ones
_Layout = tuple[tuple[tuple[int, str], ...], tuple[tuple[int, str], ...]]


def _encode(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _picked(
    statuses: Sequence[LimitStatus],
    shown: tuple[tuple[int, str], ...],
    pick: Callable[[Sequence[LimitStatus]], LimitStatus],
) -> dict[str, LimitStatus]:
    # the status picked per shown name, among the limits shown under it
    grouped: dict[str, list[LimitStatus]] = {}
    for index, name in shown:
        grouped.setdefault(name, []).append(statuses[index])
    return {name: pick(group) for name, group in grouped.items()}


class DialectResponses:
    """The responses of ``dialect`` (not ``"ietf"``) for one middleware or dependency.

    ``ietf`` builds the IETF header lines sent alongside when the dialect asks for them;
    ``clock`` anchors absolute resets (the system clock when None).
    """

    __slots__ = ("_layouts", "clock", "dialect", "ietf", "problems")

    def __init__(
        self,
        dialect: Dialect,
        *,
        problems: ProblemTypes | None = None,
        ietf: Callable[[Decision], RawHeaders] | None = None,
        clock: Clock | None = None,
    ) -> None:
        if dialect.name == "ietf":
            raise ConfigurationError(
                "DialectResponses speaks a provider's dialect; the IETF one is the "
                "integrations' own (HeaderBuilder, problem_for)"
            )
        self.dialect = dialect
        """The dialect spoken."""
        self.problems = problems or ProblemTypes()
        """Used only to build the human sentences."""
        self.ietf = ietf if dialect.ietf_headers else None
        """Builds the IETF lines sent alongside, or None."""
        self.clock = clock
        """The clock of absolute resets, or None for the system clock."""
        self._layouts: dict[tuple[Limit, ...], _Layout] = {}

    def _now(self) -> float:
        clock = self.clock
        return time.time() if clock is None else clock.now_us() / 1_000_000

    def _layout(self, limits: tuple[Limit, ...]) -> _Layout:
        layout = self._layouts.get(limits)
        if layout is None:
            if len(self._layouts) >= 1024:  # overrides make many variants: stay bounded
                self._layouts.clear()
            dialect = self.dialect
            families = tuple(
                (index, family)
                for index, limit in enumerate(limits)
                if (family := dialect.family(limit)) is not None
            )
            windows = tuple(
                (index, window)
                for index, limit in enumerate(limits)
                if (window := dialect.unified_window(limit)) is not None
            )
            layout = self._layouts[limits] = (families, windows)
        return layout

    def headers(self, decision: Decision) -> RawHeaders:
        """The rate-limit header lines for ``decision`` (none when it failed open)."""
        if decision.outcome is Outcome.FAIL_OPEN:
            return []
        statuses = tuple(decision.limits)
        lines: RawHeaders = []
        if statuses:
            families, windows = self._layout(tuple(status.limit for status in statuses))
            by_family = _picked(statuses, families, most_restrictive)
            now = self._now()
            if self.dialect.name == "openai":
                lines.extend(openai_wire.family_headers(by_family))
            else:
                lines.extend(anthropic_wire.family_headers(by_family, now))
                by_window = _picked(statuses, windows, most_used)
                lines.extend(
                    anthropic_wire.unified_headers(by_window, now, self.dialect.warning_at)
                )
        if self.ietf is not None:
            lines.extend(self.ietf(decision))
        return lines

    def _problem(self, kind: str, message: str, family: str | None, extra: RawHeaders) -> Problem:
        if self.dialect.name == "openai":
            status, document = openai_wire.error_document(kind, message, family)
        else:
            status, document = anthropic_wire.error_document(
                kind, message, self.dialect.overloaded_status
            )
        return Problem(status, _encode(document), tuple(extra), JSON_CONTENT_TYPE)

    def refusal(self, decision: Decision, instance: str) -> Problem:
        """The refusal of a refused ``decision`` (``instance``: the request path)."""
        ietf = problem_for(decision, instance, self.problems)
        if ietf is None:
            raise InvalidRequestError(
                f"refusal() needs a refused decision, got outcome {decision.outcome.value!r}"
            )
        message = str(ietf.document.get("detail", ""))
        outcome = decision.outcome
        if outcome is Outcome.REVOKED:
            return self._problem("revoked", message, None, [])
        if outcome is Outcome.FAIL_CLOSED:
            return self._problem("unavailable", message, None, [(b"retry-after", b"1"), _NO_STORE])
        family = None
        for status in decision.limits:
            if not status.allowed:
                family = self.dialect.family(status.limit)
                if family is not None:
                    break
        if decision.never:
            return self._problem("exhausted", message, family, [_NO_RETRY, _NO_STORE])
        wait = retry_after_seconds(decision)
        extra = [(b"retry-after", str(wait).encode()), _NO_STORE]
        if wait > self.dialect.retry_within:
            return self._problem("exhausted", message, family, [*extra, _NO_RETRY])
        return self._problem("limited", message, family, extra)

    def customer_required(self, instance: str, challenge: str = 'Bearer realm="api"') -> Problem:
        """The 401 refusal of a request that names no customer."""
        ietf = customer_required(instance, self.problems, challenge)
        message = str(ietf.document.get("detail", ""))
        return self._problem("unidentified", message, None, list(ietf.headers))


def responses_for(
    dialect: Dialect | str,
    catalogue: PlanCatalogue | None = None,
    *,
    problems: ProblemTypes | None = None,
    ietf: Callable[[Decision], RawHeaders] | None = None,
    clock: Clock | None = None,
) -> DialectResponses | None:
    """The responses of ``dialect`` (a name or a `Dialect`); None for the IETF dialect.

    Fails with `ConfigurationError` when the dialect maps a limit that no plan of
    ``catalogue`` has.
    """
    spoken = dialect_of(dialect)
    if spoken.name == "ietf":
        return None
    if catalogue is not None:
        spoken.check_limits(
            {limit.name for plan in catalogue.plans.values() for limit in plan.limits}
        )
    return DialectResponses(spoken, problems=problems, ietf=ietf, clock=clock)


class Routed(Protocol):
    """What `responses_by_route` reads of a route: the dialect it speaks, if its own."""

    @property
    def dialect(self) -> Dialect | None:
        """The route's own dialect, or None for the default one."""


def responses_by_route(
    routes: Iterable[Routed],
    dialect: Dialect,
    catalogue: PlanCatalogue,
    *,
    problems: ProblemTypes | None = None,
    ietf: Callable[[Decision], RawHeaders] | None = None,
    clock: Clock | None = None,
) -> dict[int, DialectResponses]:
    """The responses of each route (by id) that speaks a provider's dialect.

    A route speaks its own dialect, else ``dialect``; IETF routes are left out. Fails
    with `ConfigurationError` when a dialect maps a limit no plan of ``catalogue`` has.
    """
    found: dict[int, DialectResponses] = {}
    for route in routes:
        spoken = route.dialect or dialect
        responses = responses_for(spoken, catalogue, problems=problems, ietf=ietf, clock=clock)
        if responses is not None:
            found[id(route)] = responses
    return found
