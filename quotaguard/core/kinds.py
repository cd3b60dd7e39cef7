"""Per limit kind, the core's functions, by ``limit.__class__``.

The tables the engine and its compiled evaluations dispatch on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from quotaguard.core import concurrency, rolling_window, token_bucket
from quotaguard.core.decision import LimitStatus
from quotaguard.core.policy import Concurrency, RollingWindow, TokenBucket

Step = Callable[[Any, Any, int, float, Any], tuple[Any, bool, float, float]]
StatusOf = Callable[[Any, Any, int, bool, float], LimitStatus]
Check = Callable[[Any, Any, int, float, Any], tuple[Any, LimitStatus, float]]
Settle = Callable[[Any, Any, int, int, str, float], tuple[Any, float]]

STEPS: dict[type, Step] = {
    TokenBucket: token_bucket.step,
    RollingWindow: rolling_window.step,
    Concurrency: concurrency.step,
}
STATUSES: dict[type, StatusOf] = {
    TokenBucket: token_bucket.status_of,
    RollingWindow: rolling_window.status_of,
    Concurrency: concurrency.status_of,
}


SHOWN: dict[type, tuple[Callable[[Any, Any, int], tuple[int, float]], float]] = {
    TokenBucket: (token_bucket.shown, 1e6),
    RollingWindow: (rolling_window.shown, 1e6),
    Concurrency: (concurrency.level, 1.0),
}
"""Per kind: ``(limit, state, now) -> (remaining, refill-after)``, the refill in units of
the second entry per second: divided by it, the two fields of the limit's status."""
USED: dict[type, Callable[[Any, Any, int], float]] = {
    TokenBucket: token_bucket.used,
    RollingWindow: rolling_window.used,
    Concurrency: concurrency.used,
}
CHECKS: dict[type, Check] = {
    TokenBucket: token_bucket.check,
    RollingWindow: rolling_window.check,
    Concurrency: concurrency.check,
}
SETTLES: dict[type, Settle] = {
    TokenBucket: token_bucket.settle,
    RollingWindow: rolling_window.settle,
    Concurrency: concurrency.settle,
}
