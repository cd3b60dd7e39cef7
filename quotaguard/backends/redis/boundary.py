"""The edge between quotaguard and redis-py.

Which failures are retried within a call's budget, and how every failure of the client
library becomes `BackendUnavailable`.

Retried (each only while a whole attempt still fits in the call's budget):

- ``TRYAGAIN``, ``ASK``/``MOVED`` left over after redis-py's own redirections, "TTL
  exhausted", ``CLUSTERDOWN``, an uncovered slot, a server still loading its data, a
  pool momentarily full: transient states of a cluster or a client, retried with short
  pauses (10 ms, doubling, at most 50 ms);
- a connection refused, or broken while the command was being sent, or that could not be
  opened in time: once, at once (a restarted server or a failed-over primary is picked up
  by the retry).

Never retried: a timeout waiting for a reply, or a connection that broke while the reply
was awaited (the command may have run, or may still run when the server wakes up:
sending it again could charge a customer twice), authentication and permission errors,
script errors and anything unknown.
"""

from __future__ import annotations

import logging
import threading
import time

from redis.exceptions import (
    AskError,
    AuthenticationError,
    AuthorizationError,
    BusyLoadingError,
    ClusterDownError,
    ClusterError,
    ConnectionError,
    MaxConnectionsError,
    RedisClusterException,
    SlotNotCoveredError,
    TimeoutError,
    TryAgainError,
)

from .codec import Call, unavailable
from .migration import can_migrate, migrating
from .settings import ClientSettings

logger = logging.getLogger("quotaguard.backends.redis")

_TRANSIENT = (
    TryAgainError,
    AskError,  # MovedError too
    ClusterDownError,
    SlotNotCoveredError,
    BusyLoadingError,
    MaxConnectionsError,
)
_FIRST_PAUSE = 0.01
_LONGEST_PAUSE = 0.05
_LOG_EVERY = 10.0


def _transient(error: BaseException) -> bool:
    if isinstance(error, _TRANSIENT):
        return True
    if isinstance(error, ClusterError | RedisClusterException):
        text = str(error)
        return "TTL exhausted" in text or "TRYAGAIN" in text or "not covered" in text
    # a script touching a key of a slot being migrated: "... non local key ..."
    return "TRYAGAIN" in str(error) or "non local key" in str(error)


def _connecting(error: TimeoutError) -> bool:
    """Whether the timeout struck while connecting: no command was sent yet."""
    return "connecting" in str(error).lower()


_AFTER_SENDING = ("error while reading", "connection closed by server")


def _broken(error: BaseException) -> bool:
    """Whether the connection broke before the command could have been sent or run.

    A connection that broke while its reply was awaited (a primary killed after running
    the command, before answering) is not: the command may have run, and sending it
    again could charge a customer twice.
    """
    if isinstance(error, ConnectionError | TimeoutError):
        return not any(text in str(error).lower() for text in _AFTER_SENDING)
    # redis-py's asyncio cluster client closes connections that other calls are using
    return isinstance(error, AttributeError) and "writelines" in str(error)


_ELSEWHERE = ("non local key", "TRYAGAIN", "same slot")


def elsewhere(error: BaseException) -> bool:
    """Whether a script's ``error`` says one of its keys is not served by that node.

    Raised by the first command that touches the key, before the script wrote it.
    """
    text = str(error)
    return any(mark in text for mark in _ELSEWHERE)


def may_have_run(error: BaseException) -> bool:
    """Whether a command that failed with ``error`` may have run on the server.

    A timeout waiting for the reply, or a connection that broke while it was awaited.
    Every other failure of a script call is a refusal before it ran (a redirection,
    ``TRYAGAIN``, a cross-slot or unknown script, a connection that could not be used).
    """
    if isinstance(error, TimeoutError):
        return not _connecting(error)
    return isinstance(error, ConnectionError) and not _broken(error)


def retry_pause(
    error: BaseException, attempt: int, remaining: float, settings: ClientSettings
) -> float | None:
    """Seconds to wait before attempt ``attempt + 1`` after ``error``; None: give up.

    ``remaining`` is what is left of the call's budget.
    """
    if isinstance(error, AuthenticationError | AuthorizationError):
        return None
    if isinstance(error, TimeoutError) and not _connecting(error):
        return None
    if _transient(error):
        pause = min(_FIRST_PAUSE * 2.0**attempt, _LONGEST_PAUSE)
    elif _broken(error) and attempt == 0:
        pause = 0.0
    else:
        return None
    if remaining - pause < settings.attempt:
        return None
    return pause


class Attempts:
    """The attempts at one call within its budget: what both drivers' retry loops share.

    On a cluster, a decide that meets its slot in migration is made again in its
    single-key form (``single_keys``, see `quotaguard.backends.redis.migration`).
    """

    def __init__(
        self, settings: ClientSettings, failures: FailureLog, deadline: float, cluster: bool
    ) -> None:
        self.settings = settings
        self.failures = failures
        self.deadline = deadline
        self.cluster = cluster
        self.count = 0
        """Attempts failed so far."""
        self.single_keys = False
        """Whether the next attempt uses the single-key form."""

    def pause_after(self, error: Exception, call: Call) -> float:
        """Seconds to wait before the next attempt; raises `BackendUnavailable` if none."""
        if self.cluster and migrating(error) and can_migrate(call):
            self.single_keys = True
        pause = retry_pause(error, self.count, self.deadline - time.monotonic(), self.settings)
        if pause is None:
            self.failures.record(error)
            raise unavailable(error) from error
        self.count += 1
        return pause


class FailureLog:
    """Logs a backend failure with its traceback, at most once every ten seconds.

    The suppressed failures are counted and named in the next record.
    """

    def __init__(self, every: float = _LOG_EVERY) -> None:
        self.every = every
        """Seconds between two records."""
        self._lock = threading.Lock()
        self._next = 0.0
        self._suppressed = 0

    def record(self, error: BaseException) -> None:
        """Log ``error`` (with its traceback) unless another was logged recently."""
        now = time.monotonic()
        with self._lock:
            if now < self._next:
                self._suppressed += 1
                return
            suppressed, self._suppressed = self._suppressed, 0
            self._next = now + self.every
        logger.warning(
            "redis backend call failed (%d similar failures in the last %g s not logged): %s",
            suppressed,
            self.every,
            unavailable(error),
            exc_info=error,
        )
