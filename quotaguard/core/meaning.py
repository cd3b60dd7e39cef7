"""What a stored state means, and how it is carried over when a limit's definition changes.

Usage is kept per limit name and kind (its `slot`), and several plans (or an override)
may define the same name differently. Every stored state therefore carries its
*meaning*: the kind of the limit it was computed for and the parameters that give its
numbers their sense. When a state is read for a limit whose meaning differs, `convert`
carries it over by one rule:

- a token bucket keeps the units it has used, clamped to the new capacity;
- a rolling window keeps its counts, each moved to the new bucket that holds the latest
  instant its events can have happened (exact when the new granularity is a multiple of
  the old one, conservative otherwise); its quota and length may change freely;
- a concurrency limit keeps the slots its leases hold;
- another unit starts fresh.

A limit of another kind never reads the state: it has a slot of its own, and the state
of the other kind waits beside it until a definition of that kind returns.

The Redis scripts apply the same rule, operation for operation (see state.lua).
"""

from __future__ import annotations

import functools
from typing import Any

from quotaguard.core import rolling_window, token_bucket
from quotaguard.core.policy import Concurrency, Limit, RollingWindow, TokenBucket


@functools.lru_cache(maxsize=4096)
def meaning(limit: Limit) -> str:
    """What ``limit``'s state means, as text.

    ``"t:<unit>:<interval_us>:<capacity>"`` for a token bucket,
    ``"r:<unit>:<granularity_us>"`` for a rolling window, ``"c"`` for slots.
    """
    if isinstance(limit, TokenBucket):
        return f"t:{limit.unit}:{limit.interval_us!r}:{limit.capacity}"
    if isinstance(limit, RollingWindow):
        return f"r:{limit.unit}:{limit.granularity_us}"
    return "c"


@functools.lru_cache(maxsize=4096)
def slot(limit: Limit) -> str:
    """Where ``limit``'s state is kept: ``"<name>|<kind letter>"``."""
    return f"{limit.name}|{meaning(limit)[0]}"


def slot_name(key: str) -> str:
    """The limit name of a `slot`."""
    return key.partition("|")[0]


def convert(old: str, state: Any, limit: Limit, now: int) -> Any:
    """``state``, kept with meaning ``old``, as a state of ``limit`` at ``now``."""
    if state is None or old == meaning(limit):
        return state
    parts = old.split(":")
    if isinstance(limit, Concurrency):
        return state if parts[0] == "c" else None
    if len(parts) < 3 or parts[1] != limit.unit:
        return None
    if isinstance(limit, TokenBucket) and parts[0] == "t":
        return token_bucket.convert(limit, float(parts[2]), state, now)
    if isinstance(limit, RollingWindow) and parts[0] == "r":
        return rolling_window.convert(limit, int(parts[2]), state, now)
    return None
