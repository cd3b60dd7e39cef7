"""Storage backends, chosen by URI or built from a redis-py client.

``memory://``; ``redis://``, ``rediss://``, ``redis+cluster://host:port[,host:port]`` and
``redis+sentinel://host:port[,host:port]/service`` (see `quotaguard.backends.redis`).

A backend decides a `Request` (the record the guard builds for each decision) with the
pipeline of `quotaguard.core.pipeline`, loading and storing state atomically around it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from quotaguard.backends.base import AsyncBackend, Backend, InProcessAsync
from quotaguard.backends.memory import MemoryBackend
from quotaguard.clock import Clock
from quotaguard.core.errors import ConfigurationError
from quotaguard.core.request import Request

__all__ = [
    "AsyncBackend",
    "Backend",
    "InProcessAsync",
    "MemoryBackend",
    "Request",
    "async_backend_from_uri",
    "backend_from_client",
    "backend_from_uri",
]

_REDIS_SCHEMES = ("redis", "rediss", "redis+cluster", "redis+sentinel")


def backend_from_uri(uri: str | Any, clock: Clock | None = None) -> Backend:
    """Build a synchronous backend from a storage URI or a redis-py client.

    ``memory://``, ``redis://host:port/db``, ``rediss://...``,
    ``redis+cluster://host:port[,host:port]``, ``redis+sentinel://host:port/service``;
    a ``prefix`` query parameter sets the Redis key prefix.
    """
    if not isinstance(uri, str):
        return backend_from_client(uri, clock=clock)  # type: ignore[return-value]
    scheme = _scheme(uri)
    if scheme == "memory":
        return MemoryBackend(clock=clock)
    if scheme in _REDIS_SCHEMES:
        from quotaguard.backends.redis import redis_backend_from_uri

        return redis_backend_from_uri(uri, clock=clock)  # type: ignore[return-value]
    raise _unsupported(uri)


def async_backend_from_uri(uri: str | Any, clock: Clock | None = None) -> AsyncBackend:
    """Build an asynchronous backend from a storage URI or a ``redis.asyncio`` client."""
    if not isinstance(uri, str):
        return backend_from_client(uri, clock=clock)  # type: ignore[return-value]
    scheme = _scheme(uri)
    if scheme == "memory":
        return InProcessAsync(MemoryBackend(clock=clock))
    if scheme in _REDIS_SCHEMES:
        from quotaguard.backends.redis import redis_backend_from_uri

        return redis_backend_from_uri(uri, asyncio=True, clock=clock)  # type: ignore[return-value]
    raise _unsupported(uri)


def backend_from_client(
    client: Any, *, prefix: str = "qg", clock: Clock | None = None
) -> Backend | AsyncBackend:
    """Wrap an existing redis-py client in the matching Redis backend.

    ``redis.Redis`` / ``RedisCluster`` give a `RedisBackend`, their ``redis.asyncio``
    twins an `AsyncRedisBackend`.
    """
    import redis.asyncio
    import redis.asyncio.cluster
    import redis.cluster

    from quotaguard.backends.redis import AsyncRedisBackend, RedisBackend

    if isinstance(client, redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster):
        return AsyncRedisBackend(client, prefix=prefix, clock=clock)
    if isinstance(client, redis.Redis | redis.cluster.RedisCluster):
        return RedisBackend(client, prefix=prefix, clock=clock)
    raise ConfigurationError(
        f"storage must be a URI, a backend or a redis-py client, got {client!r}"[:200]
    )


def _unsupported(uri: str) -> ConfigurationError:
    return ConfigurationError(
        f"unsupported storage URI {uri!r}: use 'memory://', 'redis://', 'rediss://', "
        "'redis+cluster://' or 'redis+sentinel://'"
    )


def _scheme(uri: str) -> str:
    if not isinstance(uri, str) or "://" not in uri:
        raise ConfigurationError(
            f"storage must be a URI such as 'memory://' or a backend object, got {uri!r}"
        )
    return urlsplit(uri).scheme.lower()
