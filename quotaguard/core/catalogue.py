"""The plan catalogue: every plan by name, plus the default; loadable from TOML."""

from __future__ import annotations

import functools
import logging
import os
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from quotaguard.core.errors import ConfigurationError, UnknownPlanError, shown
from quotaguard.core.policy import Concurrency, Limit, Plan, RollingWindow, TokenBucket

logger = logging.getLogger("quotaguard")

_PLAN_KEYS = {"shadow"}
_KINDS: dict[str, tuple[type, set[str], set[str]]] = {
    # kind: (class, required keys, optional keys)
    "token_bucket": (TokenBucket, {"capacity", "refill"}, {"unit"}),
    "rolling_window": (RollingWindow, {"rate"}, {"granularity", "unit"}),
    "concurrency": (Concurrency, {"max_in_flight"}, {"lease_ttl", "unit"}),
}


class PlanCatalogue:
    """Every plan by name, and the default plan for customers who name none."""

    def __init__(self, plans: Iterable[Plan] | Mapping[str, Plan], default: str | None = None):
        if isinstance(plans, str | bytes) or not isinstance(plans, Iterable | Mapping):
            raise ConfigurationError(f"plans must be a collection of Plan, got {shown(plans)}")
        items = list(plans.values()) if isinstance(plans, Mapping) else list(plans)
        self._plans: dict[str, Plan] = {}
        for plan in items:
            if not isinstance(plan, Plan):
                raise ConfigurationError(f"the catalogue holds {shown(plan)}, which is not a Plan")
            if plan.name in self._plans:
                raise ConfigurationError(f"duplicate plan name {plan.name!r}")
            self._plans[plan.name] = plan
        if default is not None and (not isinstance(default, str) or default not in self._plans):
            raise ConfigurationError(
                f"default plan {shown(default)} is not in the catalogue ({self._describe()})"
            )
        self.default = default
        """The name of the default plan, or None."""
        self._default_plan = None if default is None else self._plans[default]

    def _describe(self) -> str:
        return ", ".join(sorted(self._plans)) or "no plans"

    @property
    def plans(self) -> Mapping[str, Plan]:
        """The plans by name."""
        return self._plans

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._plans

    def __getitem__(self, name: str) -> Plan:
        """The plan called ``name``; `UnknownPlanError` if there is none."""
        plan = self._plans.get(name) if isinstance(name, str) else None
        if plan is None:
            raise UnknownPlanError(
                f"unknown plan {shown(name)}; the catalogue has {self._describe()}"
            )
        return plan

    def get(self, name: str | None) -> Plan:
        """The plan called ``name``, or the default plan when ``name`` is None."""
        if name is None:
            if self.default is None:
                raise UnknownPlanError("no plan was given and the catalogue has no default plan")
            return self._plans[self.default]
        return self[name]

    def assigned(self, assigned: str | None, requested: str | None) -> Plan:
        """The operator-assigned plan if it still exists, else `get(requested)`."""
        if isinstance(assigned, str):
            plan = self._plans.get(assigned)
            if plan is not None:
                return plan
            logger.warning(
                "assigned plan %r is no longer in the catalogue; using %r instead",
                assigned,
                requested or self.default,
            )
        return self.get(requested)

    @staticmethod
    @functools.lru_cache(maxsize=4096)
    def overridden(plan: Plan, overrides: tuple[Limit, ...]) -> Plan:
        """``plan`` with ``overrides`` applied (cached)."""
        return plan.with_overrides(overrides)

    @classmethod
    def from_toml(cls, path: str | Path) -> PlanCatalogue:
        """Load a catalogue from a TOML file (see `from_toml_string` for the format)."""
        if not isinstance(path, str | os.PathLike):
            raise ConfigurationError(f"a plans file must be a path, got {shown(path)}")
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError, ValueError) as error:
            raise ConfigurationError(f"cannot read plans file {str(path)!r}: {error}") from error
        return cls.from_toml_string(text, source=str(path))

    @classmethod
    def from_toml_string(cls, text: str, source: str = "<string>") -> PlanCatalogue:
        """Load a catalogue from TOML text.

        For example::

            default_plan = "free"

            [plans.free]
            burst = { kind = "token_bucket", capacity = 10, refill = "1/second" }
            weekly = "100000/week"                      # a rolling window
            five_hour = { rate = "20000/5 hours", granularity = "5 minutes", unit = "tokens" }
            in_flight = { kind = "concurrency", max_in_flight = 2, lease_ttl = "10 minutes" }

        A bare string is a rolling window; a table's ``kind`` defaults to
        ``rolling_window``. A plan may set ``shadow = true``.
        """
        if not isinstance(text, str):
            raise ConfigurationError(f"{source}: TOML text must be a string, got {shown(text)}")
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise ConfigurationError(f"{source}: invalid TOML: {error}") from error
        return cls.from_dict(data, source=source)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>") -> PlanCatalogue:
        """Load a catalogue from the structure `from_toml_string` describes."""
        if not isinstance(data, Mapping):
            raise ConfigurationError(f"{source}: expected a table of plans, got {shown(data)}")
        unknown = set(data) - {"default_plan", "plans"}
        if unknown:
            raise ConfigurationError(
                f"{source}: unknown top-level keys {sorted(unknown, key=repr)}; expected "
                "'default_plan' and 'plans'"
            )
        plans_data = data.get("plans")
        if not isinstance(plans_data, Mapping) or not plans_data:
            raise ConfigurationError(f"{source}: no [plans.<name>] tables found")
        plans = [_plan(name, body, source) for name, body in plans_data.items()]
        default = data.get("default_plan")
        if default is not None and not isinstance(default, str):
            raise ConfigurationError(
                f"{source}: default_plan must be a string, got {shown(default)}"
            )
        try:
            return cls(plans, default=default)
        except ConfigurationError as error:
            raise ConfigurationError(f"{source}: {error}") from None


