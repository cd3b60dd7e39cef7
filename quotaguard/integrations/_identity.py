"""Who a request is charged to: the record every identifier returns."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeAlias

import attrs

from ._types import Scope


@attrs.frozen
class Identity:
    """A caller: the customer id, and optionally the plan they are on.

    The plan is the one *requested* for the call: an operator's assignment
    (``guard.assign``) still wins.
    """

    customer: str
    """The customer id (never a raw credential)."""
    plan: str | None = None
    """The plan to apply, or None for the customer's assigned or the default plan."""


Identifier: TypeAlias = Callable[[Scope], "Identity | Awaitable[Identity | None] | None"]
"""Anything that maps a request scope to an `Identity` (or None)."""
