"""Integrations: decorators, a pure ASGI middleware, and FastAPI helpers.

Everything here only calls the guard. Nothing imports a web framework at import time:
`quotaguard.integrations.fastapi` imports FastAPI when it is itself imported.
"""

from quotaguard.integrations.asgi import (
    QuotaMiddleware,
    RequestQuota,
    add_cost,
    report_cost,
    request_quota,
)
from quotaguard.integrations.decorators import limit
from quotaguard.integrations.dialects import Dialect
from quotaguard.integrations.headers import HeaderOptions, rate_limit_headers
from quotaguard.integrations.identify import (
    APIKey,
    BearerClaim,
    ClientIP,
    FirstOf,
    Identifier,
    Identity,
    hash_key,
)
from quotaguard.integrations.problem import Problem, ProblemTypes, problem_for
from quotaguard.integrations.routes import JSONBody, Route, Routes, exempt
from quotaguard.integrations.usage import UsageEndpoint, usage_document

__all__ = [
    "APIKey",
    "BearerClaim",
    "ClientIP",
    "Dialect",
    "FirstOf",
    "HeaderOptions",
    "Identifier",
    "Identity",
    "JSONBody",
    "Problem",
    "ProblemTypes",
    "QuotaMiddleware",
    "RequestQuota",
    "Route",
    "Routes",
    "UsageEndpoint",
    "add_cost",
    "exempt",
    "hash_key",
    "limit",
    "problem_for",
    "rate_limit_headers",
    "report_cost",
    "request_quota",
    "usage_document",
]
