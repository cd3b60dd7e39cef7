"""The Redis backend, sync and async, standalone, Sentinel and Redis Cluster.

``RedisBackend(redis.Redis(...))`` / ``AsyncRedisBackend(redis.asyncio.Redis(...))``, or
by URI with `redis_backend_from_uri`: ``redis://``, ``rediss://``,
``redis+cluster://host:port[,host:port]`` and
``redis+sentinel://host:port[,host:port]/service``. A ``prefix`` query parameter sets
the key prefix (default ``qg``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.sentinel
import redis.cluster
import redis.sentinel
from redis.backoff import NoBackoff
from redis.retry import Retry

from quotaguard.clock import Clock
from quotaguard.core.errors import ConfigurationError

from .asyncio import AsyncRedisBackend
from .sync import RedisBackend

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_SOCKET_TIMEOUT",
    "SCHEMES",
    "AsyncRedisBackend",
    "RedisBackend",
    "client_from_uri",
    "redis_backend_from_uri",
]

SCHEMES = ("redis", "rediss", "redis+cluster", "redis+sentinel")
"""The URI schemes this backend accepts."""

DEFAULT_SOCKET_TIMEOUT = 0.25
"""Seconds a command may wait for Redis before it fails (``socket_timeout=`` in the URI)."""

DEFAULT_CONNECT_TIMEOUT = 0.25
"""Seconds to connect (``socket_connect_timeout=`` in the URI)."""

_FLOAT_OPTIONS = ("socket_timeout", "socket_connect_timeout")


def _split(uri: str) -> tuple[str, str, list[tuple[str, int]], str, dict[str, str]]:
    """(scheme, userinfo, hosts, path, query) of a possibly multi-host URI."""
    scheme, _, rest = uri.partition("://")
    rest, _, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    userinfo, at, hostlist = netloc.rpartition("@")
    if not at:
        userinfo, hostlist = "", netloc
    hosts = []
    for item in hostlist.split(","):
        host, colon, port = item.rpartition(":")
        if not colon:
            host, port = item, "6379" if scheme != "redis+sentinel" else "26379"
        try:
            hosts.append((host.strip("[]") or "localhost", int(port)))
        except ValueError:
            raise ConfigurationError(f"invalid host:port {item!r} in {uri!r}") from None
    return scheme.lower(), userinfo, hosts, path if slash else "", dict(parse_qsl(query))


def _credentials(userinfo: str) -> dict[str, Any]:
    if not userinfo:
        return {}
    user, colon, password = userinfo.partition(":")
    if not colon:
        return {"password": unquote(user)}
    return {"username": unquote(user) or None, "password": unquote(password)}


def client_from_uri(uri: str, *, asyncio: bool = False) -> tuple[Any, str]:
    """A redis-py client for ``uri`` and the key prefix it names.

    Small socket timeouts by default (a dead Redis must not hang a request) and one
    immediate reconnect attempt, so a restarted server is picked up transparently.
    """
    scheme, userinfo, hosts, path, query = _split(uri)
    if scheme not in SCHEMES:
        raise ConfigurationError(f"unsupported redis URI scheme {scheme!r} in {uri!r}")
    prefix = query.pop("prefix", "qg")
    options: dict[str, Any] = {
        "socket_timeout": DEFAULT_SOCKET_TIMEOUT,
        "socket_connect_timeout": DEFAULT_CONNECT_TIMEOUT,
    }
    for name in _FLOAT_OPTIONS:
        if name in query:
            options[name] = float(query.pop(name))
    if scheme in ("redis", "rediss"):
        parts = urlsplit(uri)
        clean = urlunsplit(parts._replace(query=urlencode(query)))
        module: Any = redis.asyncio if asyncio else redis
        client = module.Redis.from_url(clean, retry=Retry(NoBackoff(), 1), **options)
        return client, prefix
    options.update(_credentials(userinfo))
    if scheme == "redis+cluster":
        if asyncio:
            nodes: list[Any] = [redis.asyncio.cluster.ClusterNode(h, p) for h, p in hosts]
            return redis.asyncio.cluster.RedisCluster(startup_nodes=nodes, **options), prefix
        sync_nodes = [redis.cluster.ClusterNode(h, p) for h, p in hosts]  # type: ignore[no-untyped-call]
        return redis.cluster.RedisCluster(startup_nodes=sync_nodes, **options), prefix
    service = path.strip("/") or query.pop("service_name", "")
    if not service:
        raise ConfigurationError(f"{uri!r}: name the sentinel service: redis+sentinel://h:p/name")
    sentinel_module: Any = redis.asyncio.sentinel if asyncio else redis.sentinel
    sentinel = sentinel_module.Sentinel(
        hosts,
        socket_timeout=options["socket_timeout"],
        socket_connect_timeout=options["socket_connect_timeout"],
    )
    return sentinel.master_for(service, **options), prefix


def redis_backend_from_uri(
    uri: str, *, asyncio: bool = False, clock: Clock | None = None
) -> RedisBackend | AsyncRedisBackend:
    """A Redis backend for ``uri`` (sync, or async with ``asyncio=True``)."""
    client, prefix = client_from_uri(uri, asyncio=asyncio)
    if asyncio:
        return AsyncRedisBackend(client, prefix=prefix, clock=clock)
    return RedisBackend(client, prefix=prefix, clock=clock)
