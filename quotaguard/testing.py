"""Public helpers for testing code that uses quotaguard: tests never need to sleep."""

from __future__ import annotations

import math
import threading

from quotaguard.core.errors import ConfigurationError

__all__ = ["FakeClock"]


class FakeClock:
    """A clock that moves only when told to.

    ``Guard(plans, clock=FakeClock())``, then ``clock.advance(30)`` to let 30 seconds
    pass. Safe to share between threads.
    """

    def __init__(self, start: float = 1_767_225_600.0) -> None:
        """Start at ``start`` seconds since the epoch (default 2026-01-01T00:00:00Z)."""
        self._now_us = self._to_us(start, "start")
        self._lock = threading.Lock()

    @staticmethod
    def _to_us(seconds: float, what: str) -> int:
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise ConfigurationError(f"{what} must be a number of seconds, got {seconds!r}")
        if not math.isfinite(seconds):
            raise ConfigurationError(f"{what} must be finite, got {seconds!r}")
        return round(seconds * 1_000_000)

    def now_us(self) -> int:
        """The fake time in integer microseconds since the epoch."""
        return self._now_us

    def now(self) -> float:
        """The fake time in seconds since the epoch."""
        return self._now_us / 1_000_000

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (not backwards)."""
        step = self._to_us(seconds, "advance")
        if step < 0:
            raise ConfigurationError(f"a FakeClock only moves forward; got advance({seconds!r})")
        with self._lock:
            self._now_us += step

    def set(self, seconds: float) -> None:
        """Jump to ``seconds`` since the epoch (not backwards)."""
        target = self._to_us(seconds, "set")
        with self._lock:
            if target < self._now_us:
                raise ConfigurationError(
                    f"a FakeClock only moves forward; set({seconds!r}) is in its past"
                )
            self._now_us = target

    def __repr__(self) -> str:
        return f"FakeClock(now={self.now()!r})"
