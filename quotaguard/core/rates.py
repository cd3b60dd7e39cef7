"""Rate strings such as ``"100/minute"`` or ``"5000000/week"``.

Parsing is delegated to the `limits` package; this module only adds the week
granularity, which `limits` lacks, by rewriting ``N/K weeks`` as ``N/(7*K) days``.
"""

from __future__ import annotations

import re

import attrs
import limits

from quotaguard.core.errors import ConfigurationError, shown

_MAX_YEARS = 142
MAX_AMOUNT = 2**53
"""The largest quota, capacity or cost: every count stays exact in an IEEE double."""
_WEEK = re.compile(r"^\s*(\d+)\s*(/|\s*per\s*)\s*(\d+)?\s*weeks?\s*$", re.IGNORECASE)

SECOND_US = 1_000_000

MAX_DURATION_US = 2**52
"""The longest duration (about 142 years, in microseconds) a limit or a lease may span:
every time then stays exact in the IEEE doubles the Redis scripts compute with."""


@attrs.frozen
class Rate:
    """An amount of units per period, e.g. 100 per 60 seconds."""

    amount: int
    """How many units the period allows."""
    period_us: int
    """The period in microseconds."""

    @property
    def period_seconds(self) -> float:
        """The period in seconds."""
        return self.period_us / SECOND_US


def parse_rate(text: str) -> Rate:
    """Parse one rate string (``"60/minute"``, ``"200000 per 5 hours"``, ``"5000000/week"``).

    Raises `ConfigurationError` naming the string when it cannot be parsed or its
    amount is zero.
    """
    if not isinstance(text, str):
        raise ConfigurationError(f"rate must be a string like '100/minute', got {shown(text)}")
    normalised = str.__str__(text).strip().lower()
    week = _WEEK.match(normalised)
    if week:
        amount, _, multiples, _ = (*week.groups(), None)
        normalised = f"{amount}/{7 * int(multiples or 1)} days"
    try:
        items = limits.parse_many(normalised)
    except (ValueError, TypeError, OverflowError):
        raise ConfigurationError(
            f"cannot parse rate {text[:100]!r}: expected '<amount>/<unit>' or "
            "'<amount> per <n> <unit>' with unit second, minute, hour, day, week, month or year"
        ) from None
    if len(items) != 1:
        raise ConfigurationError(f"rate {text!r} holds {len(items)} rates; give exactly one")
    item = items[0]
    if item.amount <= 0:
        raise ConfigurationError(f"rate {text!r} allows no units; the amount must be positive")
    if item.amount > MAX_AMOUNT:
        raise ConfigurationError(f"rate {text!r}: the amount must be at most 2**53")
    if item.get_expiry() <= 0:
        raise ConfigurationError(f"rate {text!r} has no period")
    period_us = item.get_expiry() * SECOND_US
    if period_us > MAX_DURATION_US:
        raise ConfigurationError(f"rate {text!r} spans more than {_MAX_YEARS} years")
    return Rate(amount=item.amount, period_us=period_us)


def parse_duration(value: str | float | int, what: str) -> int:
    """Parse a duration given as seconds (number) or as ``"5 hours"`` / ``"1 week"``.

    Returns microseconds. ``what`` names the setting in error messages.
    """
    if isinstance(value, bool):
        raise ConfigurationError(f"{what} must be a duration, got {shown(value)}")
    if isinstance(value, int | float):
        if not 0 < value <= MAX_DURATION_US / SECOND_US:
            raise ConfigurationError(
                f"{what} must be a positive duration of at most {_MAX_YEARS} years, "
                f"got {shown(value)}"
            )
        return max(1, round(value * SECOND_US))
    if isinstance(value, str):
        text = str.__str__(value).strip()
        try:
            return parse_rate(f"1/{text}").period_us
        except ConfigurationError:
            raise ConfigurationError(
                f"cannot parse {what} {shown(value)}: expected e.g. '1 hour', '5 hours', '7 days', "
                "'1 week' or a number of seconds"
            ) from None
    raise ConfigurationError(f"{what} must be a duration, got {shown(value)}")
