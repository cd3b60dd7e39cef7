"""Coalescing: the decide calls in flight at once in one process go out as one batch.

`ThreadCoalescer` serves threads sharing a sync backend, `TaskCoalescer` the tasks of one
event loop on an asyncio backend; both keep one `Lane` per Redis node (see
`quotaguard.backends.redis.lanes` for the order, `quotaguard.backends.redis.batch` for
the script). A lone request is sent as its own call, so it waits for nothing and costs
what it did without coalescing. A request answers with its own reply, parsed by its own
operation; a batch that failed before it ran sends each of its requests alone (`SINGLE`).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import TimeoutError as RedisTimeout

from quotaguard.core.errors import BackendUnavailable

from .codec import ScriptCall
from .lanes import LEAD, SINGLE, Lane, Pending, answers, failed, flight

_ABANDONED = RedisTimeout("Timeout reading from socket: the batch's leader gave up")
"""What the requests of a batch get when its leader stopped waiting for the reply (its
budget ran out): the batch may have run, so no request is sent again."""

_Send = Callable[[ScriptCall, Any], Any]
_AsyncSend = Callable[[ScriptCall, Any], Awaitable[Any]]


def _settled(pending: Pending) -> Any:
    """The reply of a request that has its outcome; raises the error it got."""
    outcome = pending.outcome
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


class ThreadCoalescer:
    """Batches the decide calls of the threads that share one sync backend.

    ``send(call, node)`` makes one script call on ``node`` (None: where the client routes
    it, for a lone request's own call) and returns its raw reply.
    """

    def __init__(self, send: _Send, max_batch: int) -> None:
        self.send = send
        """Makes one script call on a node."""
        self.max_batch = max_batch
        """Requests per batch at most."""
        self._lanes: dict[Any, Lane] = {}
        self._lock = threading.Lock()

    def call(self, call: ScriptCall, node: Any, deadline: float) -> Any:
        """``call``'s reply (or `SINGLE`), made in a batch with the calls of other threads.

        Waits for a turn until ``deadline`` (time.monotonic()); once taken into a batch,
        as long as the batch takes (bounded by the client's socket timeout).
        """
        name = None if node is None else node.name
        with self._lock:
            lane = self._lanes.get(name)
            if lane is None:
                lane = self._lanes[name] = Lane()
            if lane.alone_until and lane.alone():
                return SINGLE
            if lane.busy:
                pending = Pending(call, threading.Lock())
                pending.waker.acquire()  # released when answered, or chosen to lead
                lane.queue.append(pending)
            else:
                lane.busy = True
                pending = None
        if pending is None:  # alone: its own call, at once
            try:
                return self.send(call, None)
            finally:
                self._handoff(lane)
        self._wait(lane, pending, deadline)
        if pending.outcome is LEAD:
            self._lead(lane, pending, node)
        return _settled(pending)

    def _handoff(self, lane: Lane) -> None:
        with self._lock:
            following = lane.handoff()
        if following is not None:
            following.waker.release()

    def _wait(self, lane: Lane, pending: Pending, deadline: float) -> None:
        waker = pending.waker
        if waker.acquire(timeout=max(0.0, deadline - time.monotonic())):
            return
        with self._lock:
            if lane.leave(pending):
                raise BackendUnavailable("redis: no turn in a batch within the call's budget")
        waker.acquire()  # taken into a batch, or chosen to lead: that answers soon

    def _lead(self, lane: Lane, leader: Pending, node: Any) -> None:
        with self._lock:
            batch = lane.take(leader, self.max_batch)
        results: list[Any] = [_ABANDONED] * len(batch)
        try:
            try:
                call, target = flight(batch, node)
                results = answers(self.send(call, target), len(batch))
            except Exception as error:
                results = failed(error, len(batch))
                lane.refused(results)
        finally:
            self._handoff(lane)
            for pending, result in zip(batch, results, strict=True):
                pending.outcome = result
                if pending is not leader:
                    pending.waker.release()


class TaskCoalescer:
    """Batches the decide calls of the tasks of one event loop on an asyncio backend.

    ``send(call, node)`` makes one script call on ``node`` (None: where the client routes
    it) and returns its raw reply. The leader's budget bounds its batch: when it runs
    out, every request of the batch fails as a call that timed out waiting for its reply
    would.
    """

    def __init__(self, send: _AsyncSend, max_batch: int) -> None:
        self.send = send
        """Makes one script call on a node."""
        self.max_batch = max_batch
        """Requests per batch at most."""
        self._lanes: dict[Any, Lane] = {}

    async def call(self, call: ScriptCall, node: Any) -> Any:
        """``call``'s reply (or `SINGLE`), made in a batch with the calls of other tasks."""
        name = None if node is None else node.name
        lane = self._lanes.get(name)
        if lane is None:
            lane = self._lanes[name] = Lane()
        if lane.alone_until and lane.alone():
            return SINGLE
        if not lane.busy:  # alone: its own call, at once
            lane.busy = True
            try:
                return await self.send(call, None)
            finally:
                self._handoff(lane)
        pending = Pending(call, asyncio.get_running_loop().create_future())
        lane.queue.append(pending)
        try:
            await pending.waker
        except asyncio.CancelledError:
            if not lane.leave(pending) and pending.outcome is LEAD:
                self._handoff(lane)
            raise
        if pending.outcome is LEAD:
            await self._lead(lane, pending, node)
        return _settled(pending)

    def _handoff(self, lane: Lane) -> None:
        following = lane.handoff()
        if following is not None and not following.waker.done():
            following.waker.set_result(None)

    async def _lead(self, lane: Lane, leader: Pending, node: Any) -> None:
        batch = lane.take(leader, self.max_batch)
        results = [_ABANDONED] * len(batch)
        try:
            try:
                call, target = flight(batch, node)
                results = answers(await self.send(call, target), len(batch))
            except Exception as error:
                results = failed(error, len(batch))
                lane.refused(results)
        finally:
            for pending, result in zip(batch, results, strict=True):
                pending.outcome = result
                if pending is not leader and not pending.waker.done():
                    pending.waker.set_result(None)
            if len(batch) == 1:
                self._handoff(lane)
            else:  # once the answered tasks ran: their next requests join the next batch
                asyncio.get_running_loop().call_soon(self._handoff, lane)
