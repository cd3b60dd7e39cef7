"""`Dialect`: which provider's wire format the integrations speak, and how limits map to it.

A dialect names the provider (``"ietf"``, the default; ``"openai"``; ``"anthropic"``) and
decides which of a plan's limits appear under which of the provider's header names:

- a *family* (``requests``, ``tokens``; for Anthropic also ``input-tokens`` and
  ``output-tokens``) takes, by default, every token bucket and rolling window whose unit
  has that name (``input_tokens`` counts as ``input-tokens``); concurrency limits are left
  out unless mapped;
- an Anthropic *unified window* (``5h``, ``7d``) takes, by default, the rolling window
  that is exactly 5 hours or exactly 7 days long.

``families`` and ``unified`` override the default per limit name (``None`` leaves the
limit out).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import attrs

from quotaguard.core.errors import ConfigurationError
from quotaguard.core.policy import Concurrency, Limit, RollingWindow, check_name

__all__ = ["DIALECTS", "FAMILIES", "UNIFIED_CLAIMS", "Dialect", "dialect_of"]

DIALECTS = ("ietf", "openai", "anthropic")
"""The dialect names."""

FAMILIES: Mapping[str, tuple[str, ...]] = {
    "ietf": (),
    "openai": ("requests", "tokens"),
    "anthropic": ("requests", "tokens", "input-tokens", "output-tokens"),
}
"""Per dialect, the header families a limit can be shown under."""

UNIFIED_CLAIMS: Mapping[str, str] = {"5h": "five_hour", "7d": "seven_day"}
"""Anthropic's unified windows and the representative-claim name of each."""

_UNIFIED_BY_LENGTH_US = {5 * 3600 * 1_000_000: "5h", 7 * 86400 * 1_000_000: "7d"}


def _name(value: object) -> str:
    if value not in DIALECTS:
        raise ConfigurationError(f"unknown dialect {value!r}; use one of {', '.join(DIALECTS)}")
    return str(value)


def _mapping(value: Mapping[str, str | None] | None) -> dict[str, str | None]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"a dialect mapping must map limit names, got {value!r}")
    for limit in value:
        check_name(limit, "limit")
    return dict(value)


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigurationError(f"ietf_headers must be True or False, got {value!r}")
    return value


def _retry_within(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        raise ConfigurationError(f"retry_within must be a number of seconds >= 0, got {value!r}")
    return float(value)


def _warning_at(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise ConfigurationError(f"warning_at must be a ratio in (0, 1], got {value!r}")
    return float(value)


@attrs.frozen
class Dialect:
    """The wire dialect of a middleware or route, and how the plan's limits map to it.

    ``Dialect("openai")`` (or just ``"openai"`` wherever a dialect is accepted).
    ``ietf_headers``: also send the IETF headers the middleware is configured for
    (``RateLimit-Policy``/``RateLimit``), beside the provider's. ``families`` and
    ``unified`` map limit names to a header family or an Anthropic unified window
    (``None`` hides the limit). A refusal whose wait exceeds ``retry_within`` seconds
    (or that can never be admitted) is marked ``x-should-retry: false``, and in the
    OpenAI dialect carries the code ``insufficient_quota``. An Anthropic unified window
    at or above ``warning_at`` of its quota reports ``allowed_warning``. ``overloaded_status``
    is the Anthropic status when the backend is down and the guard fails closed
    (529 ``overloaded_error``, or 503).
    """

    name: str = attrs.field(converter=_name)
    """``"ietf"``, ``"openai"`` or ``"anthropic"``."""
    ietf_headers: bool = attrs.field(default=False, converter=_flag, kw_only=True)
    """Send the IETF rate-limit headers alongside the provider's."""
    families: Mapping[str, str | None] = attrs.field(
        factory=dict, converter=_mapping, kw_only=True, hash=False
    )
    """Limit name -> header family (e.g. ``"tokens"``), or None to leave it out."""
    unified: Mapping[str, str | None] = attrs.field(
        factory=dict, converter=_mapping, kw_only=True, hash=False
    )
    """Limit name -> Anthropic unified window (``"5h"`` or ``"7d"``), or None."""
    retry_within: float = attrs.field(default=120.0, converter=_retry_within, kw_only=True)
    """Seconds: a refusal with a longer wait tells the client's SDK not to retry."""
    warning_at: float = attrs.field(default=0.8, converter=_warning_at, kw_only=True)
    """Unified utilisation from which the status is ``allowed_warning``."""
    overloaded_status: int = attrs.field(default=529, kw_only=True)
    """Anthropic dialect: the status for a fail-closed refusal (529 or 503)."""

    @families.validator
    def _check_families(self, _: Any, value: Mapping[str, str | None]) -> None:
        allowed = FAMILIES[self.name]
        for limit, family in value.items():
            if family is not None and family not in allowed:
                raise ConfigurationError(
                    f"dialect {self.name!r} has no header family {family!r} (for limit "
                    f"{limit!r}); use one of {', '.join(allowed) or 'none'}, or None"
                )

    @unified.validator
    def _check_unified(self, _: Any, value: Mapping[str, str | None]) -> None:
        for limit, window in value.items():
            if window is None:
                continue
            if self.name != "anthropic":
                raise ConfigurationError(
                    f"unified windows are Anthropic's; dialect {self.name!r} cannot map "
                    f"limit {limit!r} to {window!r}"
                )
            if window not in UNIFIED_CLAIMS:
                raise ConfigurationError(
                    f"unknown unified window {window!r} (for limit {limit!r}); use one of "
                    f"{', '.join(UNIFIED_CLAIMS)}, or None"
                )

    @overloaded_status.validator
    def _check_overloaded(self, _: Any, value: int) -> None:
        if value.__class__ is not int or value not in (503, 529):
            raise ConfigurationError(f"overloaded_status must be 503 or 529, got {value!r}")

    def family(self, limit: Limit) -> str | None:
        """The header family ``limit`` is shown under, or None."""
        if limit.name in self.families:
            return self.families[limit.name]
        if isinstance(limit, Concurrency):
            return None
        unit = limit.unit.replace("_", "-")
        return unit if unit in FAMILIES[self.name] else None

    def unified_window(self, limit: Limit) -> str | None:
        """The Anthropic unified window ``limit`` is shown as (``"5h"``, ``"7d"``), or None."""
        if self.name != "anthropic":
            return None
        if limit.name in self.unified:
            return self.unified[limit.name]
        if isinstance(limit, RollingWindow):
            return _UNIFIED_BY_LENGTH_US.get(limit.window_us)
        return None

    def check_limits(self, names: set[str]) -> None:
        """Fail when ``families`` or ``unified`` names a limit none of ``names`` is."""
        for limit in (*self.families, *self.unified):
            if limit not in names:
                raise ConfigurationError(
                    f"dialect {self.name!r} maps limit {limit!r}, which no plan has "
                    f"(limits: {', '.join(sorted(names)) or 'none'})"
                )


def dialect_of(value: Dialect | str) -> Dialect:
    """``value`` as a `Dialect` (a name such as ``"openai"`` is accepted)."""
    return value if isinstance(value, Dialect) else Dialect(value)
