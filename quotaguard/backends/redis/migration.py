"""Decisions while a customer's hash slot migrates between Redis Cluster nodes.

The decide script names two or three keys: the settings hash, the state string and, for a
reserve, the lease record to create. While a slot is MIGRATING/IMPORTING (``redis-cli
--cluster reshard``, or ``CLUSTER SETSLOT`` + ``MIGRATE`` by hand), Redis refuses a
multi-key command whose keys are not all on one side with ``TRYAGAIN``, and most
customers have no settings hash at all, so the usual call cannot run anywhere until the
slot is settled.

`during_migration` makes the same decision with single-key commands, which Redis serves
wherever the key is (redis-py follows the ``ASK`` redirection):

1. ``HMGET`` of the settings (version and JSON);
2. if the version differs from the one the plan was resolved with, the script's own
   "settings changed" reply, so the caller resolves again;
3. else the decide script with the state key alone (``KEYS = [state, state]``: the
   script then skips its settings check and does not write the lease record);
4. for an admitted reserve, ``SET`` of the lease record and of its owner.

The state is still read, checked and written by one script, so admissions stay exact. What
is lost during a migration: a settings change made between steps 1 and 3 applies from the
next decision, and the lease record of a reserve is written just after the decision
rather than with it.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from typing import Any

from redis.exceptions import ClusterError, TryAgainError

from .codec import Call, CommandCall, ReserveCall, ScriptCall


def migrating(error: BaseException) -> bool:
    """Whether ``error`` says a multi-key command met a slot in migration."""
    if isinstance(error, TryAgainError):
        return True
    return isinstance(error, ClusterError) and "TTL exhausted" in str(error)


def can_migrate(call: Call) -> bool:
    """Whether ``call`` is a decide script naming several keys (it has a single-key form)."""
    script = call.call if isinstance(call, ReserveCall) else call
    return (
        isinstance(script, ScriptCall)
        and script.script == "decide"
        and script.keys[0] != script.keys[1]
    )


def during_migration(call: ScriptCall | ReserveCall) -> Generator[Call, Any, Any]:
    """``call`` as single-key commands; returns the reply the decide script would give."""
    script = call.call if isinstance(call, ReserveCall) else call
    meta_key, state_key = script.keys[0], script.keys[1]
    version, raw = yield CommandCall(("HMGET", meta_key, "v", "m"))
    stored = (version.decode() if isinstance(version, bytes) else version) or ""
    if stored != script.args[1]:
        return [0, stored, raw]
    reply = yield ScriptCall("decide", [state_key, state_key], script.args)
    if reply[0] != 1 or reply[2] != 1 or len(script.keys) < 3:
        return reply
    now, keep = int(reply[1]), 2 * int(script.args[7])
    px = str(math.ceil(keep / 1000))
    yield CommandCall(("SET", script.keys[2], f"{now + keep},{now}", "PX", px))
    if isinstance(call, ReserveCall):
        yield CommandCall(("SET", call.owner_key, call.owner, "PX", str(call.px)))
    return reply
