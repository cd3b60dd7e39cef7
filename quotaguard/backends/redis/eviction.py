"""Whether the server's ``maxmemory-policy`` can evict quotaguard's keys."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

logger = logging.getLogger("quotaguard.backends.redis")

EvictionHook = Callable[[str], None]
"""Called once with the warning when the server can evict quotaguard's keys."""


def eviction_risk(policy: str) -> str | None:
    """What ``policy`` can evict, or None when it evicts nothing (``noeviction``)."""
    if policy == "noeviction":
        return None
    if policy.startswith("volatile"):
        return (
            f"maxmemory-policy {policy} can evict usage state and leases (keys with a TTL): "
            "an evicted customer gets their used quota back; settings and revocations "
            "(no TTL) stay"
        )
    return (
        f"maxmemory-policy {policy} can evict any key: usage state (quota given back), "
        "plan assignments, overrides and revocations"
    )


def policies(info: Any) -> list[str]:
    """The ``maxmemory_policy`` of each node in an ``INFO memory`` reply (one or per node)."""
    if not isinstance(info, Mapping):
        return []
    if "maxmemory_policy" in info:
        return [str(info["maxmemory_policy"])]
    return [policy for node in info.values() for policy in policies(node)]


def warn_about(info: Any, hook: EvictionHook | None) -> str | None:
    """Log (and pass to ``hook``) the risk of the riskiest policy in ``info``, once."""
    risks = [risk for risk in map(eviction_risk, policies(info)) if risk is not None]
    if not risks:
        return None
    risk = max(risks, key=lambda text: "any key" in text)
    logger.warning("quotaguard: %s; use noeviction (see docs/redis.md)", risk)
    if hook is not None:
        try:
            hook(risk)
        except Exception:
            logger.exception("quotaguard eviction hook %r failed", hook)
    return risk
