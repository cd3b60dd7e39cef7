"""How a Redis backend talks to Redis: timeouts, the call budget, connections, local cache.

Every setting can be given as a keyword to `RedisBackend` / `AsyncRedisBackend` or as a
query parameter of a storage URI (``redis://host/0?timeout=0.5&max_connections=32``).
"""

from __future__ import annotations

import math
from collections.abc import MutableMapping
from typing import Any

import attrs

from quotaguard.core.errors import ConfigurationError

DEFAULT_SOCKET_TIMEOUT = 0.25
"""Seconds one command may wait for Redis's reply (``socket_timeout=`` in the URI)."""

DEFAULT_CONNECT_TIMEOUT = 0.25
"""Seconds to open a connection (``socket_connect_timeout=`` in the URI)."""

DEFAULT_TIMEOUT = 1.0
"""Seconds a whole backend call may take (``timeout=``): the call's time budget."""

DEFAULT_MAX_CONNECTIONS = 50
"""Calls in flight at once per backend (``max_connections=``); more wait for a turn."""

DEFAULT_MAX_STALENESS = 1.0
"""Seconds a denial is served from the process's own cache (``max_staleness=``)."""

DEFAULT_CACHE_SIZE = 10_000
"""Customers whose denial one process remembers (``local_cache_size=``)."""

DEFAULT_MAX_BATCH = 64
"""Decisions coalesced into one script call at most (``max_batch=``)."""


def _positive(instance: Any, attribute: attrs.Attribute[float], value: float) -> None:
    if value.__class__ not in (int, float) or not math.isfinite(value) or value <= 0:
        raise ConfigurationError(f"{attribute.name} must be a positive number, got {value!r}")


def _positive_int(instance: Any, attribute: attrs.Attribute[int], value: int) -> None:
    if value.__class__ is not int or value <= 0:
        raise ConfigurationError(f"{attribute.name} must be a positive integer, got {value!r}")


def _not_negative(instance: Any, attribute: attrs.Attribute[float], value: float) -> None:
    if value.__class__ not in (int, float) or not math.isfinite(value) or value < 0:
        raise ConfigurationError(f"{attribute.name} must be a number >= 0, got {value!r}")


def _flag(value: Any) -> bool:
    if value.__class__ is bool or (value.__class__ is int and value in (0, 1)):
        return bool(value)
    raise ConfigurationError(f"coalesce must be true or false (1 or 0), got {value!r}")


@attrs.frozen
class ClientSettings:
    """The timeouts, call budget, connection count and local cache of a Redis backend.

    ``timeout`` is the budget of one backend call (a decision, a settle, a settings
    change): waiting for a free connection, every retry after a cluster redirection,
    ``TRYAGAIN`` or a broken connection, and the reply. A retry is started only when a
    whole attempt (``socket_connect_timeout + socket_timeout``) still fits in what is
    left, so a call returns or raises `BackendUnavailable` within ``timeout`` (plus, on
    Redis Cluster, redis-py's own 0.25 s pause after ``CLUSTERDOWN``). A command that timed
    out is never sent again.
    """

    socket_timeout: float = attrs.field(default=DEFAULT_SOCKET_TIMEOUT, validator=_positive)
    """Seconds one command may wait for its reply."""
    socket_connect_timeout: float = attrs.field(
        default=DEFAULT_CONNECT_TIMEOUT, validator=_positive
    )
    """Seconds to open a connection."""
    timeout: float = attrs.field(default=DEFAULT_TIMEOUT, validator=_positive)
    """Seconds a whole backend call may take."""
    max_connections: int = attrs.field(default=DEFAULT_MAX_CONNECTIONS, validator=_positive_int)
    """Calls in flight at once; the others wait for a turn within their ``timeout``."""
    max_staleness: float = attrs.field(default=DEFAULT_MAX_STALENESS, validator=_not_negative)
    """Seconds a denial may be answered from the local cache (0: never)."""
    local_cache_size: int = attrs.field(default=DEFAULT_CACHE_SIZE, validator=_positive_int)
    """Denials one process remembers at most."""
    coalesce: bool = attrs.field(default=True, converter=_flag)
    """Whether decisions in flight at once share one script call (see docs/redis.md)."""
    max_batch: int = attrs.field(default=DEFAULT_MAX_BATCH, validator=_positive_int)
    """Decisions coalesced into one script call at most."""

    @property
    def attempt(self) -> float:
        """The longest one attempt at a command can take (connect, then wait for a reply)."""
        return self.socket_connect_timeout + self.socket_timeout

    def client_options(self) -> dict[str, Any]:
        """The redis-py keyword arguments these settings imply for a client."""
        return {
            "socket_timeout": self.socket_timeout,
            "socket_connect_timeout": self.socket_connect_timeout,
            "max_connections": self.max_connections,
        }

    @classmethod
    def from_query(cls, query: MutableMapping[str, str], **overrides: Any) -> ClientSettings:
        """Settings from a URI's query parameters (removed from ``query``) and keywords."""
        values: dict[str, Any] = {}
        for field in attrs.fields(cls):
            if field.name in query:
                text = query.pop(field.name)
                try:
                    number = float(text)
                except ValueError:
                    raise ConfigurationError(
                        f"{field.name} must be a number, got {text!r}"
                    ) from None
                values[field.name] = int(number) if number.is_integer() else number
        values.update({name: value for name, value in overrides.items() if value is not None})
        return cls(**values)
