"""The public entry point: `Guard` (sync) and `AsyncGuard` (async).

The guard's operations (decide, reserve, settle, views, operator changes) are written
once, in `quotaguard.guard.base`, as generators of backend calls; `Guard` drives them
with blocking calls (`quotaguard.guard.sync`), `AsyncGuard` with awaited ones
(`quotaguard.guard.asyncio`). Around them, one module per job: argument checks
(`arguments`), the failure policy (`failure`), operator changes (`changes`), observers
(`observers`), the storage a guard runs on (`storage`) and the ``limit`` decorator
(`decorate`).
"""

from quotaguard.guard.arguments import PlansArgument, check_scope
from quotaguard.guard.asyncio import AsyncGuard
from quotaguard.guard.base import GuardBase
from quotaguard.guard.changes import overridden_limit
from quotaguard.guard.observers import Observer, SettlementObserver
from quotaguard.guard.records import Usage
from quotaguard.guard.sync import Guard

__all__ = [
    "AsyncGuard",
    "Guard",
    "GuardBase",
    "Observer",
    "PlansArgument",
    "SettlementObserver",
    "Usage",
    "check_scope",
    "overridden_limit",
]
