"""The calls an operation yields: the only vocabulary between the operations and the I/O.

An operation is a generator that yields calls and receives each call's reply; the sync
backend answers with ``client...(...)``, the async one with ``await client...(...)``.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any, NamedTuple, TypeVar

import attrs

from quotaguard.core.errors import BackendUnavailable

T = TypeVar("T")


class ScriptCall(NamedTuple):
    """Run a registered script (EVALSHA, reloaded transparently after NOSCRIPT).

    A named tuple: the cheapest object to build on the decision path.
    """

    script: str
    keys: list[str]
    args: Sequence[str | bytes]


@attrs.frozen
class CommandCall:
    """Run one plain command, e.g. ``("HMGET", key, "v", "m")``."""

    args: tuple[str, ...]


@attrs.frozen
class ReserveCall:
    """A decide script and a SET of the lease owner, pipelined in one round trip."""

    call: ScriptCall
    owner_key: str
    owner: str
    px: int


@attrs.frozen
class NodesCall:
    """The nodes to scan: ``[None]`` on a standalone server, every primary on a cluster."""


@attrs.frozen
class ScanCall:
    """One ``SCAN`` page on ``node`` (None: the standalone server); replies (cursor, keys)."""

    node: Any
    cursor: int
    match: str
    count: int


Call = ScriptCall | CommandCall | ReserveCall | NodesCall | ScanCall
Operation = Generator[Call, Any, T]


def unavailable(error: BaseException) -> BackendUnavailable:
    """The `BackendUnavailable` raised for a redis-py error (chain it with ``from``)."""
    return BackendUnavailable(f"redis: {error.__class__.__name__}: {error}")
