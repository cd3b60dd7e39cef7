"""What is stored about a customer besides usage, and the rule that picks their plan.

Stored: plan assignment, limit overrides, revocation and shadow mode.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import attrs

from quotaguard.core.catalogue import PlanCatalogue
from quotaguard.core.errors import ConfigurationError, shown
from quotaguard.core.policy import Limit, Plan, check_name


def _scopes(
    value: Mapping[str, str] | Iterable[tuple[str, str]],
) -> tuple[tuple[str, str], ...]:
    if isinstance(value, Mapping):
        pairs = list(value.items())
    elif isinstance(value, tuple | list) and all(
        isinstance(pair, tuple | list) and len(pair) == 2 for pair in value
    ):
        pairs = list(value)  # the (scope, plan) pairs a Revocation holds
    else:
        raise ConfigurationError(
            f"allow_scopes must map scope names to plan names, got {shown(value)}"
        )
    return tuple(
        sorted((check_name(scope, "scope"), check_name(plan, "plan")) for scope, plan in pairs)
    )


@attrs.frozen
class Revocation:
    """A customer's access withdrawn, except for a few scopes, each on a plan of its own.

    ``reason`` is shown to the customer (in 403 bodies), so keep it fit for them.
    """

    reason: str = attrs.field()
    allow_scopes: tuple[tuple[str, str], ...] = attrs.field(converter=_scopes, factory=dict)
    """(scope, plan) pairs still allowed, sorted by scope."""
    revoked_at: float = attrs.field(default=0.0)
    """When it was revoked (seconds since the epoch)."""

    @reason.validator
    def _check_reason(self, _: attrs.Attribute[str], value: str) -> None:
        if not isinstance(value, str) or not value.strip():
            raise ConfigurationError(f"a revocation needs a non-empty reason, got {shown(value)}")

    def plan_for(self, scope: str | None) -> str | None:
        """The plan still allowed for ``scope``, or None if the scope is refused."""
        for allowed, plan in self.allow_scopes:
            if allowed == scope:
                return plan
        return None


@attrs.frozen(cache_hash=True)
class CustomerMeta:
    """The stored settings of one customer. The default instance means "nothing set"."""

    plan: str | None = None
    """The plan assigned by an operator (wins over the plan a call asks for)."""
    overrides: tuple[Limit, ...] = ()
    """Limits replacing the plan's limits of the same names."""
    revocation: Revocation | None = None
    """Set while the customer is revoked."""
    shadow: bool | None = None
    """Per-customer shadow mode (None: follow the plan and the guard)."""

    def with_override(self, limit: Limit) -> CustomerMeta:
        """A copy with ``limit`` overriding the plan's limit of the same name."""
        kept = tuple(item for item in self.overrides if item.name != limit.name)
        return attrs.evolve(self, overrides=(*kept, limit))

    def without_override(self, name: str) -> CustomerMeta:
        """A copy without an override for ``name``."""
        return attrs.evolve(
            self, overrides=tuple(item for item in self.overrides if item.name != name)
        )


NO_META = CustomerMeta()


def resolve(
    catalogue: PlanCatalogue,
    meta: CustomerMeta | None,
    requested: str | None,
    scope: str | None,
) -> Plan | Revocation:
    """The plan to apply to a request, or the Revocation that refuses it.

    Order: a revocation (only its allowed scopes pass, each on its own plan); else the
    operator's assignment, else the plan the call asked for, else the default plan;
    then the customer's overrides. Raises `UnknownPlanError` for an unknown requested
    plan and when no plan applies.
    """
    if meta is None:
        return catalogue.get(requested)
    if meta.revocation is not None:
        scoped = meta.revocation.plan_for(scope)
        if scoped is None:
            return meta.revocation
        return catalogue.get(scoped)
    plan = catalogue.assigned(meta.plan, requested)
    if meta.overrides:
        return catalogue.overridden(plan, meta.overrides)
    return plan
