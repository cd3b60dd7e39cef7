"""Per-request overhead of rate limiting an ASGI app, measured in one run.

Run it:  .venv/bin/python benchmarks/bench_asgi.py [--requests 20000] [--rounds 7]

A raw ASGI call loop (no server, no sockets): each app is called directly with a fresh
HTTP scope, a ``receive`` that yields an empty body and a ``send`` that drops messages.
Apps, all around the same Starlette route returning "ok":

- bare Starlette;
- quotaguard ``QuotaMiddleware`` (AsyncGuard, memory backend, a 3-limit plan: burst token
  bucket + 5-hour window + weekly window; customer from a hashed API-key header;
  ``RateLimit-Policy`` and ``RateLimit`` headers on every response);
- slowapi's ``@limiter.limit`` decorator (memory storage; one limit, and three limits);
- slowapi's ``SlowAPIMiddleware`` (memory storage, one default limit).

Limits are generous so nothing is ever refused. Rounds are interleaved (every app once
per round), so drift on a noisy machine hits all apps alike; the table shows each app's
best round (the least disturbed, as ``timeit`` advises) and, for reference, its median.
Target: quotaguard adds at most half of what slowapi's decorator adds.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from slowapi import Limiter, _rate_limit_exceeded_handler
from slowapi.errors import RateLimitExceeded
from slowapi.middleware import SlowAPIMiddleware
from slowapi.util import get_remote_address
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from quotaguard import AsyncGuard, Plan, RollingWindow, TokenBucket
from quotaguard.integrations import APIKey, QuotaMiddleware, hash_key

App = Callable[..., Any]

PLAN = Plan(
    "pro",
    [
        TokenBucket("burst", 1_000_000_000, "1000000/second"),
        RollingWindow.from_rate("five_hour", "1000000000/5 hours"),
        RollingWindow.from_rate("weekly", "1000000000/week"),
    ],
)
KEY = "sk-live-0123456789abcdef0123456789abcdef"
ONE_LIMIT = "100000000/minute"
THREE_LIMITS = "100000000/minute;1000000000/hour;10000000000/day"


async def ok(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def bare() -> App:
    return Starlette(routes=[Route("/", ok)])


def quotaguard_middleware() -> App:
    guard = AsyncGuard([PLAN], default_plan="pro")
    customers = {hash_key(KEY): "customer-1"}  # the documented setup: a key table by hash
    return QuotaMiddleware(bare(), guard, identify=APIKey(lookup=customers.get))


def slowapi_decorator(limits: str) -> App:
    limiter = Limiter(key_func=get_remote_address, storage_uri="memory://")

    @limiter.limit(limits)
    async def limited(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/", limited)])
    app.state.limiter = limiter
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]
    return app


def slowapi_middleware() -> App:
    limiter = Limiter(
        key_func=get_remote_address, storage_uri="memory://", default_limits=[ONE_LIMIT]
    )
    app = Starlette(routes=[Route("/", ok)])
    app.state.limiter = limiter
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]
    app.add_middleware(SlowAPIMiddleware)
    return app


SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0", "spec_version": "2.3"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/",
    "raw_path": b"/",
    "root_path": "",
    "query_string": b"",
    "headers": [
        (b"host", b"127.0.0.1:8000"),
        (b"user-agent", b"bench"),
        (b"x-api-key", KEY.encode()),
    ],
    "client": ("127.0.0.1", 50000),
    "server": ("127.0.0.1", 8000),
}
REQUEST = {"type": "http.request", "body": b"", "more_body": False}


async def receive() -> dict[str, Any]:
    return REQUEST


statuses: list[int] = []


async def send(message: dict[str, Any]) -> None:
    if message["type"] == "http.response.start":
        statuses.append(message["status"])


async def run(app: App, requests: int) -> float:
    """Seconds per request over ``requests`` calls."""
    scope = SCOPE
    gc.collect()
    started = time.perf_counter()
    for _ in range(requests):
        await app(dict(scope), receive, send)
    elapsed = time.perf_counter() - started
    return elapsed / requests


async def main(requests: int, rounds: int) -> int:
    apps: dict[str, App] = {
        "bare Starlette": bare(),
        "quotaguard QuotaMiddleware (3 limits)": quotaguard_middleware(),
        "slowapi @limiter.limit (1 limit)": slowapi_decorator(ONE_LIMIT),
        "slowapi @limiter.limit (3 limits)": slowapi_decorator(THREE_LIMITS),
        "slowapi SlowAPIMiddleware (1 limit)": slowapi_middleware(),
    }
    for app in apps.values():  # warm up and check that every app answers 200
        statuses.clear()
        await run(app, 2_000)
        assert set(statuses) == {200}, statuses[:3]
    for name in ("slowapi @limiter.limit (1 limit)", "slowapi @limiter.limit (3 limits)"):
        counters = apps[name].state.limiter._storage.storage  # every limit really counted
        assert len(counters) == name.count("3") * 2 + 1, counters
    samples: dict[str, list[float]] = {name: [] for name in apps}
    for _ in range(rounds):
        for name, app in apps.items():
            samples[name].append(await run(app, requests))
    median = {name: statistics.median(values) * 1e6 for name, values in samples.items()}
    best = {name: min(values) * 1e6 for name, values in samples.items()}
    base = best["bare Starlette"]
    added = {name: value - base for name, value in best.items()}
    added_median = {name: value - median["bare Starlette"] for name, value in median.items()}
    reference = added["slowapi @limiter.limit (1 limit)"]
    ours = added["quotaguard QuotaMiddleware (3 limits)"]

    print(f"Python {sys.version.split()[0]}, {requests} requests x {rounds} rounds")
    print()
    print(
        f"| {'app':<38} | {'us/req best':>11} | {'added us':>8} | {'vs slowapi dec.':>15} "
        f"| {'us/req median':>13} | {'added (median)':>14} |"
    )
    print(f"| {'-' * 38} | {'-' * 10}: | {'-' * 7}: | {'-' * 14}: | {'-' * 12}: | {'-' * 13}: |")
    for name in apps:
        bare_row = name == "bare Starlette"
        ratio = "" if bare_row else f"{added[name] / reference:.2f}x"
        extra = "" if bare_row else f"{added[name]:+.1f}"
        extra_median = "" if bare_row else f"{added_median[name]:+.1f}"
        print(
            f"| {name:<38} | {best[name]:>11.1f} | {extra:>8} | {ratio:>15} "
            f"| {median[name]:>13.1f} | {extra_median:>14} |"
        )
    print()
    verdict = "MET" if ours <= reference / 2 else "NOT MET"
    print(
        f"target: quotaguard adds <= 1/2 of slowapi's decorator (1 limit): {ours:.1f} us vs "
        f"{reference:.1f} us ({ours / reference:.2f}x) -> {verdict}"
    )
    same_work = added["slowapi @limiter.limit (3 limits)"]
    print(
        f"same work (3 limits each): {ours:.1f} us vs {same_work:.1f} us ({ours / same_work:.2f}x)"
    )
    return 0 if verdict == "MET" else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="ASGI per-request overhead")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    arguments = parser.parse_args()
    sys.exit(asyncio.run(main(arguments.requests, arguments.rounds)))
