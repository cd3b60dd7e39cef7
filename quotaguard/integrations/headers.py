"""Rate-limit response headers: the IETF draft-10 pair, and optional legacy ``X-RateLimit-*``.

Both draft headers are RFC 9651 structured-field Lists with one Item per limit::

    RateLimit-Policy: "burst";q=100;w=60, "weekly";q=5000000;w=604800;qg-unit="tokens"
    RateLimit: "burst";r=63;t=1, "weekly";r=3765433;t=273600

Every value is an integer: remaining units are rounded down, waiting times up. ``t`` is
delay-seconds (never an epoch). The partition key ``pk`` is never sent: it would echo the
customer id. The draft registers no "tokens" unit, so a limit whose unit is not
"requests" carries it in the vendor parameter ``qg-unit``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import NamedTuple

import attrs

from quotaguard.clock import Clock
from quotaguard.core.decision import Decision, LimitStatus, as_statuses, whole_seconds_up
from quotaguard.core.policy import Concurrency, Limit

__all__ = [
    "HeaderBuilder",
    "HeaderOptions",
    "format_policy",
    "format_ratelimit",
    "legacy_headers",
    "rate_limit_headers",
    "retry_after_seconds",
    "sf_string",
]


def sf_string(value: str) -> str:
    """``value`` serialised as an RFC 9651 String (printable ASCII only)."""
    if any(not 0x20 <= ord(char) <= 0x7E for char in value):
        raise ValueError(f"{value!r} cannot be a structured-field String (printable ASCII only)")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _policy_item(limit: Limit, unit_param: str) -> str:
    item = f"{sf_string(limit.name)};q={limit.quota};w={limit.window_seconds}"
    if limit.unit != "requests":
        item += f";{unit_param}={sf_string(limit.unit)}"
    return item


def format_policy(limits: Sequence[Limit], unit_param: str = "qg-unit") -> str:
    """The ``RateLimit-Policy`` field value for ``limits``."""
    return ", ".join(_policy_item(limit, unit_param) for limit in limits)


def format_ratelimit(statuses: Sequence[LimitStatus]) -> str:
    """The ``RateLimit`` field value: remaining (``r``) and seconds to more quota (``t``)."""
    return ", ".join(
        f'"{status.limit.name}";r={max(int(status.remaining), 0)};'
        f"t={whole_seconds_up(status.refill_after)}"
        for status in statuses
    )


def retry_after_seconds(decision: Decision, concurrency_hint: int | None = None) -> int:
    """The ``Retry-After`` delay for a refused decision, in whole seconds (at least 1).

    Never earlier than the decision's own retry-after, nor than the ``t`` that
    ``RateLimit`` shows for any limit that refused. With ``concurrency_hint``, a full
    `Concurrency` limit asks for at most that many seconds instead of its lease TTL
    (slots free when requests finish; the TTL only bounds a lost one).
    """
    if concurrency_hint is None:
        wait = whole_seconds_up(decision.retry_after)
        for status in decision.limits:
            if not status.allowed:
                wait = max(wait, whole_seconds_up(status.refill_after))
        return max(wait, 1)
    wait = 0
    for status in decision.limits:
        if status.allowed:
            continue
        if isinstance(status.limit, Concurrency):
            wait = max(wait, min(whole_seconds_up(status.refill_after), concurrency_hint))
        else:
            seconds = max(status.retry_after, status.refill_after)
            wait = max(wait, whole_seconds_up(seconds))
    return max(wait, 1)


def _unit_param(value: str) -> str:
    # an RFC 9651 key: lcalpha or "*", then lcalpha / DIGIT / "_" / "-" / "." / "*"
    allowed = set("abcdefghijklmnopqrstuvwxyz0123456789_-.*")
    if not value or not (value[0].islower() or value[0] == "*") or set(value) - allowed:
        raise ValueError(f"{value!r} is not a structured-field parameter key")
    return value


@attrs.frozen
class HeaderOptions:
    """Which rate-limit headers the integrations send.

    ``draft`` (default on): ``RateLimit-Policy`` and ``RateLimit`` (draft-10).
    ``legacy`` (default off): ``X-RateLimit-Limit``, ``-Remaining`` and ``-Reset`` for the
    most restrictive limit, with GitHub's meaning (Reset is a UTC epoch in seconds).
    ``unit_param`` is the vendor parameter that names a unit other than requests.
    ``concurrency_retry_after`` caps the wait (``Retry-After`` and ``RateLimit``'s ``t``)
    shown for a full `Concurrency` limit, in whole seconds: slots free as soon as
    requests finish, so the lease TTL (minutes) would keep clients away for nothing.
    """

    draft: bool = True
    """Send ``RateLimit-Policy`` and ``RateLimit``."""
    legacy: bool = False
    """Send ``X-RateLimit-Limit``, ``X-RateLimit-Remaining``, ``X-RateLimit-Reset``."""
    unit_param: str = attrs.field(default="qg-unit", converter=_unit_param)
    """The vendor parameter that carries a limit's unit in ``RateLimit-Policy``."""
    concurrency_retry_after: int = attrs.field(default=1)
    """The longest wait shown for a full concurrency limit, in seconds (>= 1)."""

    @concurrency_retry_after.validator
    def _check_hint(self, _: attrs.Attribute[int], value: int) -> None:
        if value.__class__ is not int or value < 1:
            raise ValueError(f"concurrency_retry_after must be a whole number >= 1, got {value!r}")


class _Plan(NamedTuple):
    """What the draft headers of one tuple of limits need, computed once."""

    limits: tuple[Limit, ...]
    policy: bytes
    """The ``RateLimit-Policy`` value."""
    template: str
    """The ``RateLimit`` value with ``%d`` for every ``r`` and ``t``."""
    capped: tuple[int, ...]
    """Where in the ``RateLimit`` values the ``t`` of a concurrency limit is (capped)."""


class HeaderBuilder:
    """Builds the header lines for a decision.

    Per tuple of limits, the ``RateLimit-Policy`` value and a template of the
    ``RateLimit`` value are computed once and cached (bounded). The ``RateLimit``
    numbers come from the decision's ``limits.remaining_and_refill``, which does not
    build the statuses; only the legacy headers need those.
    """

    __slots__ = ("_by_id", "_clock", "_draft", "_hint", "_legacy", "_plans", "_unit_param")

    def __init__(self, options: HeaderOptions, clock: Clock | None = None) -> None:
        self._clock = clock
        self._draft = options.draft
        self._legacy = options.legacy
        self._unit_param = options.unit_param
        self._hint = options.concurrency_retry_after
        self._plans: dict[tuple[Limit, ...], _Plan] = {}
        # by id of a limits tuple that a decision shares with the plan (cheaper than
        # hashing the limits); the entry keeps the tuple alive, so its id is not reused
        self._by_id: dict[int, _Plan] = {}

    def _plan(self, limits: tuple[Limit, ...]) -> _Plan:
        entry = self._plans.get(limits)
        if entry is None:
            if len(self._plans) >= 1024:  # overrides make many variants: stay bounded
                self._plans.clear()
            template = ", ".join(
                sf_string(limit.name).replace("%", "%%") + ";r=%d;t=%d" for limit in limits
            )
            capped = tuple(
                2 * index + 1
                for index, limit in enumerate(limits)
                if isinstance(limit, Concurrency)
            )
            policy = format_policy(limits, self._unit_param).encode("ascii")
            entry = self._plans[limits] = _Plan(limits, policy, template, capped)
        if len(self._by_id) >= 1024:
            self._by_id.clear()
        self._by_id[id(limits)] = entry
        return entry

    def __call__(self, decision: Decision, now: float | None = None) -> list[tuple[bytes, bytes]]:
        """Header lines (lower-case names) for ``decision``; empty when it has no limits."""
        statuses = as_statuses(decision.limits)
        limits = statuses.specs
        if not limits:
            return []
        lines: list[tuple[bytes, bytes]] = []
        if self._draft:  # the per-response path: kept short
            entry = self._by_id.get(id(limits))
            if entry is None or entry.limits is not limits:
                entry = self._plan(limits)
            values = statuses.remaining_and_refill_seconds
            if entry.capped:
                hint = self._hint
                values = tuple(
                    min(value, hint) if index in entry.capped else value
                    for index, value in enumerate(values)
                )
            lines = [
                (b"ratelimit-policy", entry.policy),
                (b"ratelimit", (entry.template % values).encode("ascii")),
            ]
        if self._legacy:
            if now is None and self._clock is not None:
                now = self._clock.now_us() / 1_000_000
            lines.extend(legacy_headers(statuses, now))
        return lines


def _most_restrictive(statuses: Sequence[LimitStatus]) -> LimitStatus:
    refused = [status for status in statuses if not status.allowed]
    if refused:
        return max(refused, key=lambda status: status.retry_after)
    return min(statuses, key=lambda status: (status.remaining / status.limit.quota, -status.used))


def legacy_headers(
    statuses: Sequence[LimitStatus], now: float | None = None
) -> list[tuple[bytes, bytes]]:
    """``X-RateLimit-*`` lines for the most restrictive limit (a refusing one first)."""
    status = _most_restrictive(statuses)
    now = time.time() if now is None else now
    reset = math.ceil(now + status.refill_after)
    return [
        (b"x-ratelimit-limit", str(status.limit.quota).encode()),
        (b"x-ratelimit-remaining", str(max(int(status.remaining), 0)).encode()),
        (b"x-ratelimit-reset", str(reset).encode()),
    ]


def rate_limit_headers(
    decision: Decision, options: HeaderOptions | None = None, now: float | None = None
) -> list[tuple[bytes, bytes]]:
    """The rate-limit header lines for ``decision`` as ASGI (bytes) pairs.

    Empty when the decision carries no limit state (fail-open, revoked, a plan without
    limits). ``now`` (seconds since the epoch) anchors the legacy Reset header.
    """
    return HeaderBuilder(options or HeaderOptions())(decision, now)
