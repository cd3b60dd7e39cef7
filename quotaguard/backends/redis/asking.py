"""Single-key commands of an asyncio Redis Cluster client, ``ASK`` followed by hand.

redis-py's asyncio ``RedisCluster`` follows an ``ASK`` redirection by sending ``ASKING``
and then the command as two separately pooled commands. As soon as the target node has
two free connections they go out on different ones; the target, not asked, answers
``MOVED`` back to the source, which answers ``ASK`` again, until redis-py's redirection
limit ("TTL exhausted"). So while a slot migrates, a loaded process may fail every
attempt. `where_the_key_is` sends ``ASKING`` and the command together on one connection
of the target node instead. It serves the single-key form of a decision (see
`quotaguard.backends.redis.migration`); the usual path is left to redis-py.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio.cluster import PipelineCommand, RedisCluster
from redis.exceptions import AskError, MovedError


async def where_the_key_is(client: RedisCluster, key: Any, *args: Any) -> Any:
    """The reply to command ``args`` about ``key``, run on the node holding ``key`` now."""
    node = client.get_node_from_key(key)
    if node is None:  # no topology yet: redis-py's own path learns it
        return await client.execute_command(*args)
    try:
        return await node.execute_command(*args)
    except MovedError:  # the slot changed hands: redis-py updates its slot table
        return await client.execute_command(*args)
    except AskError as redirect:
        target = client.get_node(host=redirect.host, port=redirect.port)
        if target is None:
            raise
        asking, command = PipelineCommand(0, "ASKING"), PipelineCommand(1, *args)
        await target.execute_pipeline([asking, command])
        for reply in (asking.result, command.result):
            if isinstance(reply, Exception):
                raise reply from redirect
        return command.result
