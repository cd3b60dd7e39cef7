"""The record of one request for a decision: who, how much, under which plan, when."""

from __future__ import annotations

from typing import NamedTuple

from quotaguard.core.policy import Cost

LeaseRequest = tuple[str, int | None]
"""A lease to record with a decision: (lease id, time-to-live in microseconds, or None
for the plan's own: see `quotaguard.core.engine.lease_ttl`)."""


class Request(NamedTuple):
    """One request for a decision, as the guard hands it to a backend.

    Immutable. A named tuple rather than an attrs class because one is built for every
    decision: it is the cheapest immutable record Python builds.
    """

    customer: str
    """The customer (already checked: a non-empty string)."""
    cost: Cost
    """The units to spend: a number, or units by name (``{"tokens": 1200}``)."""
    scope: str | None = None
    """The scope of the request, if any (a revoked customer may keep some scopes)."""
    plan: str | None = None
    """The plan the call asks for (an operator's assignment wins), or None."""
    now: int | None = None
    """The time in microseconds, or None for the backend's own clock."""
    lease: LeaseRequest | None = None
    """The lease an admitted cost is held by until settled, or None."""
    shadow: bool = False
    """The guard's shadow mode (a plan's or the customer's own setting may override)."""
