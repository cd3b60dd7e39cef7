"""Where a plan catalogue comes from, and how it is written back as TOML.

A *plans source* is either the path of a TOML plans file or ``module:attribute``, naming a
Python object that holds the plans: a `PlanCatalogue`, one `Plan`, an iterable of plans or
a mapping of name to plan (the module is imported as ``python -m`` would, with the current
directory on ``sys.path``). `catalogue_to_toml` writes any catalogue as the TOML that
`PlanCatalogue.from_toml_string` reads back to an equal catalogue.
"""

from __future__ import annotations

import importlib
import json
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from quotaguard.core.catalogue import PlanCatalogue
from quotaguard.core.errors import ConfigurationError
from quotaguard.core.policy import (
    Concurrency,
    Limit,
    Plan,
    RollingWindow,
    TokenBucket,
    default_granularity_us,
)
from quotaguard.core.rates import SECOND_US, Rate

__all__ = ["catalogue_to_toml", "load_catalogue"]

_DOTTED = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
_PYTHON_SOURCE = re.compile(rf"^({_DOTTED}):({_DOTTED})$")

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")

_UNITS_S = (("week", 604_800), ("day", 86_400), ("hour", 3_600), ("minute", 60), ("second", 1))


def load_catalogue(source: str | Path) -> PlanCatalogue:
    """The catalogue in ``source``: a TOML file path, or ``module:attribute``.

    Raises `ConfigurationError` naming the source when it cannot be read, imported or
    does not hold plans. A path that exists is always read as a file.
    """
    text = str(source)
    match = _PYTHON_SOURCE.match(text)
    if match is None or Path(text).exists():
        return PlanCatalogue.from_toml(text)
    module_name, attribute = match.groups()
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, "")
    try:
        value: object = importlib.import_module(module_name)
    except Exception as error:
        raise ConfigurationError(
            f"cannot import plans module {module_name!r} (from {text!r}): {error}"
        ) from error
    for part in attribute.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise ConfigurationError(
                f"{text!r}: module {module_name!r} has no attribute {attribute!r}"
            ) from None
    return _as_catalogue(value, text)


def _as_catalogue(value: object, source: str) -> PlanCatalogue:
    if isinstance(value, PlanCatalogue):
        return value
    if isinstance(value, Plan):
        return PlanCatalogue([value])
    if isinstance(value, Mapping):
        return PlanCatalogue(value.values())
    if isinstance(value, Iterable) and not isinstance(value, str | bytes):
        return PlanCatalogue(list(value))
    raise ConfigurationError(
        f"{source!r} is {value!r}, not a PlanCatalogue, a Plan, or plans in a list or dict"
    )


def catalogue_to_toml(catalogue: PlanCatalogue) -> str:
    """``catalogue`` as a TOML plans file that loads back to an equal catalogue."""
    lines: list[str] = []
    if catalogue.default is not None:
        lines.append(f"default_plan = {_string(catalogue.default)}")
    for name, plan in catalogue.plans.items():
        if lines:
            lines.append("")
        lines.append(f"[plans.{_key(name)}]")
        if plan.shadow:
            lines.append("shadow = true")
        for limit in plan.limits:
            if limit.name == "shadow":
                raise ConfigurationError(
                    f"plan {name!r}: a limit named 'shadow' cannot be written as TOML "
                    "(the key sets the plan's shadow mode)"
                )
            lines.append(f"{_key(limit.name)} = {_limit_table(limit)}")
    return "\n".join(lines) + "\n"


def _limit_table(limit: Limit) -> str:
    items: list[tuple[str, object]]
    if isinstance(limit, TokenBucket):
        items = [
            ("kind", "token_bucket"),
            ("capacity", limit.capacity),
            ("refill", _rate(limit.refill)),
        ]
    elif isinstance(limit, RollingWindow):
        items = [("rate", _rate(Rate(limit.quota, limit.window_us)))]
        if limit.granularity_us != default_granularity_us(limit.window_us):
            items.append(("granularity", _duration(limit.granularity_us)))
    elif isinstance(limit, Concurrency):
        items = [
            ("kind", "concurrency"),
            ("max_in_flight", limit.max_in_flight),
            ("lease_ttl", _duration(limit.lease_ttl_us)),
        ]
    else:  # pragma: no cover - every Limit kind is handled above
        raise ConfigurationError(f"cannot write limit {limit!r} as TOML")
    if limit.unit != "requests":
        items.append(("unit", limit.unit))
    body = ", ".join(f"{key} = {_value(value)}" for key, value in items)
    return f"{{ {body} }}"


def _value(value: object) -> str:
    return _string(value) if isinstance(value, str) else str(value)


def _string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _key(name: str) -> str:
    return name if _BARE_KEY.match(name) else _string(name)


def _rate(rate: Rate) -> str:
    """``rate`` as ``"N/unit"`` or ``"N/K units"``."""
    if rate.period_us % SECOND_US:
        raise ConfigurationError(
            f"a rate of {rate.amount} per {rate.period_us} us cannot be written as TOML: "
            "rate strings count whole seconds"
        )
    seconds = rate.period_us // SECOND_US
    for unit, size in _UNITS_S:
        if seconds % size == 0:
            count = seconds // size
            return f"{rate.amount}/{unit}" if count == 1 else f"{rate.amount}/{count} {unit}s"
    raise AssertionError("every whole number of seconds is a number of seconds")


def _duration(us: int) -> str | float | int:
    """A duration as ``"K units"`` when it is whole seconds, else a number of seconds."""
    if us % SECOND_US:
        return us / SECOND_US
    seconds = us // SECOND_US
    for unit, size in _UNITS_S:
        if seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}" + ("s" if count != 1 else "")
    raise AssertionError("every whole number of seconds is a number of seconds")
