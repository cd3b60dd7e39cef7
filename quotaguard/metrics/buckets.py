"""Histogram bucket counts kept by quotaguard itself, filled in bulk.

A `Buckets` holds what a Prometheus histogram holds (a count per bucket and a sum) as
plain numbers, so many observations are added with one sort and one ``bisect`` per
bucket bound, and an observation can stand for several (sampling weights).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence

__all__ = ["Buckets"]


class Buckets:
    """Counts per bucket (not cumulative; the last one is ``+Inf``) and the sum."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds: tuple[float, ...] = tuple(bounds)
        """The finite upper bounds, increasing."""
        self.counts: list[float] = [0] * (len(self.bounds) + 1)
        """Observations per bucket: ``counts[i]`` are those in ``(bounds[i-1], bounds[i]]``;
        the last entry holds those above every bound."""
        self.total = 0.0
        """The sum of the observations."""

    @property
    def count(self) -> float:
        """How many observations."""
        return sum(self.counts)

    def cumulative(self) -> list[float]:
        """Prometheus' bucket values: observations at or below each bound, then all."""
        running = 0.0
        values = []
        for count in self.counts:
            running += count
            values.append(running)
        return values

    def add(self, raw: list[float], weight: int = 1, scale: float = 1.0) -> None:
        """Observe ``x / scale``, ``weight`` times, for each ``x`` of ``raw``.

        The bucket bounds are scaled instead of the values, so the values are only sorted.
        """
        if not raw:
            return
        ordered = sorted(raw)
        counts = self.counts
        previous = 0
        for i, bound in enumerate(self.bounds):
            cumulative = bisect_right(ordered, bound * scale)
            if cumulative > previous:
                counts[i] += (cumulative - previous) * weight
                previous = cumulative
        if len(ordered) > previous:
            counts[-1] += (len(ordered) - previous) * weight
        self.total += math.fsum(ordered) * weight / scale
