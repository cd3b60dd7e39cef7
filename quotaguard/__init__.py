"""quotaguard: per-customer rate limits and usage quotas for Python services."""

from quotaguard._version import __version__
from quotaguard.backends import AsyncBackend, Backend, MemoryBackend
from quotaguard.backends.redis import AsyncRedisBackend, RedisBackend
from quotaguard.clock import Clock, SystemClock
from quotaguard.core.audit import AuditEntry
from quotaguard.core.catalogue import PlanCatalogue
from quotaguard.core.customer import CustomerMeta, Revocation
from quotaguard.core.decision import Decision, LimitStatus, Outcome, Settlement
from quotaguard.core.errors import (
    BackendUnavailable,
    ConfigurationError,
    InvalidRequestError,
    LeaseError,
    QuotaExceeded,
    QuotaguardError,
    UnknownLimitError,
    UnknownPlanError,
)
from quotaguard.core.policy import Concurrency, Limit, Plan, RollingWindow, TokenBucket
from quotaguard.core.rates import Rate, parse_rate
from quotaguard.guard import AsyncGuard, Guard, Observer, Usage
from quotaguard.lease import AsyncLease, Lease

__all__ = [
    "AsyncBackend",
    "AsyncGuard",
    "AsyncLease",
    "AsyncRedisBackend",
    "AuditEntry",
    "Backend",
    "BackendUnavailable",
    "Clock",
    "Concurrency",
    "ConfigurationError",
    "CustomerMeta",
    "Decision",
    "Guard",
    "InvalidRequestError",
    "Lease",
    "LeaseError",
    "Limit",
    "LimitStatus",
    "MemoryBackend",
    "Observer",
    "Outcome",
    "Plan",
    "PlanCatalogue",
    "QuotaExceeded",
    "QuotaguardError",
    "Rate",
    "RedisBackend",
    "Revocation",
    "RollingWindow",
    "Settlement",
    "SystemClock",
    "TokenBucket",
    "UnknownLimitError",
    "UnknownPlanError",
    "Usage",
    "__version__",
    "parse_rate",
]
