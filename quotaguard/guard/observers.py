"""Who hears about the guard's decisions, and how they are told without harm."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from quotaguard.core.decision import Decision, Settlement
from quotaguard.core.errors import BackendUnavailable

logger = logging.getLogger("quotaguard")


class Observer(Protocol):
    """Receives every decision the guard makes (e.g. the Prometheus exporter)."""

    def on_decision(self, decision: Decision, backend: str, elapsed: float) -> None:
        """Called after each decision; ``elapsed`` is the backend time in seconds."""
        ...

    def on_backend_error(self, backend: str, error: BackendUnavailable) -> None:
        """Called when the backend failed and the failure policy decided."""
        ...


class SettlementObserver(Observer, Protocol):
    """An observer that also wants settlements (optional: checked with ``getattr``)."""

    def on_settlement(self, settlement: Settlement, customer: str, plan: str | None) -> None:
        """Called after a lease is settled for the first time."""
        ...


def tell_decision(
    observers: Sequence[Observer], decision: Decision, backend: str, elapsed: float
) -> None:
    """Tell every observer of ``decision``; an observer that fails is logged, not raised."""
    for observer in observers:
        try:
            observer.on_decision(decision, backend, elapsed)
        except Exception:
            logger.exception("quotaguard observer %r failed", observer)


def tell_backend_error(
    observers: Sequence[Observer], backend: str, error: BackendUnavailable
) -> None:
    """Tell every observer that ``backend`` failed."""
    for observer in observers:
        try:
            observer.on_backend_error(backend, error)
        except Exception:
            logger.exception("quotaguard observer %r failed", observer)


def tell_settlement(
    observers: Sequence[Observer], settlement: Settlement, customer: str | None, plan: str | None
) -> None:
    """Tell the observers that want settlements of a first settlement."""
    if settlement.already_settled:
        return
    for observer in observers:
        hook = getattr(observer, "on_settlement", None)
        if hook is not None:
            try:
                hook(settlement, customer or "", plan)
            except Exception:
                logger.exception("quotaguard observer %r failed", observer)