def _plan(name: str, body: Any, source: str) -> Plan:
    where = f"{source}: plan {shown(name)}"
    if not isinstance(body, Mapping):
        raise ConfigurationError(f"{where}: expected a table, got {shown(body)}")
    shadow = body.get("shadow", False)
    if not isinstance(shadow, bool):
        raise ConfigurationError(f"{where}: shadow must be true or false, got {shown(shadow)}")
    limits = [
        _limit(limit_name, spec, f"{where}, limit {shown(limit_name)}")
        for limit_name, spec in body.items()
        if limit_name not in _PLAN_KEYS
    ]
    try:
        return Plan(name, limits, shadow=shadow)
    except ConfigurationError as error:
        raise ConfigurationError(f"{source}: {error}") from None


def _limit(name: str, spec: Any, where: str) -> Limit:
    if isinstance(spec, str):
        spec = {"rate": spec}
    if not isinstance(spec, Mapping):
        raise ConfigurationError(f"{where}: expected a rate string or a table, got {shown(spec)}")
    options = dict(spec)
    kind = options.pop("kind", "rolling_window")
    if not isinstance(kind, str) or kind not in _KINDS:
        raise ConfigurationError(
            f"{where}: unknown kind {shown(kind)}; expected one of {', '.join(sorted(_KINDS))}"
        )
    klass, required, optional = _KINDS[kind]
    missing = required - set(options)
    if missing:
        raise ConfigurationError(f"{where}: missing {', '.join(sorted(missing))}")
    extra = set(options) - required - optional
    if extra:
        keys = sorted(key if isinstance(key, str) else shown(key) for key in extra)
        raise ConfigurationError(f"{where}: unknown keys {', '.join(keys)} for kind {shown(kind)}")
    try:
        if klass is RollingWindow:
            return RollingWindow.from_rate(
                name,
                options["rate"],
                options.get("granularity"),
                unit=options.get("unit", "requests"),
            )
        return klass(name, **options)  # type: ignore[no-any-return]
    except ConfigurationError as error:
        raise ConfigurationError(f"{where}: {error}") from None
    except TypeError as error:
        raise ConfigurationError(f"{where}: {error}") from None
