"""QuotaMiddleware against a real uvicorn server, driven with httpx."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route as StarletteRoute

from quotaguard import (
    AsyncGuard,
    BackendUnavailable,
    Concurrency,
    Guard,
    MemoryBackend,
    Plan,
    RollingWindow,
    TokenBucket,
)
from quotaguard.integrations import (
    APIKey,
    ClientIP,
    HeaderOptions,
    QuotaMiddleware,
    Route,
    add_cost,
    exempt,
    hash_key,
    request_quota,
)
from quotaguard.testing import FakeClock

from .conftest import serve, wait_for
from .sfv import as_dict, parse_list

KEY = "sk-live-0123456789abcdef"
CUSTOMER = "key-" + hash_key(KEY)
AUTH = {"x-api-key": KEY}

PRO = Plan(
    "pro",
    [
        TokenBucket("burst", 2, "1/10 seconds"),
        RollingWindow.from_rate("five_hour", "10000/5 hours", unit="tokens"),
        RollingWindow.from_rate("weekly", "50000/week", unit="tokens"),
    ],
)
STREAMING = Plan(
    "streaming",
    [
        RollingWindow.from_rate("weekly", "50000/week", unit="tokens"),
        Concurrency("in_flight", 1, lease_ttl="10 minutes"),
    ],
)
BENCH = Plan("bench", [RollingWindow.from_rate("bench_daily", "3/day")])
ANON = Plan("anonymous", [TokenBucket("burst", 1, "1/minute")])

POLICY = (
    '"burst";q=2;w=20, "five_hour";q=10000;w=18000;qg-unit="tokens", '
    '"weekly";q=50000;w=604800;qg-unit="tokens"'
)


async def hello(request: Request) -> Response:
    quota = request_quota(request)
    assert quota is not None
    return PlainTextResponse("hello")


async def with_usage_header(request: Request) -> Response:
    return PlainTextResponse("done", headers={"x-usage-tokens": "1234"})


async def stream(request: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(5):
            add_cost(request, 100)
            yield b"token " * 10

    return StreamingResponse(chunks(), media_type="text/plain")


async def stream_forever(request: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        add_cost(request, 7)
        yield b"first chunk\n"
        await asyncio.Event().wait()  # until the disconnect cancels the stream
        yield b"never"

    return StreamingResponse(chunks(), media_type="text/plain")


async def stream_broken(request: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        add_cost(request, 11)
        yield b"first chunk\n"
        raise RuntimeError("the model crashed")

    return StreamingResponse(chunks(), media_type="text/plain")


async def fail(request: Request) -> Response:
    raise RuntimeError("endpoint failed")


def make_app(guard: Any, **options: Any) -> QuotaMiddleware:
    app = Starlette(
        routes=[
            StarletteRoute("/hello", hello),
            StarletteRoute("/healthz", lambda request: PlainTextResponse("ok")),
            StarletteRoute("/settled", with_usage_header),
            StarletteRoute("/stream", stream),
            StarletteRoute("/forever", stream_forever),
            StarletteRoute("/broken", stream_broken),
            StarletteRoute("/fail", fail),
            StarletteRoute("/bench", hello),
            StarletteRoute("/big", hello),
        ]
    )
    rules = [
        exempt("/healthz"),
        Route("/settled", cost=1000, unit="tokens", settle_header="x-usage-tokens"),
        Route("/stream", cost=2000, unit="tokens", reports_cost=True),
        Route("/forever", cost=2000, unit="tokens", reports_cost=True),
        Route("/broken", cost=2000, unit="tokens", reports_cost=True),
        Route("/fail", cost=300, unit="tokens"),
        Route("/bench", scope="benchmark"),
        Route("/big", cost=20000, unit="tokens"),
    ]
    options.setdefault("identify", [APIKey(accept_any_key=True)])
    return QuotaMiddleware(app, guard, routes=rules, **options)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def guards(clock: FakeClock, **options: Any) -> tuple[AsyncGuard, Guard]:
    """An AsyncGuard for the server and a sync Guard on the same memory for the test."""
    backend = MemoryBackend(clock=clock)
    plans = [PRO, STREAMING, BENCH, ANON]
    served = AsyncGuard(plans, backend, default_plan="pro", clock=clock, **options)
    inspect = Guard(plans, backend, default_plan="pro", clock=clock)
    return served, inspect


def test_headers_are_structured_fields_with_integer_values(clock: FakeClock) -> None:
    served, _ = guards(clock)
    with serve(make_app(served)) as url, httpx.Client(base_url=url, headers=AUTH) as client:
        first = client.get("/hello")
        clock.advance(2.5)
        second = client.get("/hello")
    assert first.status_code == 200
    assert first.headers["ratelimit-policy"] == POLICY
    assert first.headers["ratelimit"] == (
        '"burst";r=1;t=10, "five_hour";r=10000;t=0, "weekly";r=50000;t=0'
    )
    policy = as_dict(second.headers["ratelimit-policy"])
    assert policy == {
        "burst": {"q": 2, "w": 20},
        "five_hour": {"q": 10000, "w": 18000, "qg-unit": "tokens"},
        "weekly": {"q": 50000, "w": 604800, "qg-unit": "tokens"},
    }
    state = as_dict(second.headers["ratelimit"])
    assert state["burst"] == {"r": 0, "t": 8}  # 7.5 s rounds up
    for name in ("burst", "five_hour", "weekly"):
        assert set(state[name]) == {"r", "t"}
        assert all(isinstance(value, int) and value >= 0 for value in state[name].values())
    assert "retry-after" not in second.headers
    assert "x-ratelimit-limit" not in second.headers


def test_429_body_and_retry_after_are_exact(clock: FakeClock) -> None:
    served, _ = guards(clock)
    with serve(make_app(served)) as url, httpx.Client(base_url=url, headers=AUTH) as client:
        assert [client.get("/hello").status_code for _ in range(2)] == [200, 200]
        clock.advance(1.5)
        refused = client.get("/hello")
        clock.advance(8.5)
        again = client.get("/hello")
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers["retry-after"] == "9"  # 8.5 s rounds up
    assert refused.headers["cache-control"] == "no-store"
    assert refused.json() == {
        "type": "https://iana.org/assignments/http-problem-types#quota-exceeded",
        "title": "Quota exceeded",
        "status": 429,
        "detail": "Limit 'burst' has 0 requests remaining, 1 requested; retry after 9 seconds.",
        "instance": "/hello",
        "violated-policies": ["burst"],
        "retry-after": 9,
    }
    state = as_dict(refused.headers["ratelimit"])
    assert state["burst"] == {"r": 0, "t": 9}
    assert int(refused.headers["retry-after"]) >= state["burst"]["t"]
    assert as_dict(refused.headers["ratelimit-policy"])["burst"] == {"q": 2, "w": 20}
    assert again.status_code == 200


def test_a_cost_that_can_never_fit_has_no_retry_after(clock: FakeClock) -> None:
    served, inspect = guards(clock)
    with serve(make_app(served)) as url, httpx.Client(base_url=url, headers=AUTH) as client:
        refused = client.get("/big")
    assert refused.status_code == 429
    assert "retry-after" not in refused.headers
    body = refused.json()
    assert body["violated-policies"] == ["five_hour"]
    assert "retry-after" not in body
    assert body["detail"] == (
        "Limit 'five_hour' allows at most 10000 tokens, 20000 requested: this request can "
        "never be admitted on plan 'pro'."
    )
    assert inspect.usage(CUSTOMER).limit("burst").used == 0  # all-or-nothing


def test_revoked_customer_gets_403_with_reason_and_keeps_benchmark_scope(
    clock: FakeClock,
) -> None:
    served, inspect = guards(clock)
    inspect.revoke(CUSTOMER, "Terms of service: resale", allow_scopes={"benchmark": "bench"})
    with serve(make_app(served)) as url, httpx.Client(base_url=url, headers=AUTH) as client:
        refused = client.get("/hello")
        allowed = [client.get("/bench") for _ in range(4)]
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    assert "retry-after" not in refused.headers
    assert "ratelimit" not in refused.headers
    assert refused.json() == {
        "type": "https://iana.org/assignments/http-problem-types#access-revoked",
        "title": "Access revoked",
        "status": 403,
        "detail": "Terms of service: resale",
        "instance": "/hello",
    }
    assert [response.status_code for response in allowed] == [200, 200, 200, 429]
    assert allowed[0].headers["ratelimit-policy"] == '"bench_daily";q=3;w=86400'


class DownBackend:
    """A backend whose every call fails."""

    name = "down"

    def __getattr__(self, name: str) -> Any:
        async def broken(*args: Any, **kwargs: Any) -> Any:
            raise BackendUnavailable("connection refused to 10.0.0.7:6379")

        return broken


@pytest.mark.parametrize("failure", ["closed", "open"])
def test_backend_down(failure: str, caplog: pytest.LogCaptureFixture) -> None:
    down = DownBackend()
    down.decide = down.__getattr__("decide")  # type: ignore[method-assign]
    guard = AsyncGuard([PRO], down, default_plan="pro", failure=failure)
    with serve(make_app(guard)) as url, httpx.Client(base_url=url, headers=AUTH) as client:
        response = client.get("/hello")
        settled = client.get("/settled")
    if failure == "closed":
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json() == {
            "type": "https://iana.org/assignments/http-problem-types#temporary-reduced-capacity",
            "title": "Temporarily unavailable",
            "status": 503,
            "detail": "The rate-limit service is unavailable; retry in 1 second.",
            "instance": "/hello",
        }
        assert "10.0.0.7" not in response.text
        assert settled.status_code == 503
    else:
        assert response.status_code == 200
        assert response.text == "hello"
        assert "ratelimit" not in response.headers
        assert "ratelimit-policy" not in response.headers
        assert settled.status_code == 200


def test_shadow_mode_serves_and_shows_the_real_state(clock: FakeClock) -> None:
    served, _ = guards(clock, shadow=True)
    with serve(make_app(served)) as url, httpx.Client(base_url=url, headers=AUTH) as client:
        responses = [client.get("/hello") for _ in range(3)]
    assert [response.status_code for response in responses] == [200, 200, 200]
    last = responses[-1]
    assert "retry-after" not in last.headers
    assert as_dict(last.headers["ratelimit"])["burst"] == {"r": 0, "t": 10}


def test_unidentified_requests_get_401_or_the_anonymous_plan(clock: FakeClock) -> None:
    served, _ = guards(clock)
    with serve(make_app(served)) as url, httpx.Client(base_url=url) as client:
        response = client.get("/hello")
    assert response.status_code == 401
    assert response.headers["www-authenticate"]
    assert response.json() == {
        "type": "https://iana.org/assignments/http-problem-types#customer-required",
        "title": "Customer required",
        "status": 401,
        "detail": "This request carries no credential that identifies a customer.",
        "instance": "/hello",
    }
    app = make_app(served, anonymous="anonymous")
    with serve(app) as url, httpx.Client(base_url=url) as client:
        statuses = [client.get("/hello").status_code for _ in range(2)]
    assert statuses == [200, 429]


def test_client_ip_identifies_anonymous_callers_behind_trusted_proxies(clock: FakeClock) -> None:
    served, inspect = guards(clock)
    app = make_app(
        served, identify=[APIKey(accept_any_key=True), ClientIP(["127.0.0.1/32"], plan="anonymous")]
    )
    with serve(app) as url, httpx.Client(base_url=url) as client:
        first = client.get("/hello", headers={"x-forwarded-for": "198.51.100.7, 203.0.113.9"})
        second = client.get("/hello", headers={"x-forwarded-for": "203.0.113.9"})
        other = client.get("/hello", headers={"x-forwarded-for": "203.0.113.10"})
    assert [first.status_code, second.status_code, other.status_code] == [200, 429, 200]
    assert inspect.usage("ip-203.0.113.9", plan="anonymous").limit("burst").used == 1


def test_exempt_paths_pass_untouched(clock: FakeClock) -> None:
    served, _ = guards(clock)
    with serve(make_app(served)) as url, httpx.Client(base_url=url) as client:
        response = client.get("/healthz")
    assert response.status_code == 200
    assert "ratelimit" not in response.headers


def test_legacy_headers(clock: FakeClock) -> None:
    served, _ = guards(clock)
    app = make_app(served, headers=HeaderOptions(legacy=True))
    with serve(app) as url, httpx.Client(base_url=url, headers=AUTH) as client:
        response = client.get("/hello")
    assert response.headers["x-ratelimit-limit"] == "2"
    assert response.headers["x-ratelimit-remaining"] == "1"
    assert response.headers["x-ratelimit-reset"] == str(int(clock.now()) + 10)
    assert "ratelimit" in response.headers


def test_settles_the_actual_cost_from_a_response_header(clock: FakeClock) -> None:
    served, inspect = guards(clock)
    with serve(make_app(served)) as url, httpx.Client(base_url=url, headers=AUTH) as client:
        response = client.get("/settled")
    assert response.status_code == 200
    # the header shows the reservation (the estimate of 1000 tokens)
    assert as_dict(response.headers["ratelimit"])["weekly"]["r"] == 49000
    assert inspect.usage(CUSTOMER).limit("weekly").used == 1234


def test_streaming_settles_the_reported_cost(clock: FakeClock) -> None:
    served, inspect = guards(clock)
    with serve(make_app(served)) as url, httpx.Client(base_url=url, headers=AUTH) as client:
        response = client.get("/stream")
    assert response.status_code == 200
    assert response.text == "token " * 50
    assert as_dict(response.headers["ratelimit"])["weekly"]["r"] == 48000
    usage = inspect.usage(CUSTOMER)
    assert usage.limit("weekly").used == 500
    assert usage.limit("five_hour").used == 500
    assert usage.limit("burst").used == 1  # the call counts as one request


def test_client_disconnect_frees_the_slot_and_settles(clock: FakeClock) -> None:
    served, inspect = guards(clock)
    inspect.assign(CUSTOMER, "streaming")

    def state() -> tuple[int, float]:
        usage = inspect.usage(CUSTOMER)
        return usage.limit("in_flight").remaining, usage.limit("weekly").used

    with serve(make_app(served)) as url:
        with (
            httpx.Client(base_url=url, headers=AUTH) as client,
            client.stream("GET", "/forever") as response,
        ):
            assert response.status_code == 200
            chunks = response.iter_raw()  # keep the iterator: dropping it closes the stream
            assert next(chunks) == b"first chunk\n"
            assert state() == (0, 2000)  # the estimate and the only slot are held
            with httpx.Client(base_url=url, headers=AUTH) as other:
                busy = other.get("/hello")
            assert busy.status_code == 429
            assert busy.json()["violated-policies"] == ["in_flight"]
        wait_for(lambda: state() == (1, 7))
        with httpx.Client(base_url=url, headers=AUTH) as client:
            assert client.get("/hello").status_code == 200


def test_a_broken_stream_frees_the_slot_and_settles(clock: FakeClock) -> None:
    served, inspect = guards(clock)
    inspect.assign(CUSTOMER, "streaming")
    with serve(make_app(served)) as url, httpx.Client(base_url=url, headers=AUTH) as client:
        with pytest.raises(httpx.HTTPError):
            client.get("/broken")
        usage = inspect.usage(CUSTOMER)
        assert usage.limit("in_flight").remaining == 1
        assert usage.limit("weekly").used == 11
        failed = client.get("/fail")
        assert failed.status_code == 500
        assert inspect.usage(CUSTOMER).limit("in_flight").remaining == 1
        assert inspect.usage(CUSTOMER).limit("weekly").used == 311


def test_api_keys_never_reach_bodies_or_logs(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    served, inspect = guards(clock)
    inspect.revoke(CUSTOMER, "Unpaid invoice")
    caplog.set_level(logging.DEBUG)
    with serve(make_app(served)) as url, httpx.Client(base_url=url, headers=AUTH) as client:
        responses = [client.get(path) for path in ("/hello", "/bench", "/healthz")]
    for response in responses:
        assert KEY not in response.text
        assert KEY not in json.dumps(dict(response.headers))
    assert KEY not in caplog.text
    assert CUSTOMER.startswith("key-") and KEY not in CUSTOMER


def test_a_sync_guard_on_memory_is_accepted(clock: FakeClock) -> None:
    guard = Guard([PRO], default_plan="pro", clock=clock)
    with serve(make_app(guard)) as url, httpx.Client(base_url=url, headers=AUTH) as client:
        assert client.get("/hello").status_code == 200
    assert guard.usage(CUSTOMER).limit("burst").used == 1


async def _collect(app: Any, scope: dict[str, Any]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def test_websocket_and_lifespan_pass_straight_through(clock: FakeClock) -> None:
    served, _ = guards(clock)
    seen: list[tuple[Any, Any, Any]] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope, receive, send))
        if scope["type"] == "lifespan":
            message = await receive()
            assert message["type"] == "lifespan.startup"
            await send({"type": "lifespan.startup.complete"})
            message = await receive()
            await send({"type": "lifespan.shutdown.complete"})

    middleware = QuotaMiddleware(inner, served, identify=APIKey(accept_any_key=True))
    scope = {"type": "websocket", "path": "/ws", "headers": []}
    asyncio.run(_collect(middleware, scope))
    assert seen[0][0] is scope and "quotaguard" not in scope

    # lifespan, through a real server
    with serve(middleware, lifespan="on") as url:
        assert url
    assert [entry[0]["type"] for entry in seen[1:]] == ["lifespan"]


def test_parser_is_strict() -> None:
    assert parse_list('"a";q=1;w=2, "b";r=0;t=5') == [
        ("a", {"q": 1, "w": 2}),
        ("b", {"r": 0, "t": 5}),
    ]
    for bad in ('"a";Q=1', '"a",', '"a";q=1.2345', '"a" "b"', '"a";q=1234567890123456'):
        with pytest.raises(ValueError):
            parse_list(bad)
