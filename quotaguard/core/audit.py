"""The audit trail: who changed what about a customer, when, and why."""

from __future__ import annotations

from typing import Any

import attrs

AUDIT_KEEP = 1000
"""How many entries a backend keeps per customer (the oldest are dropped first)."""


@attrs.frozen
class AuditEntry:
    """One change to a customer's settings or usage."""

    at: float
    """When, in seconds since the epoch."""
    actor: str
    """Who made the change (an operator name, "cli:<user>", "api", ...)."""
    action: str
    """What kind of change: assign, override, revoke, restore, shadow or reset."""
    detail: str
    """What changed, e.g. ``plan=pro`` or ``weekly=10000000``."""
    reason: str | None = None
    """Why, when given."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary."""
        return attrs.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AuditEntry:
        """The entry `to_dict` produced."""
        return cls(
            at=float(data["at"]),
            actor=str(data["actor"]),
            action=str(data["action"]),
            detail=str(data["detail"]),
            reason=None if data.get("reason") is None else str(data["reason"]),
        )
