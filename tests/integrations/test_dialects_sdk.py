"""The official openai and anthropic SDKs against a real uvicorn server speaking their dialect.

The app emulates the providers' endpoints (chat completions, messages; plain and
streamed) behind `QuotaMiddleware`; the tests read what the SDKs' users read: exception
classes and messages, ``with_raw_response`` headers, the SDKs' own retries.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import openai
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route as StarletteRoute

from quotaguard import AsyncGuard, Guard, MemoryBackend, Plan, RollingWindow, TokenBucket
from quotaguard.integrations import APIKey, QuotaMiddleware, Route, add_cost, hash_key
from quotaguard.integrations.dialects.values import duration, rfc3339
from quotaguard.integrations.usage import usage_document
from quotaguard.testing import FakeClock

from .conftest import serve
from .test_middleware import DownBackend

KEY = "sk-test-dialects-0123456789"
CUSTOMER = "key-" + hash_key(KEY)
UNKNOWN_KEY = "sk-nobody-knows-this-key"

MAX = Plan(
    "max",
    [
        TokenBucket("burst", 2, "1/10 seconds"),
        RollingWindow.from_rate("five_hour", "2000/5 hours", unit="tokens"),
        RollingWindow.from_rate("weekly", "10000/week", unit="tokens"),
    ],
)
QUICK = Plan("quick", [TokenBucket("burst", 1, "1/2 seconds")])
WORDS = ["quota", "guard ", "speaks ", "your ", "dialect"]
OUTPUT_TOKENS = 100  # per word streamed or returned


def _known(digest: str) -> str | None:
    return CUSTOMER if digest == hash_key(KEY) else None


IDENTIFY = [APIKey(lookup=_known), APIKey(header="authorization", scheme="Bearer", lookup=_known)]
attempts: list[str] = []


async def chat_completions(request: Request) -> Response:
    attempts.append("openai")
    body = await request.json()
    if body.get("stream"):

        async def events() -> AsyncIterator[bytes]:
            for word in WORDS:
                add_cost(request, OUTPUT_TOKENS)
                chunk = {
                    "id": "chatcmpl-1",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": body["model"],
                    "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}],
                }
                yield f"data: {json.dumps(chunk)}\n\n".encode()
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")
    add_cost(request, OUTPUT_TOKENS)
    return JSONResponse(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "hello"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
        }
    )


def _sse(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()


MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-test",
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 5, "output_tokens": 1},
}


async def messages(request: Request) -> Response:
    attempts.append("anthropic")
    body = await request.json()
    if body.get("stream"):

        async def events() -> AsyncIterator[bytes]:
            yield _sse(
                "message_start", {"message": {**MESSAGE, "content": [], "stop_reason": None}}
            )
            yield _sse(
                "content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}
            )
            for word in WORDS:
                add_cost(request, OUTPUT_TOKENS)
                delta = {"type": "text_delta", "text": word}
                yield _sse("content_block_delta", {"index": 0, "delta": delta})
            yield _sse("content_block_stop", {"index": 0})
            yield _sse(
                "message_delta",
                {
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": 5},
                },
            )
            yield _sse("message_stop", {})

        return StreamingResponse(events(), media_type="text/event-stream")
    add_cost(request, OUTPUT_TOKENS)
    return JSONResponse({**MESSAGE, "content": [{"type": "text", "text": "hello"}]})


def make_app(guard: Any, dialect: str, settled: bool = True, **options: Any) -> QuotaMiddleware:
    app = Starlette(
        routes=[
            StarletteRoute("/v1/chat/completions", chat_completions, methods=["POST"]),
            StarletteRoute("/v1/messages", messages, methods=["POST"]),
        ]
    )
    rules = [
        Route("/v1/chat/completions", cost=200, unit="tokens", reports_cost=settled),
        Route("/v1/messages", cost=200, unit="tokens", reports_cost=settled),
    ]
    return QuotaMiddleware(app, guard, identify=IDENTIFY, routes=rules, dialect=dialect, **options)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def guards(clock: FakeClock | None, plan: Plan = MAX, **options: Any) -> tuple[AsyncGuard, Guard]:
    """The server's AsyncGuard and a sync Guard on the same memory, for the test."""
    backend = MemoryBackend(clock=clock)
    served = AsyncGuard([plan], backend, default_plan=plan.name, clock=clock, **options)
    return served, Guard([plan], backend, default_plan=plan.name, clock=clock)


def openai_client(url: str, key: str = KEY, retries: int = 0) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=retries)


def anthropic_client(url: str, key: str = KEY, retries: int = 0) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key=key, max_retries=retries)


def chat(client: openai.OpenAI, **options: Any) -> Any:
    return client.chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "hi"}], **options
    )


