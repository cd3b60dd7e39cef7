"""Clocks. Time is read in integer microseconds since the epoch."""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """Anything that tells the time in microseconds since the epoch."""

    def now_us(self) -> int:
        """The current time in integer microseconds since the epoch."""
        ...


class SystemClock:
    """The host's wall clock (``time.time_ns``)."""

    __slots__ = ()

    def now_us(self) -> int:
        """The current time in integer microseconds since the epoch."""
        return time.time_ns() // 1000

    def __repr__(self) -> str:
        return "SystemClock()"
