"""The backend boundary: settings from URIs and keywords, the retry policy, and no
exception but a QuotaguardError ever leaving a Redis backend call."""

from __future__ import annotations

import logging
import socket
import time
from typing import Any

import pytest
from redis.exceptions import (
    AskError,
    AuthenticationError,
    ClusterDownError,
    ClusterError,
    ConnectionError,
    ResponseError,
    TimeoutError,
    TryAgainError,
)

from quotaguard import (
    AsyncGuard,
    BackendUnavailable,
    ConfigurationError,
    Guard,
    Outcome,
    Plan,
    RollingWindow,
)
from quotaguard.backends.redis import (
    DEFAULT_TIMEOUT,
    ClientSettings,
    client_from_uri,
    redis_backend_from_uri,
)
from quotaguard.backends.redis.boundary import FailureLog, retry_pause
from quotaguard.backends.redis.migration import migrating
from tests import redis_support

PLAN = Plan("p", [RollingWindow("calls", 10, 60)])
SETTINGS = ClientSettings()


def test_settings_come_from_the_uri_and_keywords() -> None:
    uri = "redis://127.0.0.1:1/0?timeout=0.5&max_connections=8&socket_timeout=0.1&prefix=x"
    backend = redis_backend_from_uri(uri, max_staleness=0)
    settings = backend.edge.settings  # type: ignore[union-attr]
    assert settings == ClientSettings(
        timeout=0.5, max_connections=8, socket_timeout=0.1, max_staleness=0
    )
    assert backend.keys.prefix == "x"
    client, _ = client_from_uri(uri)
    assert client.connection_pool.max_connections == 8
    assert client.connection_pool.connection_kwargs["socket_timeout"] == 0.1


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("timeout=0", "timeout"),
        ("timeout=-1", "timeout"),
        ("timeout=nan", "timeout"),
        ("timeout=abc", "timeout"),
        ("max_connections=0", "max_connections"),
        ("max_connections=1.5", "max_connections"),
        ("max_staleness=-1", "max_staleness"),
        ("socket_timeout=inf", "socket_timeout"),
    ],
)
def test_bad_settings_fail_at_construction_naming_the_value(query: str, name: str) -> None:
    with pytest.raises(ConfigurationError, match=name):
        redis_backend_from_uri(f"redis://127.0.0.1:1/0?{query}")


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (TryAgainError("TRYAGAIN"), True),
        (AskError("1 127.0.0.1:1"), True),
        (ClusterDownError("CLUSTERDOWN"), True),
        (ClusterError("TTL exhausted."), True),
        (ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused."), True),
        (ConnectionError("Error while writing to socket. (32, 'Broken pipe')"), True),
        # the reply was awaited: the command may have run, so it is never resent
        (ConnectionError("Connection closed by server."), False),
        (ConnectionError("Error while reading from 127.0.0.1:1 : (104, 'reset')"), False),
        (TimeoutError("Timeout connecting to server"), True),
        (AttributeError("'NoneType' object has no attribute 'writelines'"), True),
        (TimeoutError("Timeout reading from socket"), False),  # may still run: never resent
        (AuthenticationError("WRONGPASS"), False),
        (ResponseError("ERR script"), False),
        (KeyError("x"), False),
    ],
)
def test_the_retry_policy(error: BaseException, retried: bool) -> None:
    assert (retry_pause(error, 0, 1.0, SETTINGS) is not None) is retried
    # never when a whole attempt no longer fits in what is left of the budget
    assert retry_pause(error, 0, SETTINGS.attempt / 2, SETTINGS) is None


def test_a_broken_connection_is_retried_once_and_transient_errors_until_the_budget() -> None:
    assert retry_pause(ConnectionError("x"), 1, 1.0, SETTINGS) is None
    pauses = [retry_pause(TryAgainError("x"), attempt, 1.0, SETTINGS) for attempt in range(5)]
    assert pauses == [0.01, 0.02, 0.04, 0.05, 0.05]


