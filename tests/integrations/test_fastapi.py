"""The FastAPI dependency, problem handler and /usage router, against a real server."""

# no "from __future__ import annotations": FastAPI reads the local Annotated dependencies
from typing import Annotated, Any

import httpx
from fastapi import Depends, FastAPI

from quotaguard import AsyncGuard, Decision, MemoryBackend, Plan, RollingWindow, TokenBucket
from quotaguard.integrations import APIKey, hash_key
from quotaguard.integrations.fastapi import RateLimit, install, usage_router
from quotaguard.testing import FakeClock

from .conftest import serve
from .sfv import as_dict

PLANS = [
    Plan(
        "pro",
        [
            TokenBucket("burst", 2, "1/10 seconds"),
            RollingWindow.from_rate("weekly", "1000/week", unit="tokens"),
        ],
    )
]
AUTH = {"x-api-key": "k-1"}
CUSTOMER = "key-" + hash_key("k-1")


def make_app(guard: AsyncGuard) -> FastAPI:
    app = FastAPI()
    install(app)
    identify = APIKey(accept_any_key=True)
    app.include_router(usage_router(guard, identify))

    limited = RateLimit(guard, identify)

    @app.get("/items")
    async def items(decision: Annotated[Decision, Depends(limited)]) -> dict[str, Any]:
        return {"plan": decision.plan}

    @app.post("/embed", dependencies=[Depends(RateLimit(guard, identify, cost=300, unit="tokens"))])
    async def embed() -> dict[str, str]:
        return {"ok": "yes"}

    return app


def test_dependency_headers_problems_and_usage() -> None:
    clock = FakeClock()
    guard = AsyncGuard(PLANS, MemoryBackend(clock=clock), default_plan="pro", clock=clock)
    with serve(make_app(guard)) as url, httpx.Client(base_url=url, headers=AUTH) as client:
        first = client.get("/items")
        assert first.status_code == 200 and first.json() == {"plan": "pro"}
        assert as_dict(first.headers["ratelimit"])["burst"] == {"r": 1, "t": 10}
        assert first.headers["ratelimit-policy"] == (
            '"burst";q=2;w=20, "weekly";q=1000;w=604800;qg-unit="tokens"'
        )
        clock.advance(10)
        embeds = [client.post("/embed") for _ in range(4)]
        assert [response.status_code for response in embeds] == [200, 200, 429, 429]
        refused = embeds[2]
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.headers["retry-after"] == "10"
        assert refused.headers["cache-control"] == "no-store"
        assert refused.json()["violated-policies"] == ["burst"]
        assert refused.json()["status"] == 429
        usage = client.get("/usage").json()
        anonymous = httpx.get(url + "/usage")
    assert usage == {
        "plan": "pro",
        "limits": [
            {
                "name": "burst",
                "kind": "token_bucket",
                "unit": "requests",
                "quota": 2,
                "used": 2,
                "remaining": 0,
                "window_seconds": 20,
                "refill_after_seconds": 10,
                "reset_after_seconds": 20,
            },
            {
                "name": "weekly",
                "kind": "rolling_window",
                "unit": "tokens",
                "quota": 1000,
                "used": 600,
                "remaining": 400,
                "window_seconds": 604800,
                "refill_after_seconds": usage["limits"][1]["refill_after_seconds"],
                "reset_after_seconds": usage["limits"][1]["reset_after_seconds"],
            },
        ],
        "revoked": None,
    }
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"] == "application/problem+json"


def test_revoked_customer_sees_403_and_the_reason_in_usage() -> None:
    guard = AsyncGuard(PLANS, default_plan="pro")
    import asyncio

    asyncio.run(guard.revoke(CUSTOMER, "Chargeback under review"))
    with serve(make_app(guard)) as url, httpx.Client(base_url=url, headers=AUTH) as client:
        refused = client.get("/items")
        usage = client.get("/usage").json()
    assert refused.status_code == 403
    assert refused.json()["detail"] == "Chargeback under review"
    assert usage["revoked"] == {"reason": "Chargeback under review", "allowed_scopes": []}