def message(client: anthropic.Anthropic, **options: Any) -> Any:
    return client.messages.create(
        model="claude-test",
        max_tokens=64,
        messages=[{"role": "user", "content": "hi"}],
        **options,
    )


def ask(dialect: str, url: str, retries: int = 0) -> str:
    """One request through the dialect's SDK; the answer's text."""
    if dialect == "openai":
        with openai_client(url, retries=retries) as client:
            return str(chat(client).choices[0].message.content)
    with anthropic_client(url, retries=retries) as client:
        return str(message(client).content[0].text)


FIELDS = ("limit", "remaining", "reset")
BURST_SENTENCE = "Limit 'burst' has 0 requests remaining, 1 requested; retry after 10 seconds."
REASON = "Terms of service §4: reselling access to other users' accounts"


# --- OpenAI ---------------------------------------------------------------------------


def test_openai_rate_limit_error_carries_the_sentence(clock: FakeClock) -> None:
    served, _ = guards(clock)
    with serve(make_app(served, "openai")) as url, openai_client(url) as client:
        chat(client)
        chat(client)
        with pytest.raises(openai.RateLimitError) as caught:
            chat(client)
    error = caught.value
    assert error.message == f"Error code: 429 - {BURST_SENTENCE}"
    assert (error.code, error.type, error.param) == ("rate_limit_exceeded", "requests", None)
    assert error.response.headers["retry-after"] == "10"
    assert error.response.headers["content-type"] == "application/json"
    assert "x-should-retry" not in error.response.headers


def test_openai_permission_denied_carries_the_revocation_reason(clock: FakeClock) -> None:
    served, inspect = guards(clock)
    inspect.revoke(CUSTOMER, REASON)
    with serve(make_app(served, "openai")) as url, openai_client(url) as client:
        with pytest.raises(openai.PermissionDeniedError) as caught:
            chat(client)
        with pytest.raises(openai.AuthenticationError) as unknown:
            chat(openai_client(url, UNKNOWN_KEY))
    assert caught.value.message == f"Error code: 403 - {REASON}"
    assert caught.value.code == "access_revoked"
    assert "retry-after" not in caught.value.response.headers
    assert unknown.value.code == "invalid_api_key"
    assert "identifies a customer" in unknown.value.message


def test_openai_streaming_keeps_working_and_settles(clock: FakeClock) -> None:
    served, inspect = guards(clock)
    with serve(make_app(served, "openai")) as url, openai_client(url) as client:
        stream = chat(client, stream=True)
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
        headers = stream.response.headers
    assert text == "".join(WORDS)
    assert headers["x-ratelimit-remaining-tokens"] == "1800"  # the 200-token estimate
    assert inspect.usage(CUSTOMER).limit("weekly").used == len(WORDS) * OUTPUT_TOKENS


# --- Anthropic ------------------------------------------------------------------------


def test_anthropic_rate_limit_error_carries_the_sentence(clock: FakeClock) -> None:
    served, _ = guards(clock)
    with serve(make_app(served, "anthropic")) as url, anthropic_client(url) as client:
        message(client)
        message(client)
        with pytest.raises(anthropic.RateLimitError) as caught:
            message(client)
    error = caught.value
    assert error.api_message == BURST_SENTENCE
    assert error.type == "rate_limit_error"
    assert BURST_SENTENCE in error.message
    assert error.body == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": BURST_SENTENCE},
    }
    assert error.response.headers["retry-after"] == "10"
    assert error.response.headers["anthropic-ratelimit-requests-remaining"] == "0"


def test_anthropic_permission_and_authentication_errors(clock: FakeClock) -> None:
    served, inspect = guards(clock)
    inspect.revoke(CUSTOMER, REASON)
    with serve(make_app(served, "anthropic")) as url, anthropic_client(url) as client:
        with pytest.raises(anthropic.PermissionDeniedError) as caught:
            message(client)
        with pytest.raises(anthropic.AuthenticationError) as unknown:
            message(anthropic_client(url, UNKNOWN_KEY))
    assert caught.value.api_message == REASON
    assert REASON in caught.value.message
    assert caught.value.type == "permission_error"
    assert unknown.value.type == "authentication_error"


def test_anthropic_backend_down_is_overloaded(clock: FakeClock) -> None:
    down = DownBackend()
    served = AsyncGuard([MAX], down, default_plan="max", failure="closed")
    with (
        serve(make_app(served, "anthropic")) as url,
        anthropic_client(url) as client,
        pytest.raises(anthropic.OverloadedError) as caught,
    ):
        message(client)
    assert caught.value.status_code == 529
    assert caught.value.type == "overloaded_error"
    assert caught.value.response.headers["retry-after"] == "1"
    assert "10.0.0.7" not in caught.value.message  # the backend's error text stays inside


