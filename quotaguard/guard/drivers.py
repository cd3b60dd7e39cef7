"""The guard's operations as generators of backend calls, and the two drivers that run them.

An operation (the sans-I/O pattern, as httpx's auth flows) is a generator: it yields a
`BackendCall`, receives the backend's reply (or has the backend's error raised at the
``yield``) and finally returns its result. It never touches I/O itself, so it is written
once; `run` answers each call with a blocking call of a `Backend`, `run_async` with an
awaited call of an `AsyncBackend`. The drivers are the only difference between `Guard`
and `AsyncGuard`.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, NamedTuple, TypeVar

from quotaguard.backends.base import AsyncBackend, Backend

T = TypeVar("T")


class BackendCall(NamedTuple):
    """One call an operation asks of the backend: ``backend.<method>(*args)``."""

    method: str
    """The name of a method of `Backend` (or `AsyncBackend`)."""
    args: tuple[Any, ...]
    """Its positional arguments."""


Operation = Generator[BackendCall, Any, T]
"""A guard operation: yields backend calls, receives their replies, returns a ``T``."""


def run(operation: Operation[T], backend: Backend) -> T:
    """Run ``operation`` to its end, answering each call with a blocking call of ``backend``."""
    reply: Any = None
    error: Exception | None = None
    while True:
        try:
            call = operation.send(reply) if error is None else operation.throw(error)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        error = None
        try:
            reply = getattr(backend, call.method)(*call.args)
        except Exception as failure:
            reply, error = None, failure


async def run_async(operation: Operation[T], backend: AsyncBackend) -> T:
    """Run ``operation`` to its end, answering each call with an awaited call of ``backend``."""
    reply: Any = None
    error: Exception | None = None
    while True:
        try:
            call = operation.send(reply) if error is None else operation.throw(error)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        error = None
        try:
            reply = await getattr(backend, call.method)(*call.args)
        except Exception as failure:
            reply, error = None, failure
