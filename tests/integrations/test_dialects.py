"""Wire dialects: configuration, exact values, per-route selection, and the
Claude-Code-like walk of the unified headers on a FakeClock."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi import Depends, FastAPI
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route as StarletteRoute
from starlette.testclient import TestClient

from quotaguard import (
    AsyncGuard,
    Concurrency,
    ConfigurationError,
    Guard,
    InvalidRequestError,
    MemoryBackend,
    Plan,
    RollingWindow,
    TokenBucket,
)
from quotaguard.core.decision import LimitStatus
from quotaguard.integrations import (
    APIKey,
    Dialect,
    HeaderOptions,
    QuotaMiddleware,
    Route,
    hash_key,
)
from quotaguard.integrations.dialects import DialectResponses
from quotaguard.integrations.dialects.values import duration, rfc3339, utilization
from quotaguard.integrations.fastapi import RateLimit, install
from quotaguard.testing import FakeClock

from .test_middleware import DownBackend

KEY = "sk-live-dialects-abcdef"
CUSTOMER = "key-" + hash_key(KEY)
AUTH = {"x-api-key": KEY}
T0 = 1_767_225_600  # FakeClock's start; a whole hour

MAX = Plan(
    "max",
    [
        TokenBucket("burst", 60, "1/second"),
        RollingWindow.from_rate("five_hour", "10000/5 hours", unit="tokens"),
        RollingWindow.from_rate("weekly", "25000/week", unit="tokens"),
    ],
)
SLOTS = Plan(
    "slots",
    [Concurrency("in_flight", 2), RollingWindow.from_rate("daily", "100/day", unit="requests")],
)


async def hello(request: Request) -> Response:
    return PlainTextResponse("hello")


def _tokens(scope: Any) -> float:
    for name, value in scope["headers"]:
        if name == b"x-tokens":
            return float(value)
    return 0.0


def client_for(guard: Any, dialect: Any = "anthropic", **options: Any) -> TestClient:
    app = Starlette(
        routes=[StarletteRoute(path, hello, methods=["POST"]) for path in ("/v1/messages", "/x")]
    )
    rules = options.pop("routes", [Route("/v1/messages", cost=_tokens, unit="tokens")])
    middleware = QuotaMiddleware(
        app, guard, identify=[APIKey(accept_any_key=True)], routes=rules, dialect=dialect, **options
    )
    return TestClient(middleware, headers=AUTH)


def guards(clock: FakeClock, plan: Plan = MAX, **options: Any) -> tuple[AsyncGuard, Guard]:
    backend = MemoryBackend(clock=clock)
    served = AsyncGuard([plan], backend, default_plan=plan.name, clock=clock, **options)
    return served, Guard([plan], backend, default_plan=plan.name, clock=clock)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def unified(response: Any) -> dict[str, str]:
    prefix = "anthropic-ratelimit-unified-"
    return {
        name[len(prefix) :]: value
        for name, value in response.headers.items()
        if name.startswith(prefix)
    }


# --- the Claude-Code-like walk ----------------------------------------------------------


def test_unified_headers_walk_from_allowed_to_the_5h_claim_to_the_weekly_claim(
    clock: FakeClock,
) -> None:
    served, inspect = guards(clock)
    client = client_for(served)

    def send(tokens: int) -> Any:
        return client.post("/v1/messages", headers={"x-tokens": str(tokens)})

    first = send(1000)
    assert first.status_code == 200
    # 5h buckets are 300 s, weekly ones 3600 s: usage rolls off a bucket after the window
    assert unified(first) == {
        "5h-status": "allowed",
        "5h-utilization": "0.1",
        "5h-reset": str(T0 + 18000 + 300),
        "7d-status": "allowed",
        "7d-utilization": "0.04",
        "7d-reset": str(T0 + 604800 + 3600),
        "status": "allowed",
        "representative-claim": "five_hour",
        "reset": str(T0 + 18300),
    }

    clock.advance(600)
    warned = send(7000)
    assert warned.status_code == 200
    assert unified(warned)["5h-status"] == "allowed_warning"
    assert unified(warned)["5h-utilization"] == "0.8"
    assert unified(warned)["status"] == "allowed_warning"
    assert unified(warned)["reset"] == str(T0 + 600 + 300 + 18000)
    assert unified(warned)["7d-utilization"] == "0.32"

    clock.advance(600)
    refused = send(3000)
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "rate_limit_error"
    # 2000 left; the first 1000 roll off at T0 + 18300, and then 3000 fit
    assert unified(refused)["5h-status"] == "rejected"
    assert unified(refused)["status"] == "rejected"
    assert unified(refused)["representative-claim"] == "five_hour"
    assert unified(refused)["reset"] == unified(refused)["5h-reset"] == str(T0 + 18300)
    assert refused.headers["retry-after"] == str(18300 - 1200)
    assert refused.headers["x-should-retry"] == "false"  # hours away: the SDK must not sleep

    for _ in range(2):  # two more 5-hour sessions of 8000 tokens each
        clock.set(clock.now() + 18900)
        assert send(8000).status_code == 200
    session = send(0)
    usage = inspect.usage(CUSTOMER)
    assert usage.limit("weekly").used == 24000
    assert unified(session)["7d-utilization"] == "0.96"
    assert unified(session)["5h-utilization"] == "0.8"
    assert unified(session)["representative-claim"] == "seven_day"  # the most used window
    assert unified(session)["status"] == "allowed_warning"

    clock.set(T0 + 1200 + 3 * 18900)  # the last session has rolled off the 5-hour window
    weekly = send(2000)
    assert weekly.status_code == 429
    assert unified(weekly)["5h-status"] == "allowed"
    assert unified(weekly)["5h-utilization"] == "0"
    assert unified(weekly)["7d-status"] == "rejected"
    assert unified(weekly)["representative-claim"] == "seven_day"
    # the first hour's 8000 tokens roll off at T0 + 7 days + 1 hour; then 2000 fit
    assert unified(weekly)["reset"] == str(T0 + 604800 + 3600)
    assert weekly.headers["retry-after"] == str(604800 + 3600 - 1200 - 3 * 18900)
    assert "Limit 'weekly' has 1000 tokens remaining, 2000 requested" in weekly.text


def test_utilization_matches_usage_at_every_step(clock: FakeClock) -> None:
    served, inspect = guards(clock)
    client = client_for(served)
    for tokens in (1, 333, 1234, 2500, 0):
        response = client.post("/v1/messages", headers={"x-tokens": str(tokens)})
        usage = inspect.usage(CUSTOMER)
        for window, name in (("5h", "five_hour"), ("7d", "weekly")):
            status = usage.limit(name)
            shown = float(unified(response)[f"{window}-utilization"])
            exact = status.used / status.quota
            assert exact <= shown < exact + 0.0001  # rounded up, 4 places
        clock.advance(700)


# --- exact values -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (1, "1s"), (59, "59s"), (60, "1m0s"), (360, "6m0s"), (3600, "1h0m0s"),
     (18300, "5h5m0s"), (604800, "168h0m0s"), (3661, "1h1m1s")],
)  # fmt: skip
def test_durations_are_written_as_openai_writes_them(seconds: int, text: str) -> None:
    assert duration(seconds) == text


_GO = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(\d+)s$")


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=10**9))
def test_durations_read_back_exactly(seconds: int) -> None:
    match = _GO.match(duration(seconds))
    assert match is not None
    hours, minutes, secs = (int(part or 0) for part in match.groups())
    assert hours * 3600 + minutes * 60 + secs == seconds
    assert minutes < 60 and secs < 60


@settings(max_examples=200, deadline=None)
@given(
    st.floats(min_value=1e9, max_value=4e9, allow_nan=False),
    st.floats(min_value=0, max_value=1e9, allow_nan=False),
)
def test_resets_round_up_to_the_second(now: float, after: float) -> None:
    written = rfc3339(now, after)
    moment = datetime.strptime(written, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    assert now + after <= moment < now + after + 1 + 1e-6


def test_utilization_rounds_up_and_shows_debt() -> None:
    window = RollingWindow.from_rate("five_hour", "3/5 hours")
    status = LimitStatus(window, True, 2, 1.0, 0.0, 0.0, 0.0)
    assert utilization(status) == "0.3334"
    assert utilization(status._replace(used=0.0)) == "0"
    assert utilization(status._replace(used=3.0)) == "1"
    assert utilization(status._replace(used=4.5)) == "1.5"


# --- configuration ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"name": "gemini"}, "'gemini'"),
        ({"name": "openai", "families": {"weekly": "input-tokens"}}, "'input-tokens'"),
        ({"name": "openai", "unified": {"weekly": "7d"}}, "'openai'"),
        ({"name": "anthropic", "unified": {"weekly": "30d"}}, "'30d'"),
        ({"name": "anthropic", "families": {"bad name!": "tokens"}}, "'bad name!'"),
        ({"name": "anthropic", "retry_within": -1}, "-1"),
        ({"name": "anthropic", "retry_within": float("nan")}, "nan"),
        ({"name": "anthropic", "warning_at": 0}, "0"),
        ({"name": "anthropic", "warning_at": True}, "True"),
        ({"name": "anthropic", "overloaded_status": 500}, "500"),
        ({"name": "anthropic", "overloaded_status": 529.0}, "529.0"),
        ({"name": "openai", "ietf_headers": "yes"}, "'yes'"),
    ],
)
def test_bad_configuration_fails_at_construction_naming_the_value(
    options: dict[str, Any], named: str
) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(named)):
        Dialect(**options)


JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.text(max_size=8),
    st.binary(max_size=4),
    st.sampled_from(["openai", "anthropic", "ietf", "tokens", "5h", "7d", "requests"]),
    st.lists(st.text(max_size=3), max_size=2),
    st.dictionaries(st.text(max_size=4), st.one_of(st.none(), st.text(max_size=6)), max_size=2),
)


@settings(max_examples=150, deadline=None)
@given(
    st.fixed_dictionaries(
        {"name": JUNK},
        optional={
            "ietf_headers": JUNK,
            "families": JUNK,
            "unified": JUNK,
            "retry_within": JUNK,
            "warning_at": JUNK,
            "overloaded_status": JUNK,
        },
    )
)
def test_junk_configuration_raises_only_configuration_errors(options: dict[str, Any]) -> None:
    try:
        dialect = Dialect(**options)
    except ConfigurationError:
        return
    assert dialect.name in ("ietf", "openai", "anthropic")
    for limit in MAX.limits:  # a built dialect always answers
        dialect.family(limit)
        dialect.unified_window(limit)


def test_a_mapping_naming_no_limit_of_any_plan_fails_at_construction(clock: FakeClock) -> None:
    served, _ = guards(clock)
    with pytest.raises(ConfigurationError, match="'wekly'"):
        client_for(served, Dialect("anthropic", unified={"wekly": "7d"}))
    with pytest.raises(ConfigurationError, match="'wekly'"):
        RateLimit(served, dialect=Dialect("openai", families={"wekly": "tokens"}))
    with pytest.raises(ConfigurationError, match="'gemini'"):
        Route("/x", dialect="gemini")
    with pytest.raises(ConfigurationError, match="'gemini'"):
        client_for(served, "gemini")


def test_responses_refuse_the_ietf_dialect_and_admitted_decisions(clock: FakeClock) -> None:
    with pytest.raises(ConfigurationError, match="IETF"):
        DialectResponses(Dialect("ietf"))
    _, inspect = guards(clock)
    admitted = inspect.acquire(CUSTOMER, 1)
    with pytest.raises(InvalidRequestError, match="'allowed'"):
        DialectResponses(Dialect("openai")).refusal(admitted, "/x")


def test_families_default_by_unit_and_are_overridable(clock: FakeClock) -> None:
    served, _ = guards(clock, SLOTS)
    plain = client_for(served, "openai", routes=[]).post("/x")
    # the concurrency limit is left out; the daily window counts requests
    assert plain.headers["x-ratelimit-limit-requests"] == "100"
    assert "x-ratelimit-limit-tokens" not in plain.headers
    mapped = client_for(
        served, Dialect("openai", families={"in_flight": "requests", "daily": "tokens"}), routes=[]
    ).post("/x")
    assert mapped.headers["x-ratelimit-limit-requests"] == "2"
    assert mapped.headers["x-ratelimit-limit-tokens"] == "100"
    assert mapped.headers["x-ratelimit-remaining-tokens"] == "98"
    hidden = client_for(served, Dialect("openai", families={"daily": None}), routes=[]).post("/x")
    assert not [name for name in hidden.headers if "ratelimit" in name]


def test_anthropic_shows_input_and_output_token_families(clock: FakeClock) -> None:
    split = Plan(
        "split",
        [
            RollingWindow.from_rate("input", "9000/minute", unit="input_tokens"),
            RollingWindow.from_rate("output", "3000/minute", unit="output_tokens"),
        ],
    )
    served, _ = guards(clock, split)
    route = Route("/v1/messages", cost={"input_tokens": 900, "output_tokens": 300}, unit=None)
    response = client_for(served, routes=[route]).post("/v1/messages")
    assert response.headers["anthropic-ratelimit-input-tokens-limit"] == "9000"
    assert response.headers["anthropic-ratelimit-input-tokens-remaining"] == "8100"
    assert response.headers["anthropic-ratelimit-output-tokens-remaining"] == "2700"
    assert "anthropic-ratelimit-tokens-limit" not in response.headers
    assert not unified(response)  # no 5-hour or 7-day window


def test_the_unified_windows_are_overridable(clock: FakeClock) -> None:
    served, _ = guards(clock)
    renamed = Dialect("anthropic", unified={"five_hour": None, "weekly": "5h"})
    response = client_for(served, renamed).post("/v1/messages", headers={"x-tokens": "2500"})
    assert unified(response)["5h-utilization"] == "0.1"  # the weekly cap, shown as 5h
    assert "7d-utilization" not in unified(response)
    assert unified(response)["representative-claim"] == "five_hour"


# --- selection and coexistence -----------------------------------------------------------


def test_a_route_speaks_its_own_dialect(clock: FakeClock) -> None:
    served, _ = guards(clock)
    routes = [Route("/v1/messages", dialect="openai")]
    client = client_for(served, "ietf", routes=routes)
    provider = client.post("/v1/messages")
    ietf = client.post("/x")
    kept = client_for(served, "openai", routes=[Route("/x", dialect="ietf")]).post("/x")
    assert "ratelimit" in kept.headers
    assert "x-ratelimit-remaining-requests" not in kept.headers
    assert provider.headers["x-ratelimit-remaining-requests"] == "59"
    assert "ratelimit" not in provider.headers
    assert ietf.headers["ratelimit"].startswith('"burst";r=58;')
    assert "x-ratelimit-remaining-requests" not in ietf.headers


def test_the_ietf_pair_can_be_sent_alongside(clock: FakeClock) -> None:
    served, _ = guards(clock)
    client = client_for(served, Dialect("openai", ietf_headers=True), routes=[])
    response = client.post("/x")
    assert response.headers["x-ratelimit-remaining-requests"] == "59"
    assert response.headers["ratelimit"].startswith('"burst";r=59;t=1')
    assert "ratelimit-policy" in response.headers
    legacy = client_for(
        served,
        Dialect("openai", ietf_headers=True),
        routes=[],
        headers=HeaderOptions(draft=False, legacy=True),
    ).post("/x")
    assert legacy.headers["x-ratelimit-remaining"] == "58"
    assert legacy.headers["x-ratelimit-remaining-requests"] == "58"
    assert "ratelimit" not in legacy.headers


def test_shadow_mode_serves_with_the_real_state_and_no_retry_after(clock: FakeClock) -> None:
    served, inspect = guards(clock, shadow=True)
    inspect.acquire(CUSTOMER, {"tokens": 9900})
    response = client_for(served).post("/v1/messages", headers={"x-tokens": "500"})
    assert response.status_code == 200
    assert unified(response)["5h-status"] == "rejected"
    assert unified(response)["5h-utilization"] == "0.99"
    assert "retry-after" not in response.headers


def test_fail_open_sends_no_headers_and_fail_closed_is_503_when_asked() -> None:
    down = DownBackend()
    opened = AsyncGuard([MAX], down, default_plan="max", failure="open")
    response = client_for(opened, "openai", routes=[]).post("/x")
    assert response.status_code == 200
    assert not [name for name in response.headers if "ratelimit" in name]
    closed = AsyncGuard([MAX], down, default_plan="max", failure="closed")
    refused = client_for(closed, Dialect("anthropic", overloaded_status=503), routes=[]).post("/x")
    assert refused.status_code == 503
    assert refused.json()["error"]["type"] == "overloaded_error"
    assert "10.0.0.7" not in refused.text
    openai = client_for(closed, "openai", routes=[]).post("/x")
    assert openai.status_code == 503
    assert openai.json()["error"]["type"] == "server_error"


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
def test_a_cost_that_can_never_fit_is_not_retried(clock: FakeClock, dialect: str) -> None:
    served, _ = guards(clock)
    response = client_for(served, dialect).post("/v1/messages", headers={"x-tokens": "20000"})
    assert response.status_code == 429
    assert response.headers["x-should-retry"] == "false"
    assert "retry-after" not in response.headers
    error = response.json()["error"]
    assert "can never be admitted" in error["message"]
    if dialect == "openai":
        assert (error["type"], error["code"]) == ("insufficient_quota", "insufficient_quota")
    else:  # the window's own reset, not "never"
        assert unified(response)["5h-status"] == "rejected"
        assert unified(response)["5h-reset"] == str(T0)  # nothing used: already full


def test_nothing_about_the_customer_or_their_key_leaks(clock: FakeClock) -> None:
    served, inspect = guards(clock)
    inspect.revoke(CUSTOMER, "resale")
    for dialect in ("openai", "anthropic"):
        response = client_for(served, dialect).post("/v1/messages", headers={"x-tokens": "1"})
        assert response.status_code == 403
        assert response.headers["content-type"] == "application/json"
        assert not [name for name in response.headers if "ratelimit" in name]
        everything = response.text + "".join(f"{k}{v}" for k, v in response.headers.items())
        assert KEY not in everything
        assert CUSTOMER not in everything
        assert hash_key(KEY) not in everything


# --- FastAPI -------------------------------------------------------------------------------


def _fastapi(guard: Any, dialect: str) -> TestClient:
    app = FastAPI()
    install(app)

    @app.post(
        "/v1/chat/completions",
        dependencies=[Depends(RateLimit(guard, APIKey(accept_any_key=True), dialect=dialect))],
    )
    async def chat() -> dict[str, str]:
        return {"ok": "yes"}

    return TestClient(app, headers=AUTH)


def test_the_fastapi_dependency_speaks_the_dialect(clock: FakeClock) -> None:
    served, _ = guards(clock, Plan("tiny", [TokenBucket("burst", 1, "1/minute")]))
    client = _fastapi(served, "openai")
    allowed = client.post("/v1/chat/completions")
    refused = client.post("/v1/chat/completions")
    anonymous = client.post("/v1/chat/completions", headers={"x-api-key": ""})
    assert allowed.headers["x-ratelimit-remaining-requests"] == "0"
    assert allowed.headers["x-ratelimit-reset-requests"] == "1m0s"
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/json"
    assert refused.headers["retry-after"] == "60"
    assert refused.json() == {
        "error": {
            "message": "Limit 'burst' has 0 requests remaining, 1 requested; "
            "retry after 60 seconds.",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "invalid_api_key"


# --- the worked example of docs/integrations.md ---------------------------------------------

DOC = Path(__file__).resolve().parents[2] / "docs" / "integrations.md"


def _lines(headers: list[tuple[bytes, bytes]]) -> list[str]:
    return [f"{name.decode()}: {value.decode()}" for name, value in headers]


def test_the_worked_example_in_the_docs_is_what_the_dialects_send() -> None:
    section = DOC.read_text(encoding="utf-8").split("### Worked example", 1)[1]
    section = section.split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    namespace: dict[str, Any] = {}
    exec(
        "from quotaguard import Guard, Plan, RollingWindow, TokenBucket\n"
        "from quotaguard.integrations import Dialect\n" + code.group(1),
        namespace,
    )
    openai_wire, anthropic_wire = namespace["openai_wire"], namespace["anthropic_wire"]
    allowed, refused = namespace["allowed"], namespace["refused"]
    shown = [block.splitlines() for block in re.findall(r"```text\n(.*?)```", section, re.S)]
    assert shown[0] == _lines(openai_wire.headers(allowed))
    assert shown[1] == _lines(anthropic_wire.headers(allowed))
    assert set(shown[2]) <= set(_lines(anthropic_wire.headers(refused)))
    refusal = anthropic_wire.refusal(refused, "/v1/messages")
    documented = re.findall(r"```json\n(.*?)```", section, re.S)[-1]
    assert refusal.status == 429
    assert refusal.document == json.loads(documented)
    assert (b"retry-after", b"14700") in refusal.headers
    assert (b"x-should-retry", b"false") in refusal.headers
    error = openai_wire.refusal(refused, "/v1/messages").document["error"]
    assert (error["type"], error["code"]) == ("insufficient_quota", "insufficient_quota")
