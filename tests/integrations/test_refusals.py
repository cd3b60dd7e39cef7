"""What the HTTP layer answers when the guard cannot decide, and the wire details of
refusals, against a real uvicorn server (issue 11, items 3 to 6)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route as StarletteRoute

from quotaguard import (
    AsyncGuard,
    Concurrency,
    ConfigurationError,
    Guard,
    MemoryBackend,
    Plan,
    RollingWindow,
    TokenBucket,
)
from quotaguard.integrations import (
    APIKey,
    BearerClaim,
    ClientIP,
    HeaderOptions,
    Identity,
    JSONBody,
    QuotaMiddleware,
    Route,
    UsageEndpoint,
    hash_key,
)
from quotaguard.integrations.fastapi import RateLimit, install, usage_router
from quotaguard.testing import FakeClock

from .conftest import serve, wait_for
from .sfv import as_dict
from .test_middleware import DownBackend

PLANS = [
    Plan(
        "pro",
        [
            TokenBucket("burst", 100, "1/second"),
            RollingWindow.from_rate("weekly", "50000/week", unit="tokens"),
            Concurrency("streams", 1, lease_ttl="10 minutes"),
        ],
    ),
    Plan("anonymous", [TokenBucket("burst", 5, "5/minute")]),
]
CUSTOMERS = {
    hash_key("sk-pro"): Identity("acme", "pro"),
    hash_key("sk-enterprise"): Identity("bigco", "enterprise"),  # a plan nobody defined
}
PRO = {"x-api-key": "sk-pro"}
ENTERPRISE = {"x-api-key": "sk-enterprise"}


async def echo(request: Request) -> Response:
    body = await request.body()
    return Response(body, headers={"x-seen-length": str(len(body))})


async def settled(request: Request) -> Response:
    return PlainTextResponse("done", headers={"x-usage-tokens": request.query_params["report"]})


async def hold(request: Request) -> Response:
    await asyncio.sleep(float(request.query_params.get("for", "0")))
    return PlainTextResponse("held")


def starlette_app(guard: AsyncGuard) -> Starlette:
    return Starlette(
        routes=[
            StarletteRoute("/v1/chat", echo, methods=["POST", "GET"]),
            StarletteRoute("/settled", settled),
            StarletteRoute("/hold", hold),
            StarletteRoute("/usage", UsageEndpoint(guard)),
            StarletteRoute("/{rest:path}", echo),
        ]
    )


def max_tokens(body: Any) -> Any:
    return body["max_tokens"]


def app_for(guard: AsyncGuard, **options: Any) -> QuotaMiddleware:
    options.setdefault("identify", [APIKey(lookup=CUSTOMERS.get), ClientIP(plan="anonymous")])
    routes = [
        Route(
            "/v1/chat",
            cost=JSONBody(max_tokens, default=1000, max_bytes=4096),
            unit="tokens",
            reports_cost=True,
        ),
        Route("/settled", cost=2000, unit="tokens", settle_header="x-usage-tokens"),
    ]
    return QuotaMiddleware(starlette_app(guard), guard, routes=routes, **options)


def guards() -> tuple[AsyncGuard, Guard, FakeClock]:
    clock = FakeClock()
    backend = MemoryBackend(clock=clock)
    served = AsyncGuard(PLANS, backend, default_plan="pro", clock=clock)
    return served, Guard(PLANS, backend, default_plan="pro", clock=clock), clock


def test_a_lookup_naming_an_unknown_plan_is_a_403_logged_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("quotaguard.integrations._refusals._LOGGED", set())
    served, inspect, _ = guards()
    caplog.set_level(logging.WARNING, logger="quotaguard")
    with serve(app_for(served)) as url, httpx.Client(base_url=url, headers=ENTERPRISE) as client:
        answers = [client.get("/anything") for _ in range(3)]
        usage = client.get("/usage")
    for answer in answers:
        assert answer.status_code == 403
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json() == {
            "type": "https://iana.org/assignments/http-problem-types#plan-unavailable",
            "title": "Plan unavailable",
            "status": 403,
            "detail": "The plan your credential names is not offered by this service.",
            "instance": "/anything",
        }
    assert usage.status_code == 403
    assert caplog.text.count("names a plan the catalogue lacks") == 1
    assert "sk-enterprise" not in caplog.text
    assert inspect.customers() == []  # nothing stored


def test_a_token_claim_naming_an_unknown_plan_is_a_403() -> None:
    served, _, _ = guards()
    claims = {"good": {"sub": "u-1", "tier": "pro"}, "rich": {"sub": "u-2", "tier": "enterprise"}}
    identify = BearerClaim(claims.get, plan_claim="tier")
    with serve(app_for(served, identify=identify)) as url, httpx.Client(base_url=url) as client:
        good = client.get("/x", headers={"authorization": "Bearer good"})
        rich = client.get("/x", headers={"authorization": "Bearer rich"})
        nobody = client.get("/x")
    assert good.status_code == 200
    assert rich.status_code == 403 and rich.json()["title"] == "Plan unavailable"
    assert nobody.status_code == 401
    assert nobody.headers["www-authenticate"] == 'Bearer realm="api"'


def test_plans_named_up_front_are_checked_at_construction() -> None:
    served, _, _ = guards()
    with pytest.raises(ConfigurationError, match="enterprise"):
        app_for(served, identify=[ClientIP(plan="enterprise")])
    with pytest.raises(ConfigurationError, match="enterprise"):
        app_for(served, anonymous="enterprise")
    with pytest.raises(ConfigurationError, match="identify="):
        QuotaMiddleware(starlette_app(served), served)
    with pytest.raises(ConfigurationError, match="enterprise"):
        RateLimit(served, ClientIP(plan="enterprise"))
    with pytest.raises(ConfigurationError, match="enterprise"):
        UsageEndpoint(served, [APIKey(lookup=CUSTOMERS.get), ClientIP(plan="enterprise")])
    with pytest.raises(ConfigurationError, match="enterprise"):
        usage_router(served, ClientIP(plan="enterprise"))
    with pytest.raises(ConfigurationError, match="scope"):
        Route("/x", scope="not a scope!")
    with pytest.raises(ConfigurationError, match="challenge"):
        app_for(served, challenge='Bearer realm="café"\r\n')


def test_usage_answers_problems_never_500() -> None:
    down = DownBackend()
    guard = AsyncGuard(PLANS, down, default_plan="pro")
    identify = APIKey(lookup=CUSTOMERS.get)
    endpoint = UsageEndpoint(guard, identify)
    api = FastAPI()
    install(api)
    api.include_router(usage_router(guard, identify))
    for app in (endpoint, api):
        with serve(app) as url, httpx.Client(base_url=url, headers=PRO) as client:
            response = client.get("/usage")
            assert response.status_code == 503, app
            assert response.headers["retry-after"] == "1"
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["title"] == "Temporarily unavailable"
            assert "10.0.0.7" not in response.text
    served, _, _ = guards()
    for app in (UsageEndpoint(served, identify), _fastapi_usage(served, identify)):
        with serve(app) as url, httpx.Client(base_url=url, headers=PRO) as client:
            bad_scope = client.get("/usage", params={"scope": "no such scope!"})
            assert bad_scope.status_code == 400
            assert bad_scope.headers["content-type"] == "application/problem+json"
            assert bad_scope.json()["type"] == "about:blank"
            unknown = client.get("/usage", headers=ENTERPRISE)
            assert unknown.status_code == 403
            missing = client.get("/usage", headers={"x-api-key": "sk-nobody"})
            assert missing.status_code == 401
            assert missing.headers["www-authenticate"] == 'APIKey realm="api", header="x-api-key"'
            assert client.get("/usage").json()["plan"] == "pro"


def _fastapi_usage(guard: AsyncGuard, identify: Any) -> FastAPI:
    api = FastAPI()
    install(api)
    api.include_router(usage_router(guard, identify))
    return api


def test_the_fastapi_dependency_answers_unknown_plans_with_a_403() -> None:
    served, _, _ = guards()
    api = FastAPI()
    install(api)
    limited = RateLimit(served, APIKey(lookup=CUSTOMERS.get))

    @api.get("/items", dependencies=[Depends(limited)])
    async def items() -> dict[str, str]:
        return {"ok": "yes"}

    with serve(api) as url, httpx.Client(base_url=url) as client:
        assert client.get("/items", headers=PRO).status_code == 200
        refused = client.get("/items", headers=ENTERPRISE)
        nobody = client.get("/items")
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    assert nobody.status_code == 401
    assert nobody.headers["www-authenticate"] == 'APIKey realm="api", header="x-api-key"'


def test_a_json_body_estimate_is_reserved_and_the_body_reaches_the_app_untouched() -> None:
    served, inspect, _ = guards()
    body = json.dumps({"max_tokens": 321, "prompt": "é" * 50}).encode()
    with serve(app_for(served)) as url, httpx.Client(base_url=url, headers=PRO) as client:
        response = client.post("/v1/chat", content=body)
        assert response.content == body
        # the estimate is what the headers show (settled at it: nothing reported)
        assert as_dict(response.headers["ratelimit"])["weekly"]["r"] == 50000 - 321

        def chunks() -> Any:
            yield body[:10]
            yield body[10:]

        streamed = client.post("/v1/chat", content=chunks())  # chunked transfer encoding
        assert streamed.content == body
        assert as_dict(streamed.headers["ratelimit"])["weekly"]["r"] == 50000 - 2 * 321
        for junk in (
            b"not json",
            b"[1, 2]",
            b'{"max_tokens": -5}',
            b'{"max_tokens": NaN}',
            b'{"max_tokens": 1e400}',
            b'{"max_tokens": true}',
            b"[" * 5000,
            b"",
        ):
            answer = client.post("/v1/chat", content=junk)
            assert answer.status_code == 200, junk
            assert answer.content == junk
        large = b'{"max_tokens": 1, "pad": "' + b"x" * 8000 + b'"}'
        answer = client.post("/v1/chat", content=large)
        assert answer.content == large
        assert answer.headers["x-seen-length"] == str(len(large))

        def large_chunks() -> Any:  # no Content-Length: found too large while reading
            yield large[:3000]
            yield large[3000:]

        answer = client.post("/v1/chat", content=large_chunks())
        assert answer.content == large
    used = inspect.usage("acme").limit("weekly").used
    assert used == 2 * 321 + 8 * 1000 + 2 * 1000


def test_a_client_gone_while_sending_its_body_is_not_decided() -> None:
    served, inspect, _ = guards()
    with serve(app_for(served)) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as raw:
            raw.sendall(
                b"POST /v1/chat HTTP/1.1\r\nhost: x\r\nx-api-key: sk-pro\r\n"
                b"content-length: 100\r\n\r\n" + b'{"max_tokens": 5'
            )
        with httpx.Client(base_url=url, headers=PRO) as client:
            assert client.post("/v1/chat", json={"max_tokens": 7}).status_code == 200
        wait_for(lambda: inspect.usage("acme").limit("streams").used == 0)
    assert inspect.usage("acme").limit("weekly").used == 7


@pytest.mark.parametrize("reported", ["nan", "inf", "-inf", "-5", "1e400", "abc", ""])
def test_an_invalid_reported_cost_settles_at_the_estimate_and_frees_the_slot(
    reported: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("quotaguard.integrations._refusals._LOGGED", set())
    caplog.set_level(logging.WARNING, logger="quotaguard")
    served, inspect, _ = guards()
    with serve(app_for(served)) as url, httpx.Client(base_url=url, headers=PRO) as client:
        first = client.get("/settled", params={"report": reported})
        usage = inspect.usage("acme")
        assert first.status_code == 200
        assert usage.limit("streams").used == 0  # the slot is free at once
        assert usage.limit("weekly").used == 2000  # the estimate
        assert client.get("/settled", params={"report": reported}).status_code == 200
        assert client.get("/settled", params={"report": "12"}).status_code == 200
    assert inspect.usage("acme").limit("weekly").used == 2 * 2000 + 12
    if reported not in ("abc", ""):  # numbers the guard refuses: logged once
        assert caplog.text.count("is not a finite number >= 0") == 1


def test_the_dependency_without_identify_uses_only_the_middlewares_identity() -> None:
    served = AsyncGuard([Plan("pro", [TokenBucket("burst", 100, "1/second")])], default_plan="pro")
    api = FastAPI()
    install(api)

    @api.get("/items", dependencies=[Depends(RateLimit(served))])
    async def items() -> dict[str, str]:
        return {"ok": "yes"}

    guarded = QuotaMiddleware(api, served, identify=APIKey(lookup=CUSTOMERS.get))
    with serve(guarded) as url, httpx.Client(base_url=url) as client:
        assert client.get("/items", headers=PRO).status_code == 200
        assert client.get("/items", headers={"x-api-key": "sk-nobody"}).status_code == 401
    with serve(api) as url, httpx.Client(base_url=url) as client:
        alone = client.get("/items", headers=PRO)
    assert alone.status_code == 401  # no middleware, no identify: nobody is identified


def test_the_fastapi_extra_is_the_guides_one_install_step() -> None:
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert {requirement.split(">")[0] for requirement in extras["fastapi"]} == {
        "fastapi",
        "uvicorn",
    }
    for document in ("docs/howto.md", "docs/integrations.md", "README.md"):
        assert "pip install 'quotaguard[fastapi]'" in (root / document).read_text(), document


def test_a_full_concurrency_limit_asks_for_a_short_retry() -> None:
    served, _, _ = guards()
    for hint, options in ((1, {}), (3, {"headers": HeaderOptions(concurrency_retry_after=3)})):
        with serve(app_for(served, **options)) as url:

            async def race(url: str = url) -> list[httpx.Response]:
                async with httpx.AsyncClient(base_url=url, headers=PRO) as client:
                    slow = asyncio.create_task(client.get("/settled?report=1&for=0"))
                    held = asyncio.create_task(client.get("/hold?for=0.5"))
                    await asyncio.sleep(0.2)
                    busy = await client.get("/settled", params={"report": "1"})
                    return [await slow, await held, busy]

            *_, busy = asyncio.run(race())
        assert busy.status_code == 429
        assert busy.headers["retry-after"] == str(hint)
        body = busy.json()
        assert body["violated-policies"] == ["streams"] and body["retry-after"] == hint
        plural = "second" if hint == 1 else "seconds"
        assert body["detail"].endswith(f"; retry after {hint} {plural}.")
        assert as_dict(busy.headers["ratelimit"])["streams"] == {"r": 0, "t": hint}
    with pytest.raises(ValueError):
        HeaderOptions(concurrency_retry_after=0)


def test_instance_is_a_uri_reference() -> None:
    served, _, _ = guards()
    with serve(app_for(served, identify=APIKey(lookup=CUSTOMERS.get))) as url:
        with httpx.Client(base_url=url) as client:
            spaced = client.get("/v1/a b")
            accented = client.get("/v1/café")
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as raw:
            raw.sendall(b'GET /v1/%zz%41"<> HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n')
            answer = _read_all(raw)
    assert spaced.json()["instance"] == "/v1/a%20b"
    assert accented.json()["instance"] == "/v1/caf%C3%A9"
    assert spaced.headers["www-authenticate"] == 'APIKey realm="api", header="x-api-key"'
    document = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert document["instance"] == "/v1/%25zz%41%22%3C%3E"


def _read_all(raw: socket.socket) -> bytes:
    raw.settimeout(5)
    data = b""
    while chunk := raw.recv(65536):
        data += chunk
    return data


def test_a_forwarded_hop_with_a_port_is_its_own_client() -> None:
    served, inspect, _ = guards()
    identify = ClientIP(["127.0.0.1/32"], plan="anonymous")
    with serve(app_for(served, identify=identify)) as url, httpx.Client(base_url=url) as client:
        for hop in ("203.0.113.9:80", "203.0.113.10:4431", "[2001:db8::1]:80"):
            assert client.get("/x", headers={"x-forwarded-for": hop}).status_code == 200
    customers = sorted(inspect.customers())
    assert customers == ["ip-2001:db8::/64", "ip-203.0.113.10", "ip-203.0.113.9"]


def test_one_second_is_singular() -> None:
    clock = FakeClock()
    anonymous = Plan("anonymous", [TokenBucket("burst", 1, "1/second")])
    guard = AsyncGuard([anonymous], default_plan="anonymous", clock=clock)
    app = QuotaMiddleware(starlette_app(guard), guard, identify=ClientIP(plan="anonymous"))
    with serve(app) as url, httpx.Client(base_url=url) as client:
        assert client.get("/x").status_code == 200
        refused = client.get("/x")
    assert refused.json()["detail"].endswith("; retry after 1 second.")


def test_an_absurd_content_length_is_just_too_large() -> None:
    served, inspect, _ = guards()
    app = app_for(served)
    sent: list[dict[str, Any]] = []
    body = [{"type": "http.request", "body": b'{"max_tokens": 3}', "more_body": False}]

    async def receive() -> dict[str, Any]:
        return body.pop(0) if body else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat",
        "raw_path": b"/v1/chat",
        "query_string": b"",
        "headers": [(b"x-api-key", b"sk-pro"), (b"content-length", b"9" * 5000)],
        "client": ("127.0.0.1", 1),
    }
    asyncio.run(app(scope, receive, send))  # type: ignore[arg-type]
    assert sent[0]["status"] == 200
    assert inspect.usage("acme").limit("weekly").used == 1000  # the default, unread
