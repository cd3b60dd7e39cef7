"""What the middleware, the FastAPI dependency and the usage endpoint check when built.

Each takes identifiers, an anonymous identity and a ``WWW-Authenticate`` challenge the
same way: these functions say how, once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from quotaguard.core.errors import ConfigurationError, QuotaguardError
from quotaguard.guard import AsyncGuard

from ._types import Scope
from .client_ip import ClientIP
from .identify import FirstOf, Identifier, Identity, challenge_for


def _nobody(scope: Scope) -> None:
    """Identifies no one: only the middleware's identification (or anonymous) applies."""
    return None


def identifier(identify: Identifier | Sequence[Identifier] | None) -> Identifier:
    """One identifier for ``identify``: itself, the first that answers of a list, or nobody."""
    if identify is None:
        return _nobody
    if isinstance(identify, Sequence):
        return FirstOf(identify) if len(identify) != 1 else identify[0]
    return identify


def challenge(identify: Identifier, given: str | None) -> str:
    """The ``WWW-Authenticate`` value of a 401: ``given``, else from the identifiers."""
    value = given or challenge_for(identify) or 'Bearer realm="api"'
    if not value.isprintable() or not value.isascii():
        raise ConfigurationError(f"a WWW-Authenticate challenge must be printable ASCII: {value!r}")
    return value


def anonymous(value: Identity | str | None) -> Identity | None:
    """The identity of unidentified requests: a plan name stands for customer "anonymous"."""
    return Identity("anonymous", value) if isinstance(value, str) else value


def check_plans(guard: AsyncGuard, identify: Identifier, anonymous: Identity | None) -> None:
    """Fail at construction on a plan the identifiers or ``anonymous`` name but lack."""
    plans = declared_plans(identify)
    if anonymous is not None and anonymous.plan is not None:
        plans.append(anonymous.plan)
    for plan in plans:
        try:
            guard.catalogue[plan]
        except QuotaguardError as error:
            raise ConfigurationError(
                f"an identifier names a plan the guard lacks: {error}"
            ) from None


def declared_plans(identify: Identifier | Iterable[Identifier]) -> list[str]:
    """The plans that identifiers name up front (`ClientIP`'s ``plan``), to check early."""
    identifiers = list(identify) if isinstance(identify, Iterable) else [identify]
    plans: list[str] = []
    for identifier in identifiers:
        if isinstance(identifier, FirstOf):
            plans.extend(declared_plans(identifier.identifiers))
        elif isinstance(identifier, ClientIP) and identifier.plan is not None:
            plans.append(identifier.plan)
    return plans
