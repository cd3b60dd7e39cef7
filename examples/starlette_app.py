"""A plain Starlette app behind QuotaMiddleware: per-IP limits for anonymous callers,
per-key limits for customers, an exempt health check and a /usage endpoint.

Run it:  .venv/bin/python examples/starlette_app.py     (serves on http://127.0.0.1:8001)

    curl -i http://127.0.0.1:8001/                               # anonymous: 5/minute per IP
    curl -i -H 'x-api-key: sk-basic-demo' http://127.0.0.1:8001/ # dana, on the "basic" plan
    curl -i -H 'x-api-key: sk-basic-demo' http://127.0.0.1:8001/usage
    curl -i -H 'x-api-key: made-up' http://127.0.0.1:8001/       # unknown key: anonymous

Keys are looked up by their hash in the customer table; an unknown key is just an
anonymous caller, limited per IP, so inventing keys gains nothing.
"""

from __future__ import annotations

import argparse
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from quotaguard import AsyncGuard, Plan, RollingWindow, TokenBucket
from quotaguard.integrations import (
    APIKey,
    ClientIP,
    HeaderOptions,
    Identity,
    QuotaMiddleware,
    UsageEndpoint,
    exempt,
    hash_key,
    request_quota,
)
from quotaguard.integrations import Route as QuotaRoute

PLANS = [
    Plan("anonymous", [TokenBucket("burst", 5, "5/minute")]),
    Plan(
        "basic",
        [
            TokenBucket("burst", 20, "2/second"),
            RollingWindow.from_rate("daily", "10000/day"),
        ],
    ),
]

# The customer table, keyed by the hash of each API key (never the key itself).
CUSTOMERS = {hash_key("sk-basic-demo"): Identity("dana", "basic")}


async def home(request: Request) -> JSONResponse:
    quota = request_quota(request)
    plan = quota.decision.plan if quota is not None else None
    return JSONResponse({"hello": "world", "plan": plan})


async def search(request: Request) -> JSONResponse:
    return JSONResponse({"results": []})


def create_app(guard: AsyncGuard | None = None) -> Any:
    guard = guard or AsyncGuard(PLANS, default_plan="basic")
    identify = [APIKey(lookup=CUSTOMERS.get), ClientIP(trusted_proxies=[], plan="anonymous")]
    app = Starlette(
        routes=[
            Route("/", home),
            Route("/search", search),
            Route("/healthz", lambda request: PlainTextResponse("ok")),
            Route("/usage", UsageEndpoint(guard, identify)),
        ]
    )
    return QuotaMiddleware(
        app,
        guard,
        identify=identify,
        routes=[
            exempt("/healthz"),
            exempt("/usage"),
            QuotaRoute("/search", cost=5, methods=["GET", "POST"]),  # searches cost 5
        ],
        headers=HeaderOptions(legacy=True),  # X-RateLimit-* too, for older clients
    )


app = create_app()


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="quotaguard Starlette example")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
