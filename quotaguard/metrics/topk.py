"""Bounded per-limit tables of the customers with the highest utilisation.

One `UtilizationTable` per (plan, limit) keeps the latest utilisation of at most
``capacity`` customers: those at or above ``min_utilization``, the highest first. It feeds
the top-K gauge (the K highest) and the near-limit counts (how many are above 80/90/100 %).

Memory is bounded whatever the number of customers: a customer enters only while the table
has room or when its utilisation beats the table's floor (the lowest value kept after the
last prune); the table is pruned back to ``capacity`` entries (highest utilisation kept)
once it overflows by a slack of a quarter, so a flood of distinct ids costs amortised
O(log capacity) per admitted id and never more than ``1.25 * capacity`` entries.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from operator import itemgetter

__all__ = ["UtilizationTable"]

_VALUE = itemgetter(1)


class UtilizationTable:
    """The latest utilisation of up to ``capacity`` customers of one (plan, limit).

    Values are ``used / quota`` as the customer's latest decision saw it; an entry not
    refreshed for ``stale_after`` seconds is dropped at the next prune or read.
    """

    __slots__ = ("_entries", "_floor", "_limit", "capacity", "min_utilization", "stale_after")

    def __init__(self, capacity: int, min_utilization: float, stale_after: float) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity!r}")
        self.capacity = capacity
        """The most customers kept after a prune."""
        self.min_utilization = min_utilization
        """Customers below this utilisation are not tracked."""
        self.stale_after = stale_after
        """Seconds after which an entry that was not refreshed is dropped."""
        self._entries: dict[str, list[float]] = {}  # customer -> [utilization, seen at]
        self._floor = min_utilization
        self._limit = capacity + max(16, capacity // 4)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def floor(self) -> float:
        """The utilisation a customer not yet tracked must reach to enter."""
        return self._floor

    def offer(self, updates: Iterable[tuple[str, float]], now: float) -> None:
        """Record the latest utilisation of customers, as ``(customer, value)`` pairs.

        Tracked customers are always refreshed (and dropped when they fall below
        ``min_utilization``); others enter only at or above the floor.
        """
        entries = self._entries
        floor = self._floor
        minimum = self.min_utilization
        for customer, value in updates:
            entry = entries.get(customer)
            if entry is not None:
                if value < minimum:
                    del entries[customer]
                else:
                    entry[0] = value
                    entry[1] = now
            elif value >= floor:
                entries[customer] = [value, now]
        if len(entries) > self._limit:
            self.prune(now)

    def tracked_among(self, customers: set[str]) -> set[str]:
        """The members of ``customers`` that are tracked now."""
        if not self._entries:
            return set()
        return self._entries.keys() & customers

    def prune(self, now: float) -> None:
        """Drop stale entries, then keep the ``capacity`` highest; recompute the floor."""
        entries = self._entries
        horizon = now - self.stale_after
        live = [(c, e[0]) for c, e in entries.items() if e[1] >= horizon]
        if len(live) > self.capacity:
            live.sort(key=_VALUE, reverse=True)
            del live[self.capacity :]
            self._floor = max(self.min_utilization, live[-1][1])
        else:
            self._floor = self.min_utilization
        keep = {c for c, _ in live}
        self._entries = {c: e for c, e in entries.items() if c in keep}

    def top(self, k: int, now: float) -> list[tuple[str, float]]:
        """The ``k`` customers with the highest utilisation, highest first."""
        self._drop_stale(now)
        return heapq.nlargest(k, ((c, e[0]) for c, e in self._entries.items()), key=_VALUE)

    def count_at_least(self, thresholds: Sequence[float], now: float) -> list[int]:
        """For each threshold, how many tracked customers are at or above it.

        Exact while fewer than ``capacity`` customers are above the lowest threshold;
        beyond that a lower bound.
        """
        self._drop_stale(now)
        counts = [0] * len(thresholds)
        for entry in self._entries.values():
            value = entry[0]
            for i, threshold in enumerate(thresholds):
                if value >= threshold:
                    counts[i] += 1
        return counts

    def _drop_stale(self, now: float) -> None:
        horizon = now - self.stale_after
        stale = [c for c, e in self._entries.items() if e[1] < horizon]
        for customer in stale:
            del self._entries[customer]
        if stale and len(self._entries) < self.capacity:
            self._floor = self.min_utilization
