"""Storage backends, chosen by URI (``memory://``, and ``redis://`` once installed)."""

from __future__ import annotations

from urllib.parse import urlsplit

from quotaguard.backends.base import AsyncBackend, Backend, InProcessAsync
from quotaguard.backends.memory import MemoryBackend
from quotaguard.clock import Clock
from quotaguard.core.errors import ConfigurationError

__all__ = [
    "AsyncBackend",
    "Backend",
    "InProcessAsync",
    "MemoryBackend",
    "async_backend_from_uri",
    "backend_from_uri",
]


def backend_from_uri(uri: str, clock: Clock | None = None) -> Backend:
    """Build a synchronous backend from a storage URI (``memory://``)."""
    scheme = _scheme(uri)
    if scheme == "memory":
        return MemoryBackend(clock=clock)
    raise ConfigurationError(
        f"unsupported storage URI {uri!r}: this version of quotaguard supports 'memory://'"
    )


def async_backend_from_uri(uri: str, clock: Clock | None = None) -> AsyncBackend:
    """Build an asynchronous backend from a storage URI (``memory://``)."""
    scheme = _scheme(uri)
    if scheme == "memory":
        return InProcessAsync(MemoryBackend(clock=clock))
    raise ConfigurationError(
        f"unsupported storage URI {uri!r}: this version of quotaguard supports 'memory://'"
    )


def _scheme(uri: str) -> str:
    if not isinstance(uri, str) or "://" not in uri:
        raise ConfigurationError(
            f"storage must be a URI such as 'memory://' or a backend object, got {uri!r}"
        )
    return urlsplit(uri).scheme.lower()