def test_migration_errors() -> None:
    assert migrating(TryAgainError("TRYAGAIN")) and migrating(ClusterError("TTL exhausted."))
    assert not migrating(ClusterError("other")) and not migrating(ConnectionError("x"))


class Exploding:
    """Stands in for a redis-py client method that fails in a way nobody planned."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise self.error


@pytest.mark.parametrize(
    "error",
    [
        AttributeError("'NoneType' object has no attribute 'writelines'"),
        RuntimeError("boom"),
        KeyError("slot"),
        ValueError("bad reply"),
        IndexError("list index out of range"),
    ],
)
def test_no_foreign_exception_leaves_a_backend_call(
    error: BaseException, caplog: pytest.LogCaptureFixture
) -> None:
    backend = redis_backend_from_uri(redis_support.standalone().url + "?prefix=foreign")
    backend.client.execute_command = Exploding(error)  # type: ignore[method-assign]
    guard = Guard([PLAN], backend, default_plan="p", failure="closed")
    with caplog.at_level(logging.WARNING, logger="quotaguard.backends.redis"):
        assert guard.acquire("c").outcome is Outcome.FAIL_CLOSED
        assert guard.acquire("c").outcome is Outcome.FAIL_CLOSED
        with pytest.raises(BackendUnavailable) as info:
            guard.customer("c")
    assert info.value.__cause__ is error
    records = [r for r in caplog.records if r.name == "quotaguard.backends.redis"]
    assert len(records) == 1  # rate-limited: one record for the three failures
    assert records[0].exc_info is not None and records[0].exc_info[1] is error


def test_no_foreign_exception_leaves_an_async_backend_call() -> None:
    async def main() -> None:
        url = redis_support.standalone().url + "?prefix=foreign-async"
        backend = redis_backend_from_uri(url, asyncio=True)

        async def explode(*args: Any, **kwargs: Any) -> Any:
            raise AttributeError("'NoneType' object has no attribute 'writelines'")

        backend.client.execute_command = explode  # type: ignore[method-assign]
        guard = AsyncGuard([PLAN], backend, default_plan="p", failure="closed")
        assert (await guard.acquire("c")).outcome is Outcome.FAIL_CLOSED
        with pytest.raises(BackendUnavailable):
            await guard.audit("c")

    redis_support.run(main())


def test_the_failure_log_counts_what_it_did_not_log(caplog: pytest.LogCaptureFixture) -> None:
    log = FailureLog(every=0.0)
    with caplog.at_level(logging.WARNING, logger="quotaguard.backends.redis"):
        log.record(RuntimeError("first"))
        log.record(RuntimeError("second"))
    assert len(caplog.records) == 2
    quiet = FailureLog(every=3600)
    quiet.record(RuntimeError("a"))
    quiet.record(RuntimeError("b"))
    quiet._next = 0.0
    with caplog.at_level(logging.WARNING, logger="quotaguard.backends.redis"):
        quiet.record(RuntimeError("c"))
    assert "1 similar failures" in caplog.records[-1].getMessage()


@pytest.mark.parametrize("silent", [False, True])
def test_unreachable_sentinels_fail_within_the_budget(silent: bool) -> None:
    """Sentinel discovery has no retries of its own (redis-py's default backs off for
    seconds): refused or silent sentinels cost one budget at most."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)  # accepts connections, never answers
        port = listener.getsockname()[1] if silent else redis_support.free_port()
        uri = f"redis+sentinel://127.0.0.1:{port}/mymaster"
        guard = Guard([PLAN], uri, default_plan="p", failure="closed")
        started = time.monotonic()
        assert guard.acquire("c").outcome is Outcome.FAIL_CLOSED
        assert time.monotonic() - started < 2 * DEFAULT_TIMEOUT

        async def main() -> None:
            aguard = AsyncGuard([PLAN], uri, default_plan="p", failure="closed")
            started = time.monotonic()
            assert (await aguard.acquire("c")).outcome is Outcome.FAIL_CLOSED
            assert time.monotonic() - started < 2 * DEFAULT_TIMEOUT

        redis_support.run(main())
