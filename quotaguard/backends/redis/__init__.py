"""The Redis backend, sync and async, standalone, Sentinel and Redis Cluster.

``RedisBackend(redis.Redis(...))`` / ``AsyncRedisBackend(redis.asyncio.Redis(...))``, or
by URI with `redis_backend_from_uri`: ``redis://``, ``rediss://``,
``redis+cluster://host:port[,host:port]`` and
``redis+sentinel://host:port[,host:port]/service``. Query parameters: ``prefix`` (the
key prefix, default ``qg``) and the fields of `ClientSettings` (``timeout``,
``socket_timeout``, ``socket_connect_timeout``, ``max_connections``, ``max_staleness``,
``local_cache_size``, ``coalesce``, ``max_batch``).
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
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError, RedisClusterException, RedisError
from redis.retry import Retry

from quotaguard.clock import Clock
from quotaguard.core.errors import ConfigurationError

from .asyncio import AsyncRedisBackend
from .codec import unavailable
from .eviction import EvictionHook
from .settings import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_STALENESS,
    DEFAULT_SOCKET_TIMEOUT,
    DEFAULT_TIMEOUT,
    ClientSettings,
)
from .sync import RedisBackend

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_STALENESS",
    "DEFAULT_SOCKET_TIMEOUT",
    "DEFAULT_TIMEOUT",
    "SCHEMES",
    "AsyncRedisBackend",
    "ClientSettings",
    "RedisBackend",
    "client_from_uri",
    "redis_backend_from_uri",
]

SCHEMES = ("redis", "rediss", "redis+cluster", "redis+sentinel")
"""The URI schemes this backend accepts."""

_CLUSTER_REQUEST_TTL = 4
"""Redirections and TRYAGAIN replies redis-py follows inside one attempt (its default,
16, sleeps up to 0.4 s on TRYAGAIN; quotaguard retries within the call's budget)."""


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


def client_from_uri(uri: str, *, asyncio: bool = False, **settings: Any) -> tuple[Any, str]:
    """A redis-py client for ``uri`` and the key prefix it names.

    ``settings`` (keywords named like `ClientSettings` fields) override the URI's query.
    """
    client, prefix, _ = _connect(uri, asyncio, settings)
    return client, prefix


def _connect(uri: str, asyncio: bool, settings: dict[str, Any]) -> tuple[Any, str, ClientSettings]:
    """A redis-py client for ``uri``, the key prefix and the `ClientSettings` it names.

    Small timeouts by default (a dead Redis must not hang a request); the client itself
    never retries (redis-py's cluster retries sleep and refresh the topology beyond any
    budget): the backend retries within each call's budget instead.
    """
    scheme, userinfo, hosts, path, query = _split(uri)
    if scheme not in SCHEMES:
        raise ConfigurationError(f"unsupported redis URI scheme {scheme!r} in {uri!r}")
    prefix = query.pop("prefix", "qg")
    config = ClientSettings.from_query(query, **settings)
    options = config.client_options()
    retry_class: Any = AsyncRetry if asyncio else Retry
    no_retry = retry_class(NoBackoff(), 0, supported_errors=(ConnectionError,))
    if scheme in ("redis", "rediss"):
        parts = urlsplit(uri)
        clean = urlunsplit(parts._replace(query=urlencode(query)))
        module: Any = redis.asyncio if asyncio else redis
        return module.Redis.from_url(clean, retry=no_retry, **options), prefix, config
    options.update(_credentials(userinfo))
    if scheme == "redis+cluster":
        cluster: Any
        if asyncio:
            nodes: list[Any] = [redis.asyncio.cluster.ClusterNode(h, p) for h, p in hosts]
            cluster = redis.asyncio.cluster.RedisCluster(
                startup_nodes=nodes,
                retry=no_retry,
                require_full_coverage=False,
                reinitialize_steps=0,  # its re-initialisation closes every call's connection
                **options,
            )
        else:
            sync_nodes = [redis.cluster.ClusterNode(h, p) for h, p in hosts]  # type: ignore[no-untyped-call]
            try:  # the sync client reads the topology at once
                cluster = redis.cluster.RedisCluster(
                    startup_nodes=sync_nodes, retry=no_retry, require_full_coverage=False, **options
                )
            except (RedisError, RedisClusterException) as error:
                raise unavailable(error) from error
        cluster.RedisClusterRequestTTL = _CLUSTER_REQUEST_TTL
        return cluster, prefix, config
    service = path.strip("/") or query.pop("service_name", "")
    if not service:
        raise ConfigurationError(f"{uri!r}: name the sentinel service: redis+sentinel://h:p/name")
    sentinel_module: Any = redis.asyncio.sentinel if asyncio else redis.sentinel
    timeouts = {name: options[name] for name in ("socket_timeout", "socket_connect_timeout")}
    sentinel = sentinel_module.Sentinel(
        hosts, sentinel_kwargs={**timeouts, "retry": no_retry}, **timeouts
    )
    return sentinel.master_for(service, retry=no_retry, **options), prefix, config


def redis_backend_from_uri(
    uri: str,
    *,
    asyncio: bool = False,
    clock: Clock | None = None,
    on_eviction_risk: EvictionHook | None = None,
    **settings: Any,
) -> RedisBackend | AsyncRedisBackend:
    """A Redis backend for ``uri`` (sync, or async with ``asyncio=True``).

    ``settings``: `ClientSettings` fields, overriding the URI's query parameters.
    """
    client, prefix, config = _connect(uri, asyncio, settings)
    if asyncio:
        return AsyncRedisBackend(
            client, prefix=prefix, clock=clock, settings=config, on_eviction_risk=on_eviction_risk
        )
    return RedisBackend(
        client, prefix=prefix, clock=clock, settings=config, on_eviction_risk=on_eviction_risk
    )