def test_anthropic_streaming_keeps_working_and_settles(clock: FakeClock) -> None:
    served, inspect = guards(clock)
    with (
        serve(make_app(served, "anthropic")) as url,
        anthropic_client(url) as client,
        client.messages.stream(
            model="claude-test", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        ) as stream,
    ):
        text = stream.get_final_text()
        headers = stream.response.headers
    assert text == "".join(WORDS)
    assert headers["anthropic-ratelimit-tokens-remaining"] == "1800"
    assert inspect.usage(CUSTOMER).limit("weekly").used == len(WORDS) * OUTPUT_TOKENS


# --- both SDKs -------------------------------------------------------------------------


def raw_headers(dialect: str, url: str) -> Any:
    """The headers of one ``with_raw_response`` call, after checking its body parses."""
    if dialect == "openai":
        with openai_client(url) as client:
            raw: Any = client.chat.completions.with_raw_response.create(
                model="gpt-test", messages=[{"role": "user", "content": "hi"}]
            )
            assert raw.parse().choices[0].message.content == "hello"
            return raw.headers
    with anthropic_client(url) as client:
        raw = client.messages.with_raw_response.create(
            model="claude-test", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        )
        assert raw.parse().content[0].text == "hello"
        return raw.headers


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
def test_raw_response_headers_match_usage(clock: FakeClock, dialect: str) -> None:
    served, inspect = guards(clock)
    inspect.acquire(CUSTOMER, {"tokens": 1500})
    clock.advance(3)
    with serve(make_app(served, dialect, settled=False)) as url:  # charged at admission
        headers = raw_headers(dialect, url)
    usage = {row["name"]: row for row in usage_document(inspect.usage(CUSTOMER))["limits"]}
    now = clock.now()
    # the most restrictive limit per family: burst for requests, five_hour for tokens
    for family, name in (("requests", "burst"), ("tokens", "five_hour")):
        row = usage[name]
        if dialect == "openai":
            shown = [headers[f"x-ratelimit-{field}-{family}"] for field in FIELDS]
            reset = duration(row["reset_after_seconds"])
        else:
            shown = [headers[f"anthropic-ratelimit-{family}-{field}"] for field in FIELDS]
            reset = rfc3339(now, row["reset_after_seconds"])
        assert shown == [str(row["quota"]), str(row["remaining"]), reset]
    assert usage["five_hour"]["remaining"] == 2000 - 1500 - 200
    if dialect == "anthropic":
        for window, name in (("5h", "five_hour"), ("7d", "weekly")):
            row = usage[name]
            assert float(headers[f"anthropic-ratelimit-unified-{window}-utilization"]) == (
                row["used"] / row["quota"]
            )
            reset = int(now) + row["reset_after_seconds"]
            assert headers[f"anthropic-ratelimit-unified-{window}-reset"] == str(reset)
        assert headers["anthropic-ratelimit-unified-representative-claim"] == "five_hour"
        assert headers["anthropic-ratelimit-unified-status"] == "allowed_warning"  # 0.85
    for secret in (KEY, CUSTOMER):
        assert all(secret not in value for value in headers.values())


# --- the SDKs' own retries ----------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
def test_the_sdk_retry_honours_the_wait(dialect: str) -> None:
    served, _ = guards(None, QUICK)  # the real clock: the SDK really sleeps
    with serve(make_app(served, dialect)) as url:
        ask(dialect, url)
        attempts.clear()
        started = time.monotonic()
        answer = ask(dialect, url, retries=1)
        elapsed = time.monotonic() - started
    assert answer == "hello"
    # refused once (never reaching the endpoint), retried after the Retry-After (1-2 s)
    assert attempts == [dialect]
    assert 1.0 <= elapsed < 10


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
def test_a_long_wait_is_never_retried_by_the_sdk(clock: FakeClock, dialect: str) -> None:
    served, inspect = guards(clock)
    inspect.acquire(CUSTOMER, {"tokens": 1950})
    sdk: Any = openai if dialect == "openai" else anthropic
    attempts.clear()
    with serve(make_app(served, dialect)) as url, pytest.raises(sdk.RateLimitError) as caught:
        ask(dialect, url, retries=2)  # the Anthropic SDK would otherwise sleep for hours
    assert attempts == []  # refused before the endpoint, and not retried
    headers = caught.value.response.headers
    assert headers["x-should-retry"] == "false"
    assert int(headers["retry-after"]) > 3600
    assert "Limit 'five_hour' has 50 tokens remaining, 200 requested" in caught.value.message
    if dialect == "openai":
        error = caught.value
        assert (error.code, error.type) == ("insufficient_quota", "insufficient_quota")
