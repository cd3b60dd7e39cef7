"""The queue of decide calls waiting for one Redis node, shared by threads and tasks.

One lane per node. At most one batch of a lane is in flight: the request that finds the
lane idle leads at once (alone, it waits for nothing); requests arriving while a batch is
in flight queue up, and when the flight lands the first of them leads the next batch,
taking every request queued by the time it runs (at most ``max_batch``), in arrival
order. Natural batching: the batch size follows the load, no timer is involved.

Whoever drives a lane (a thread or a task) holds its own lock around every use of it
(claiming it, queueing, `Lane.take`, `Lane.handoff`); this module only keeps the order.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from redis.exceptions import ResponseError

from .batch import batch_call, replies_of
from .boundary import elsewhere, may_have_run
from .codec import ScriptCall


class Mark:
    """An outcome of a waiting request that is not its reply."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


WAITING = Mark("WAITING")
"""Not yet answered."""
LEAD = Mark("LEAD")
"""The request leads the lane's next batch."""
SINGLE = Mark("SINGLE")
"""The batch failed before it could run: make the call alone (its own retries apply)."""


class Pending:
    """One decide call in a lane, and what became of it."""

    __slots__ = ("call", "outcome", "waker")

    def __init__(self, call: ScriptCall, waker: Any = None) -> None:
        self.call = call
        """The decide call."""
        self.outcome: Any = WAITING
        """`WAITING`, `LEAD`, `SINGLE`, the call's reply or the exception it raised."""
        self.waker = waker
        """What wakes the waiting thread or task (a lock or a future)."""


ALONE_AFTER_REFUSAL = 1.0
"""Seconds a node's requests go alone after a batch of it was refused: during a slot
migration, each batch would otherwise pay the client's redirections once more."""


class Lane:
    """The requests of one node: whether a batch is in flight, and who waits for the next."""

    __slots__ = ("alone_until", "busy", "queue")

    def __init__(self) -> None:
        self.busy = False
        """Whether a call is in flight (or its next leader chosen): newcomers queue."""
        self.queue: deque[Pending] = deque()
        """The requests waiting for the next batch, in arrival order."""
        self.alone_until = 0.0
        """Until when (time.monotonic()) requests go alone: a batch was refused."""

    def refused(self, results: Sequence[Any]) -> None:
        """Note a batch's ``results``; if it was refused whole, go alone for a while.

        Say its first request's slot is migrating: for `ALONE_AFTER_REFUSAL` seconds, the
        node's requests are sent alone.
        """
        if len(results) > 1 and results[0] is SINGLE:
            self.alone_until = time.monotonic() + ALONE_AFTER_REFUSAL

    def alone(self) -> bool:
        """Whether requests go alone now, without joining a batch."""
        return bool(self.alone_until) and time.monotonic() < self.alone_until

    def take(self, leader: Pending, max_batch: int) -> list[Pending]:
        """The batch ``leader`` sends: itself, then the oldest waiting requests."""
        batch = [leader]
        queue = self.queue
        while queue and len(batch) < max_batch:
            batch.append(queue.popleft())
        return batch

    def handoff(self) -> Pending | None:
        """After a flight: the waiting request that leads next (marked `LEAD`), or None."""
        if self.queue:
            following = self.queue.popleft()
            following.outcome = LEAD
            return following
        self.busy = False
        return None

    def leave(self, pending: Pending) -> bool:
        """Take ``pending`` out of the queue (it gave up); False if it was taken already."""
        try:
            self.queue.remove(pending)
        except ValueError:
            return False
        return True


def flight(batch: Sequence[Pending], node: Any) -> tuple[ScriptCall, Any]:
    """The one call that makes ``batch`` on ``node``, and where it goes.

    A lone request's own call, routed by the client as without coalescing (None); else
    the batch script, on ``node``.
    """
    if len(batch) == 1:
        return batch[0].call, None
    return batch_call([pending.call for pending in batch]), node


def answers(raw: Any, count: int) -> list[Any]:
    """Each request's reply (or error) from the reply ``raw`` to its `flight`.

    A request that met a key its node does not serve (its slot moved or is migrating)
    did not run: it gets `SINGLE`, to be made alone with its keys declared.
    """
    if count == 1:
        return [raw]
    try:
        replies = replies_of(raw, count)
    except ResponseError as error:  # it ran, but its reply makes no sense
        return [error] * count
    return [
        SINGLE if isinstance(reply, Exception) and elsewhere(reply) else reply for reply in replies
    ]


def failed(error: Exception, count: int) -> list[Any]:
    """What each of ``count`` requests gets when their `flight` failed with ``error``.

    A lone request gets the error, as any single call. A batch that may have run gives
    its error to every request (sending it again could charge twice); one that cannot have
    run gives `SINGLE`, so that each request is made alone and meets its own error,
    redirection or migration as a single call would.
    """
    if count == 1 or may_have_run(error):
        return [error] * count
    return [SINGLE] * count
