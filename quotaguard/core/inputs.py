"""Checks of the values a public call receives: each returns a plain, owned copy.

Every check raises `InvalidRequestError` naming the bad value, before anything stored is
touched; a value that passes is returned as a plain ``str``/``int``/``float``/``dict``
(never the caller's object), so that nothing the caller changes later reaches state.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from quotaguard.core.errors import ConfigurationError, InvalidRequestError, shown
from quotaguard.core.policy import Cost, check_name
from quotaguard.core.rates import MAX_AMOUNT, parse_duration

MAX_COUNT = 1_000_000_000
"""The most entries a listing call (customers, audit) may ask for."""

MAX_TEXT = 1000
"""The longest reason or actor, in characters."""


def customer_id(value: object) -> str:
    """A customer id: a non-empty string (a str subclass is copied to a plain str)."""
    if value.__class__ is str and value:
        return value
    if isinstance(value, str) and value:
        return str.__str__(value)
    raise InvalidRequestError(f"customer must be a non-empty string, got {shown(value)}")


def amount(value: object, what: str = "cost") -> int | float:
    """A finite number from 0 to 2**53 (bools, NaN and infinities are refused)."""
    if isinstance(value, bool):
        pass
    elif value.__class__ is int or value.__class__ is float:
        if 0 <= value <= MAX_AMOUNT:
            return value
    elif isinstance(value, int):
        return amount(int(value), what)
    elif isinstance(value, float) and not math.isnan(value):
        return amount(float(value), what)
    raise InvalidRequestError(f"{what} must be a finite number from 0 to 2**53, got {shown(value)}")


def cost(value: object, what: str = "cost") -> Cost:
    """A cost: `amount`, or a mapping of unit names to amounts (copied)."""
    if value.__class__ is int and 0 <= value <= MAX_AMOUNT:
        return value
    if isinstance(value, Mapping):
        copied: dict[str, float] = {}
        for unit, units in list(value.items()):
            if not isinstance(unit, str) or not unit:
                raise InvalidRequestError(
                    f"{what} units must be non-empty strings, got {shown(unit)}"
                )
            copied[str.__str__(unit)] = amount(units, f"{what} for {unit!r}")
        return copied
    return amount(value, what)


def name(value: object, what: str) -> str:
    """A plan, scope or limit name (see `check_name`)."""
    try:
        return check_name(value, what)  # type: ignore[arg-type]
    except ConfigurationError as error:
        raise InvalidRequestError(str(error)) from None


def names(value: object, what: str) -> frozenset[str]:
    """One name, or an iterable of names (a string is one name, never its letters)."""
    if isinstance(value, str):
        return frozenset((name(value, what),))
    if isinstance(value, bytes | bytearray | Mapping) or not isinstance(value, Iterable):
        raise InvalidRequestError(
            f"{what} names must be a name or a collection of names, got {shown(value)}"
        )
    return frozenset(name(item, what) for item in list(value))


def scope_plans(value: object) -> dict[str, str]:
    """``allow_scopes``: None, a mapping of scope to plan name, or scope names."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return {name(scope, "scope"): name(plan, "plan") for scope, plan in list(value.items())}
    return {scope: scope for scope in sorted(names(value, "scope"))}


def count(value: object, what: str = "count") -> int:
    """How many entries to list: an integer from 0 to `MAX_COUNT`."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
        raise InvalidRequestError(
            f"{what} must be an integer from 0 to {MAX_COUNT}, got {shown(value)}"
        )
    return int(value)


def text(value: object, what: str, *, optional: bool = False) -> Any:
    """A reason or an actor: a non-empty string of UTF-8 text (None when ``optional``)."""
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_TEXT:
        raise InvalidRequestError(
            f"{what} must be a non-empty string of at most {MAX_TEXT} characters, "
            f"got {shown(value)}"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequestError(f"{what} must be valid text, got {shown(value)}") from None
    return str.__str__(value)


def flag(value: object, what: str) -> bool | None:
    """True, False or None, exactly (a truthy string is not True)."""
    if value is None or value is True or value is False:
        return value
    raise InvalidRequestError(f"{what} must be True, False or None, got {shown(value)}")


def duration_us(value: object, what: str) -> int:
    """A duration (seconds or e.g. ``"5 minutes"``) in microseconds."""
    try:
        return parse_duration(value, what)  # type: ignore[arg-type]
    except ConfigurationError as error:
        raise InvalidRequestError(str(error)) from None
