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
- /usage for customers, and /metrics for operators.

`examples/demo.py` runs this very app under simulated customers (``create_app`` with
the demo's guard, exporter and a model that streams without pauses).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

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
from quotaguard.metrics import PrometheusExporter


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


REVOCATION = "Access suspended for a terms-of-service review; benchmark runs remain available."
OPERATOR = "ops:trust-and-safety"  # who revoked mallory, in the audit trail


def create_app(
    guard: AsyncGuard | None = None,
    exporter: PrometheusExporter | None = None,
    *,
    seconds_per_token: float = 0.01,
    tokens_per_event: int = 1,
) -> QuotaMiddleware:
    """Build the app.

    ``guard``: a new one on the memory backend (observed by ``exporter``) unless given.
    ``exporter``: served at /metrics; a new one unless given (a given guard should have
    it among its observers). The fake model streams ``tokens_per_event`` tokens per
    server-sent event, pausing ``seconds_per_token`` per token.
    """
    if exporter is None:
        exporter = PrometheusExporter()
    if guard is None:
        guard = AsyncGuard(PLANS, default_plan="free", observers=[exporter])
    identify = APIKey(lookup=CUSTOMERS.get)
    model = FakeModel(seconds_per_token, tokens_per_event)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Mallory broke the terms: revoked, but she keeps running the public benchmark.
        await guard.revoke(
            "mallory", REVOCATION, allow_scopes={"benchmark": "benchmark"}, actor=OPERATOR
        )
        yield

    api = FastAPI(title="Example LLM API", lifespan=lifespan)
    install(api)
    api.include_router(usage_router(guard, identify))

    @api.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:  # a route, not a mount: no redirect to /metrics/
        return Response(generate_latest(exporter.registry), media_type=CONTENT_TYPE_LATEST)

    @api.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @api.post("/v1/chat")
    async def chat(request: Request) -> StreamingResponse:
        return StreamingResponse(model.generate(request, await read(request)), media_type=SSE)

    @api.post("/v1/benchmark/run")
    async def benchmark(request: Request) -> StreamingResponse:
        return StreamingResponse(model.generate(request, await read(request)), media_type=SSE)

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


class FakeModel:
    """A fake model: echoes the prompt word by word, charging tokens as they stream."""

    def __init__(self, seconds_per_token: float, tokens_per_event: int) -> None:
        self.seconds_per_token = seconds_per_token
        self.tokens_per_event = tokens_per_event

    async def generate(self, request: Request, body: dict[str, Any]) -> AsyncIterator[bytes]:
        """The reply as server-sent events, ending with the token usage and ``[DONE]``."""
        prompt = str(body.get("prompt", ""))
        max_tokens = requested_tokens(body, 20)
        prompt_tokens = len(prompt.split())
        add_cost(request, prompt_tokens)  # input tokens count too
        words = ((prompt.split() or ["..."]) * max_tokens)[:max_tokens]
        for start in range(0, len(words), self.tokens_per_event):
            chunk = words[start : start + self.tokens_per_event]
            add_cost(request, len(chunk))
            yield f"data: {json.dumps({'token': ' '.join(chunk)})}\n\n".encode()
            if self.seconds_per_token:
                await asyncio.sleep(self.seconds_per_token * len(chunk))
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(words)}
        yield f"data: {json.dumps({'usage': usage})}\n\n".encode()
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
