"""The records the guard returns besides decisions."""

from __future__ import annotations

import attrs

from quotaguard.core.customer import CustomerMeta, Revocation
from quotaguard.core.decision import LimitStatus


@attrs.frozen
class Usage:
    """A customer's usage of every limit of their plan, and their stored settings."""

    customer: str
    """The customer."""
    plan: str
    """The plan whose limits are shown."""
    limits: tuple[LimitStatus, ...]
    """Per limit: used, remaining, and when it refills."""
    meta: CustomerMeta
    """The stored settings: assigned plan, overrides, revocation, shadow."""

    @property
    def revocation(self) -> Revocation | None:
        """The revocation in force, if any."""
        return self.meta.revocation

    def limit(self, name: str) -> LimitStatus:
        """The status of the limit called ``name``; `KeyError` if the plan has none."""
        for status in self.limits:
            if status.limit.name == name:
                return status
        raise KeyError(name)
