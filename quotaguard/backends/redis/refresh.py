"""Topology refreshes of an asyncio Redis Cluster client, off the call path.

After a timeout or a broken connection, redis-py's asyncio ``RedisCluster`` marks itself
for re-initialisation, and its next call, for any customer, waits for a full topology
refresh under a client-wide lock; that refresh asks the nodes in random order and may
wait on the very node that stopped answering. With one primary down, every customer
then pays for it. `BackgroundRefresh` lifts that mark and refreshes in a task of its own
instead, asking the failed node last and at most once every ``every`` seconds, so
customers on healthy primaries keep their speed and a failover is still picked up.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

_EVERY = 0.25


class BackgroundRefresh:
    """Refreshes one asyncio ``RedisCluster``'s topology in the background after failures."""

    def __init__(self, client: Any, every: float = _EVERY) -> None:
        self.client = client
        """The redis-py asyncio cluster client."""
        self.every = every
        """Seconds between two refreshes at most."""
        self._next = 0.0
        self._tasks: set[asyncio.Task[None]] = set()

    def after_failure(self, error: BaseException) -> None:
        """Called after a failed command: refresh in the background instead of inline."""
        client = self.client
        manager = getattr(client, "nodes_manager", None)
        if not getattr(client, "_initialize", False) or not getattr(manager, "slots_cache", None):
            return  # never initialised yet: the first call must initialise inline
        client._initialize = False
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self.every
        task = asyncio.get_running_loop().create_task(
            self._refresh(manager, getattr(error, "last_failed_node_name", None))
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _refresh(self, manager: Any, failed: str | None) -> None:
        with contextlib.suppress(Exception):
            try:
                await manager.initialize(last_failed_node_name=failed)
            except TypeError:  # a redis-py without last_failed_node_name
                await manager.initialize()
