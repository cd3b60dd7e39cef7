"""The ``/usage`` endpoints answer only GET and HEAD, and a 401 in the dialect spoken,
against a real uvicorn server."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.routing import Route as StarletteRoute

from quotaguard import AsyncGuard, Plan, TokenBucket
from quotaguard.integrations import APIKey, Identity, UsageEndpoint, hash_key
from quotaguard.integrations.fastapi import RateLimit, install, usage_router

from .conftest import serve

PLANS = [Plan("pro", [TokenBucket("burst", 10, "10/minute")])]
CUSTOMERS = {hash_key("sk-pro"): Identity("acme", "pro")}
PRO = {"x-api-key": "sk-pro"}
CHALLENGE = 'APIKey realm="usage", header="x-api-key"'


def _guard() -> AsyncGuard:
    return AsyncGuard(PLANS, default_plan="pro")


def _starlette(guard: AsyncGuard, **options: Any) -> Starlette:
    endpoint = UsageEndpoint(guard, APIKey(lookup=CUSTOMERS.get), **options)
    return Starlette(routes=[StarletteRoute("/usage", endpoint)])


def _fastapi(guard: AsyncGuard, **options: Any) -> FastAPI:
    api = FastAPI()
    install(api)
    api.include_router(usage_router(guard, APIKey(lookup=CUSTOMERS.get), **options))
    return api


@pytest.mark.parametrize("make", [_starlette, _fastapi])
def test_usage_answers_get_and_head_only(make: Any) -> None:
    guard = _guard()
    with serve(make(guard)) as url, httpx.Client(base_url=url, headers=PRO) as client:
        got = client.get("/usage")
        head = client.head("/usage")
        posted = client.post("/usage", json={"reset": True})
        deleted = client.delete("/usage")
    assert got.status_code == 200 and got.json()["plan"] == "pro"
    assert head.status_code == 200 and head.content == b""
    for refused in (posted, deleted):
        assert refused.status_code == 405
        assert set(refused.headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD"}


def test_the_usage_endpoints_405_is_a_problem() -> None:
    with serve(_starlette(_guard())) as url, httpx.Client(base_url=url, headers=PRO) as client:
        refused = client.put("/usage")
    assert refused.status_code == 405
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["status"] == 405


@pytest.mark.parametrize("make", [_starlette, _fastapi])
def test_usage_401_speaks_the_dialect(make: Any) -> None:
    guard = _guard()
    for dialect, check in (
        ("openai", lambda body: body["error"]["code"] == "invalid_api_key"),
        ("anthropic", lambda body: body["error"]["type"] == "authentication_error"),
    ):
        app = make(guard, dialect=dialect, challenge=CHALLENGE)
        with serve(app) as url, httpx.Client(base_url=url) as client:
            nobody = client.get("/usage")
        assert nobody.status_code == 401
        assert nobody.headers["content-type"] == "application/json"
        assert nobody.headers["www-authenticate"] == CHALLENGE
        assert check(nobody.json()), nobody.json()
    with serve(make(guard)) as url, httpx.Client(base_url=url) as client:
        ietf = client.get("/usage")
    assert ietf.headers["content-type"] == "application/problem+json"


def test_the_fastapi_dependency_keeps_its_challenge_under_a_dialect() -> None:
    api = FastAPI()
    install(api)
    limited = RateLimit(
        _guard(), APIKey(lookup=CUSTOMERS.get), dialect="openai", challenge=CHALLENGE
    )

    @api.get("/items", dependencies=[Depends(limited)])
    async def items() -> dict[str, str]:
        return {"ok": "yes"}

    with serve(api) as url, httpx.Client(base_url=url) as client:
        nobody = client.get("/items")
    assert nobody.status_code == 401
    assert nobody.headers["www-authenticate"] == CHALLENGE
    assert nobody.json()["error"]["code"] == "invalid_api_key"
