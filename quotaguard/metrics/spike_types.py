"""What spike detection is configured with and what it reports.

See `quotaguard.metrics.spikes` for the estimator.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import attrs

__all__ = ["SpikeConfig", "SpikeEvent", "SpikeHook"]


def _positive(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{attribute.name} must be a positive number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{attribute.name} must be finite, got {value!r}")


def _non_negative(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        raise ValueError(f"{attribute.name} must be a finite number >= 0, got {value!r}")


@attrs.frozen
class SpikeConfig:
    """How spikes are measured and when the spike hook fires. Times are in seconds."""

    short_window: float = attrs.field(default=300.0, validator=_positive)
    """The shortest time scale of the recent rate; the ladder doubles it up to
    ``long_window / 8``."""
    long_window: float = attrs.field(default=604_800.0, validator=_positive)
    """Time constant of the baseline (the customer's own normal rate)."""
    ratio: float = attrs.field(default=10.0, validator=_positive)
    """The hook fires when a customer's spike ratio rises to this value; it fires again
    only after the ratio has fallen below 80 % of it."""
    min_history: float = attrs.field(default=3600.0, validator=_non_negative)
    """No ratio is reported for a customer tracked for less than this."""
    min_events: float = attrs.field(default=6.0, validator=_positive)
    """Minimum evidence: a time scale counts only when the baseline expects at least this
    many events in it; warm-up needs ``4 * min_events`` events in the baseline."""
    prior_events: float = attrs.field(default=4.0, validator=_non_negative)
    """Shrinkage toward 1: this many events at the baseline's mean size are added to both
    the seen and the expected units of every scale."""
    capacity: int = attrs.field(default=1024)
    """The most customers tracked at once."""
    fold_interval: float = attrs.field(default=10.0, validator=_positive)
    """Pending units are folded into the averages at least this often (when traffic, a
    scrape or the exporter's timer comes)."""
    enabled: bool = True
    """False turns spike tracking (and its gauge) off."""

    @capacity.validator
    def _check_capacity(self, _: attrs.Attribute[int], value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"capacity must be a positive integer, got {value!r}")

    def __attrs_post_init__(self) -> None:
        if self.long_window < 8 * self.short_window:
            raise ValueError(
                f"long_window ({self.long_window}) must be at least 8 times short_window "
                f"({self.short_window})"
            )

    @property
    def scales(self) -> tuple[float, ...]:
        """The recent rate's time scales: ``short_window`` doubled up to ``long_window / 8``."""
        scales = [self.short_window]
        while scales[-1] * 2 <= self.long_window / 8:
            scales.append(scales[-1] * 2)
        return tuple(scales)


@attrs.frozen
class SpikeEvent:
    """A customer whose spike ratio rose to the configured threshold."""

    customer: str
    """The customer."""
    plan: str
    """The plan of the customer's latest decision."""
    ratio: float
    """Recent rate over the baseline, shrunk toward 1 (see the module doc)."""
    rate: float
    """Recent rate at the scale that gave the ratio, in units per second."""
    baseline: float
    """Baseline rate, in units per second."""
    at: float
    """When it was detected, in seconds since the epoch (the exporter's clock)."""
    window: float = 0.0
    """The time scale, in seconds, that gave the ratio."""


SpikeHook = Callable[[SpikeEvent], object]
"""A callable that receives each `SpikeEvent`."""
