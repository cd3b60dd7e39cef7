"""The contract suite's fixtures: every test here runs on every backend, sync and async.

A backend joins the suite by adding a factory to `SYNC_BACKENDS` / `ASYNC_BACKENDS`
(see the Redis fixtures). Each factory gets the test's FakeClock and returns a fresh,
empty backend; the guard passes the clock's time explicitly on every call.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from quotaguard import AsyncGuard, Guard, MemoryBackend
from quotaguard.backends.base import AsyncBackend, Backend, InProcessAsync
from quotaguard.testing import FakeClock

SyncFactory = Callable[[FakeClock], contextlib.AbstractContextManager[Backend]]
AsyncFactory = Callable[[FakeClock], contextlib.AbstractContextManager[AsyncBackend]]


@contextlib.contextmanager
def _memory(clock: FakeClock) -> Iterator[Backend]:
    yield MemoryBackend(clock=clock)


@contextlib.contextmanager
def _memory_async(clock: FakeClock) -> Iterator[AsyncBackend]:
    yield InProcessAsync(MemoryBackend(clock=clock))


SYNC_BACKENDS: dict[str, SyncFactory] = {"memory": _memory}
ASYNC_BACKENDS: dict[str, AsyncFactory] = {"memory": _memory_async}

try:  # the Redis backends join when their fixtures module is importable
    from tests.redis_support import register_contract_backends
except ImportError:  # pragma: no cover - before the Redis backend exists
    pass
else:
    register_contract_backends(SYNC_BACKENDS, ASYNC_BACKENDS)


class SyncView:
    """Runs an AsyncGuard's coroutines to completion so one test body serves both."""

    def __init__(self, guard: AsyncGuard, loop: asyncio.AbstractEventLoop) -> None:
        self._guard = guard
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._guard, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            result = attribute(*args, **kwargs)
            if asyncio.iscoroutine(result):
                result = self._loop.run_until_complete(result)
            if hasattr(result, "settle") and hasattr(result, "lease_id"):
                return _SyncLease(result, self._loop)
            return result

        return call


class _SyncLease:
    def __init__(self, lease: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._lease = lease
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        return getattr(self._lease, name)

    def settle(self, actual: float | None = None) -> Any:
        return self._loop.run_until_complete(self._lease.settle(actual))


def _params() -> list[Any]:
    params = [pytest.param(("sync", name), id=f"{name}-sync") for name in SYNC_BACKENDS]
    params += [pytest.param(("async", name), id=f"{name}-async") for name in ASYNC_BACKENDS]
    return params


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=_params())
def make_guard(request: pytest.FixtureRequest, clock: FakeClock) -> Iterator[Callable[..., Any]]:
    """``make_guard(plans, **guard_kwargs)`` -> a Guard (or a synchronous view of an
    AsyncGuard) on a fresh backend of this parameter's kind, driven by ``clock``."""
    mode, name = request.param
    with contextlib.ExitStack() as stack:
        if mode == "sync":

            def factory(plans: Any, **kwargs: Any) -> Any:
                backend = stack.enter_context(SYNC_BACKENDS[name](clock))
                return Guard(plans, backend, clock=clock, **kwargs)

            yield factory
        else:
            loop = asyncio.new_event_loop()
            stack.callback(loop.close)

            def factory(plans: Any, **kwargs: Any) -> Any:
                backend = stack.enter_context(ASYNC_BACKENDS[name](clock))
                return SyncView(AsyncGuard(plans, backend, clock=clock, **kwargs), loop)

            yield factory
