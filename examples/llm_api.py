"""An "LLM API" on FastAPI, rate limited per customer by quotaguard.

Run it:  .venv/bin/python examples/llm_api.py        (serves on http://127.0.0.1:8000)

    curl -N -H 'x-api-key: sk-pro-demo' -d '{"prompt": "hello there", "max_tokens": 40}' \
         http://127.0.0.1:8000/v1/chat -i
    curl -H 'x-api-key: sk-pro-demo' http://127.0.0.1:8000/usage
    curl -H 'x-api-key: sk-revoked-demo' -X POST http://127.0.0.1:8000/v1/chat -i   # 403
    curl -N -H 'x-api-key: sk-revoked-demo' -d '{"prompt": "x"}' \
         http://127.0.0.1:8000/v1/benchmark/run                                  # allowed
    curl http://127.0.0.1:8000/metrics

What it shows:
- plans free / pro / max, each with a burst limit, a 5-hour and a weekly token cap, and a
  limit on streams in flight;
- API keys hashed before use (the demo keys below map to customers by their hash);
- each chat reserves an estimate (the JSON body's max_tokens, read by the middleware and
  handed on untouched), streams, and settles the real token count when the stream ends,
  or at what was streamed if the client goes away;
- a revoked customer who keeps a small benchmark-only allowance;
- /usage for customers, and /metrics for operators (when quotaguard.metrics exists).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from quotaguard import AsyncGuard, Concurrency, Plan, RollingWindow, TokenBucket
from quotaguard.integrations import (
    APIKey,
    Identity,
    JSONBody,
    QuotaMiddleware,
    Route,
    add_cost,
    exempt,
    hash_key,
)
from quotaguard.integrations.fastapi import install, usage_router


def llm_plan(name: str, burst: int, refill: str, five_hour: int, weekly: int, streams: int) -> Plan:
    return Plan(
        name,
        [
            TokenBucket("burst", burst, refill),
            RollingWindow.from_rate("five_hour", f"{five_hour}/5 hours", unit="tokens"),
            RollingWindow.from_rate("weekly", f"{weekly}/week", unit="tokens"),
            Concurrency("streams", streams, lease_ttl="10 minutes"),
        ],
    )


PLANS = [
    llm_plan("free", 10, "1/6 seconds", 50_000, 500_000, 2),
    llm_plan("pro", 60, "1/second", 500_000, 5_000_000, 4),
    llm_plan("max", 200, "5/second", 2_500_000, 25_000_000, 16),
    # what a revoked customer may still use, and only in the "benchmark" scope
    Plan(
        "benchmark",
        [
            TokenBucket("burst", 5, "1/10 seconds"),
            RollingWindow.from_rate("bench_daily", "200000/day", unit="tokens"),
        ],
    ),
]

# The provider's customer table, keyed by the hash of each API key (never the key).
CUSTOMERS = {
    hash_key("sk-free-demo"): Identity("alice", "free"),
    hash_key("sk-pro-demo"): Identity("bob", "pro"),
    hash_key("sk-max-demo"): Identity("carol", "max"),
    hash_key("sk-revoked-demo"): Identity("mallory", "pro"),
}
SSE = "text/event-stream"
ESTIMATE = 1_000  # tokens reserved per chat whose body names no max_tokens
MAX_TOKENS = 4_096  # the most a chat may ask for


def create_app(guard: AsyncGuard | None = None) -> Any:
    """Build the app (a new guard on the memory backend unless one is given)."""
    observers: list[Any] = []
    metrics_app = None
    try:  # /metrics: mounted once the Prometheus exporter (quotaguard.metrics) exists
        from quotaguard.metrics import PrometheusExporter
    except ImportError:  # pragma: no cover - before the exporter is installed
        PrometheusExporter = None  # type: ignore[assignment,misc]
    if PrometheusExporter is not None:
        exporter = PrometheusExporter()
        observers.append(exporter)
        metrics_app = exporter.asgi_app()
    if guard is None:
        guard = AsyncGuard(PLANS, default_plan="free", observers=observers)
    identify = APIKey(lookup=CUSTOMERS.get)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Mallory broke the terms: revoked, but she keeps running the public benchmark.
        await guard.revoke(
            "mallory",
            "Access suspended for a terms-of-service review; benchmark runs remain available.",
            allow_scopes={"benchmark": "benchmark"},
        )
        yield

    api = FastAPI(title="Example LLM API", lifespan=lifespan)
    install(api)
    api.include_router(usage_router(guard, identify))
    if metrics_app is not None:
        api.mount("/metrics", metrics_app)

    @api.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @api.post("/v1/chat")
    async def chat(request: Request) -> StreamingResponse:
        return StreamingResponse(generate(request, await read(request)), media_type=SSE)

    @api.post("/v1/benchmark/run")
    async def benchmark(request: Request) -> StreamingResponse:
        return StreamingResponse(generate(request, await read(request)), media_type=SSE)

    return QuotaMiddleware(
        api,
        guard,
        identify=identify,
        routes=[
            exempt("/healthz"),
            exempt("/usage"),
            exempt("/metrics*"),
            Route(
                "/v1/chat",
                cost=JSONBody(estimate, default=ESTIMATE),
                unit="tokens",
                reports_cost=True,
            ),
            Route(
                "/v1/benchmark/run",
                cost=JSONBody(estimate, default=ESTIMATE),
                unit="tokens",
                reports_cost=True,
                scope="benchmark",
            ),
        ],
    )


def requested_tokens(body: dict[str, Any], default: int) -> int:
    """The body's ``max_tokens`` when it is a whole number in 1..MAX_TOKENS, else ``default``."""
    value = body.get("max_tokens")
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_TOKENS:
        return value
    return default


def estimate(body: Any) -> int:
    """The tokens to reserve for a chat: the JSON body's ``max_tokens``, else a default."""
    return requested_tokens(body, ESTIMATE) if isinstance(body, dict) else ESTIMATE


async def read(request: Request) -> dict[str, Any]:
    """The JSON body (read before streaming starts), or {}."""
    try:
        body = json.loads(await request.body() or b"{}")
    except (ValueError, RecursionError):
        return {}
    return body if isinstance(body, dict) else {}


async def generate(request: Request, body: dict[str, Any]) -> AsyncIterator[bytes]:
    """A fake model: echoes the prompt word by word, charging tokens as they stream."""
    prompt = str(body.get("prompt", ""))
    max_tokens = requested_tokens(body, 20)
    prompt_tokens = len(prompt.split())
    add_cost(request, prompt_tokens)  # input tokens count too
    words = (prompt.split() or ["..."]) * max_tokens
    for word in words[:max_tokens]:
        add_cost(request, 1)
        yield f"data: {json.dumps({'token': word})}\n\n".encode()
        await asyncio.sleep(0.01)
    yield b"data: [DONE]\n\n"


app = create_app()


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
