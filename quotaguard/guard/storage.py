"""The backend a guard runs on, from a URI, a backend object or a redis-py client."""

from __future__ import annotations

import inspect
from typing import Any, cast

from quotaguard.backends import async_backend_from_uri, backend_from_uri
from quotaguard.backends.base import AsyncBackend, Backend, InProcessAsync
from quotaguard.backends.memory import MemoryBackend
from quotaguard.clock import Clock
from quotaguard.core.errors import ConfigurationError


def sync_backend(storage: str | Backend | Any, clock: Clock | None) -> Backend:
    """The synchronous backend for ``storage``; an asynchronous one is refused."""
    if isinstance(storage, str) or not hasattr(storage, "decide"):
        return backend_from_uri(storage, clock)  # a URI or a redis-py client
    if _is_async(storage):
        raise ConfigurationError(
            f"Guard needs a synchronous backend; {storage!r} is asynchronous (use AsyncGuard)"
        )
    return cast(Backend, storage)


def async_backend(storage: str | Backend | AsyncBackend | Any, clock: Clock | None) -> AsyncBackend:
    """The asynchronous backend for ``storage``; a blocking one is refused.

    The memory backend never waits on I/O: it is served inline (`InProcessAsync`).
    """
    if isinstance(storage, str) or not hasattr(storage, "decide"):
        return async_backend_from_uri(storage, clock)  # a URI or a redis.asyncio client
    if isinstance(storage, InProcessAsync) or _is_async(storage):
        return cast(AsyncBackend, storage)
    if isinstance(storage, MemoryBackend):
        return InProcessAsync(storage)
    raise ConfigurationError(
        f"AsyncGuard needs an asynchronous backend; {storage!r} would block the event loop "
        "(use the async variant, e.g. a redis:// URI or AsyncRedisBackend)"
    )


def inline_backend(backend: AsyncBackend) -> Backend | None:
    """The synchronous backend that answers ``backend``'s calls without I/O, if any."""
    return backend.backend if isinstance(backend, InProcessAsync) else None


def _is_async(storage: Any) -> bool:
    return inspect.iscoroutinefunction(getattr(storage, "decide", None))
