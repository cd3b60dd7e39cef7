"""RFC 9457 problem details for refused requests (``application/problem+json``).

| case                          | status | type member                            |
| ----------------------------- | ------ | -------------------------------------- |
| a limit is exhausted          | 429    | ``ProblemTypes.quota_exceeded``         |
| the cost can never fit        | 429    | ``ProblemTypes.quota_exceeded``         |
| revoked for this scope        | 403    | ``ProblemTypes.access_revoked``         |
| backend down, fail-closed     | 503    | ``ProblemTypes.temporarily_unavailable``|
| no customer, no anonymous use | 401    | ``ProblemTypes.customer_required``      |
| the identity names no plan    | 403    | ``ProblemTypes.plan_unavailable``       |
| the request cannot be decided | 400    | ``about:blank``                         |

A body never carries a secret: no API key, no backend error text, no customer id.
``instance`` is the request path as a URI reference (percent-encoded, RFC 9457 §3.1.5).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any
from urllib.parse import quote

import attrs

from quotaguard.core.decision import Decision, Outcome
from quotaguard.core.policy import Cost, Limit, charge

from ._types import Scope
from .headers import retry_after_seconds

__all__ = [
    "PROBLEM_CONTENT_TYPE",
    "Problem",
    "ProblemTypes",
    "bad_request",
    "customer_required",
    "instance_of",
    "plan_unavailable",
    "problem_for",
    "temporarily_unavailable",
]

PROBLEM_CONTENT_TYPE = "application/problem+json"
"""The media type of every problem body."""

_IANA = "https://iana.org/assignments/http-problem-types#"


@attrs.frozen
class ProblemTypes:
    """The ``type`` URIs of the problem bodies; replace any with your own documentation.

    ``quota-exceeded`` and ``temporary-reduced-capacity`` are registered in IANA's HTTP
    Problem Types registry. ``access-revoked`` and ``customer-required`` are not
    registered anywhere yet: point them at your own documentation if you can.
    """

    quota_exceeded: str = _IANA + "quota-exceeded"
    """429: a limit is exhausted, or the cost can never fit."""
    access_revoked: str = _IANA + "access-revoked"
    """403: the customer is revoked for this scope."""
    temporarily_unavailable: str = _IANA + "temporary-reduced-capacity"
    """503: the rate-limit backend is down and the guard fails closed."""
    customer_required: str = _IANA + "customer-required"
    """401: no customer could be identified and anonymous use is off."""
    plan_unavailable: str = _IANA + "plan-unavailable"
    """403: the caller's identity names a plan the catalogue does not have."""


_URI_SAFE = "/:@!$&'()*+,;=-._~"
_STRAY_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


def instance_of(scope: Scope) -> str:
    """The request's path as a URI reference, for a problem's ``instance`` member.

    The raw path as received (``raw_path``), with every byte a URI may not carry
    percent-encoded (``/v1/a b`` becomes ``/v1/a%20b``, ``/v1/café`` ``/v1/caf%C3%A9``).
    """
    raw = scope.get("raw_path")
    if isinstance(raw, bytes | bytearray) and raw:
        return _STRAY_PERCENT.sub("%25", quote(bytes(raw), safe=_URI_SAFE + "%"))
    path = str(scope.get("path") or "/")
    return quote(path.encode("utf-8", "surrogateescape"), safe=_URI_SAFE)


@attrs.frozen
class Problem:
    """A ready-to-send refusal: status, extra header lines and the encoded JSON body."""

    status: int
    """The HTTP status."""
    body: bytes
    """The problem document, UTF-8 JSON."""
    headers: tuple[tuple[bytes, bytes], ...]
    """Header lines besides Content-Type and Content-Length (lower-case names)."""
    content_type: str = PROBLEM_CONTENT_TYPE
    """The body's media type (a provider dialect's bodies are plain JSON)."""

    @property
    def document(self) -> dict[str, Any]:
        """The problem document, decoded."""
        result: dict[str, Any] = json.loads(self.body)
        return result

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """Every header line to send, Content-Type and Content-Length included."""
        return [
            (b"content-type", self.content_type.encode()),
            (b"content-length", str(len(self.body)).encode()),
            *self.headers,
        ]


def _requested(limit: Limit, cost: Cost) -> str:
    return _number(charge(limit, cost))


