"""Header values shared by the provider dialects, exact by the house rules.

Remaining units are rounded down (never negative), waits and resets rounded up to whole
seconds, utilisation rounded up (never understating use). A reset is the time until the
limit is back to its full quota.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from datetime import UTC, datetime

from quotaguard.core.decision import LimitStatus

__all__ = [
    "duration",
    "epoch_seconds",
    "most_restrictive",
    "most_used",
    "remaining",
    "rfc3339",
    "seconds_up",
    "utilization",
]

_LATEST = 253_402_300_799  # 9999-12-31T23:59:59Z, the last instant RFC 3339 can write


def seconds_up(seconds: float) -> int:
    """``seconds`` rounded up to a whole number, 0 when not positive (capped, never inf)."""
    if not seconds > 0:
        return 0
    return _LATEST if seconds >= _LATEST else math.ceil(seconds)


def remaining(status: LimitStatus) -> int:
    """The status's remaining units, rounded down, never negative."""
    return max(int(status.remaining), 0)


def duration(seconds: int) -> str:
    """Whole ``seconds`` as a Go-style duration, as OpenAI writes them: ``1s``, ``6m0s``."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def epoch_seconds(now: float, after: float) -> int:
    """The Unix time (whole seconds, rounded up) ``after`` seconds from ``now``."""
    return min(math.ceil(now) + seconds_up(after - (math.ceil(now) - now)), _LATEST)


def rfc3339(now: float, after: float) -> str:
    """The UTC time ``after`` seconds from ``now`` as RFC 3339, rounded up to the second."""
    return _rfc3339(epoch_seconds(now, after))


@functools.lru_cache(maxsize=512)  # resets repeat: many requests share a second
def _rfc3339(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def utilization(status: LimitStatus) -> str:
    """``used / quota`` as a decimal (at most 4 places, rounded up; above 1 while in debt)."""
    ratio = max(status.used, 0) / status.limit.quota
    text = f"{math.ceil(round(ratio * 10_000, 6)) / 10_000:.4f}".rstrip("0").rstrip(".")
    return text or "0"


def most_restrictive(statuses: Sequence[LimitStatus]) -> LimitStatus:
    """Of limits in one unit: a refusing one with the longest wait, else the fewest remaining.

    Among equals, the one furthest from its full quota.
    """
    refused = [status for status in statuses if not status.allowed]
    if refused:
        return max(refused, key=lambda status: status.retry_after)
    return min(statuses, key=lambda status: (status.remaining, -status.reset_after))


def most_used(statuses: Sequence[LimitStatus]) -> LimitStatus:
    """A refusing limit with the longest wait, else the highest utilisation."""
    refused = [status for status in statuses if not status.allowed]
    if refused:
        return max(refused, key=lambda status: status.retry_after)
    return max(statuses, key=lambda status: (status.used / status.limit.quota, status.reset_after))