def _number(value: float) -> str:
    if value == int(value):
        return str(int(value))
    return f"{value:.6g}"


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _encode(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


_NO_STORE = (b"cache-control", b"no-store")
_Lines = tuple[tuple[bytes, bytes], ...]


def _quota_exceeded(
    decision: Decision, instance: str, types: ProblemTypes, concurrency_hint: int | None
) -> Problem:
    refused = [status for status in decision.limits if not status.allowed]
    names = [status.limit.name for status in refused]
    if decision.never:
        parts = [
            f"limit {status.limit.name!r} allows at most {status.limit.quota} "
            f"{status.limit.unit}, {_requested(status.limit, decision.cost)} requested"
            for status in refused
            if status.retry_after == math.inf
        ]
        detail = (
            _sentence("; ".join(parts))
            + f": this request can never be admitted on plan {decision.plan!r}."
        )
        document: dict[str, Any] = {
            "type": types.quota_exceeded,
            "title": "Quota exceeded",
            "status": 429,
            "detail": detail,
            "instance": instance,
            "violated-policies": names,
        }
        return Problem(429, _encode(document), (_NO_STORE,))
    wait = retry_after_seconds(decision, concurrency_hint)
    parts = [
        f"limit {status.limit.name!r} has {max(int(status.remaining), 0)} "
        f"{status.limit.unit} remaining, {_requested(status.limit, decision.cost)} requested"
        for status in refused
    ]
    seconds = "second" if wait == 1 else "seconds"
    detail = _sentence("; ".join(parts)) + f"; retry after {wait} {seconds}."
    document = {
        "type": types.quota_exceeded,
        "title": "Quota exceeded",
        "status": 429,
        "detail": detail,
        "instance": instance,
        "violated-policies": names,
        "retry-after": wait,
    }
    return Problem(429, _encode(document), ((b"retry-after", str(wait).encode()), _NO_STORE))


def problem_for(
    decision: Decision,
    instance: str,
    types: ProblemTypes | None = None,
    concurrency_hint: int | None = None,
) -> Problem | None:
    """The refusal for ``decision``, or None when the decision admits the request.

    ``instance`` is the request path (see `instance_of`). Shadow-denied and fail-open
    decisions admit. ``concurrency_hint`` caps the wait asked for by a full
    `Concurrency` limit (see `HeaderOptions.concurrency_retry_after`).
    """
    if decision.allowed:
        return None
    types = types or ProblemTypes()
    outcome = decision.outcome
    if outcome is Outcome.REVOKED:
        document: dict[str, Any] = {
            "type": types.access_revoked,
            "title": "Access revoked",
            "status": 403,
            "detail": decision.reason or "Access has been revoked.",
            "instance": instance,
        }
        if decision.scope is not None:
            document["scope"] = decision.scope
        return Problem(403, _encode(document), ())
    if outcome is Outcome.FAIL_CLOSED:
        return temporarily_unavailable(instance, types)
    return _quota_exceeded(decision, instance, types, concurrency_hint)


def _plain(
    status: int, kind: str, title: str, detail: str, instance: str, headers: _Lines
) -> Problem:
    document = {
        "type": kind,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
    }
    return Problem(status, _encode(document), headers)


def temporarily_unavailable(instance: str, types: ProblemTypes | None = None) -> Problem:
    """The 503 refusal while the rate-limit backend is down (fail-closed, or ``/usage``)."""
    detail = "The rate-limit service is unavailable; retry in 1 second."
    kind = (types or ProblemTypes()).temporarily_unavailable
    headers = ((b"retry-after", b"1"), _NO_STORE)
    return _plain(503, kind, "Temporarily unavailable", detail, instance, headers)


def plan_unavailable(instance: str, types: ProblemTypes | None = None) -> Problem:
    """The 403 refusal for a caller whose identity names a plan the catalogue lacks."""
    detail = "The plan your credential names is not offered by this service."
    kind = (types or ProblemTypes()).plan_unavailable
    return _plain(403, kind, "Plan unavailable", detail, instance, (_NO_STORE,))


def bad_request(instance: str, detail: str) -> Problem:
    """A 400 ``about:blank`` problem: the request cannot be decided (``detail`` says why)."""
    return _plain(400, "about:blank", "Bad Request", detail, instance, (_NO_STORE,))


def method_not_allowed(instance: str, allowed: str = "GET, HEAD") -> Problem:
    """A 405 ``about:blank`` problem, with the ``Allow`` header RFC 9110 requires."""
    detail = f"This resource answers only {allowed}."
    headers = ((b"allow", allowed.encode("ascii")), _NO_STORE)
    return _plain(405, "about:blank", "Method Not Allowed", detail, instance, headers)


def customer_required(
    instance: str, types: ProblemTypes | None = None, challenge: str = 'Bearer realm="api"'
) -> Problem:
    """The 401 refusal for a request that names no customer when anonymous use is off.

    ``challenge`` is the ``WWW-Authenticate`` value that RFC 9110 requires on a 401
    (`quotaguard.integrations.identify.challenge_for` derives it from the identifiers).
    """
    types = types or ProblemTypes()
    document = {
        "type": types.customer_required,
        "title": "Customer required",
        "status": 401,
        "detail": "This request carries no credential that identifies a customer.",
        "instance": instance,
    }
    return Problem(401, _encode(document), ((b"www-authenticate", challenge.encode("latin-1")),))
