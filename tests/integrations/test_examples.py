"""Every example runs (smoke level): the scripts as subprocesses, the apps on uvicorn."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import httpx

from .conftest import serve, wait_for

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_decorators_script_runs() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "decorators.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "refused: Quota exceeded" in result.stdout
    assert "carol used 120 tokens" in result.stdout
    assert "too large for plan 'free'" in result.stdout


def test_llm_api_example() -> None:
    example = load("llm_api")
    app = example.create_app()
    guard = app.guard
    with serve(app, lifespan="on") as url, httpx.Client(base_url=url) as client:
        chat = client.post(
            "/v1/chat",
            json={"prompt": "hello there", "max_tokens": 3},
            headers={"x-api-key": "sk-pro-demo"},
        )
        assert chat.status_code == 200
        assert chat.text.endswith("data: [DONE]\n\n")
        assert '"five_hour";q=500000;w=18000;qg-unit="tokens"' in chat.headers["ratelimit-policy"]
        # the reservation is the body's max_tokens (3), the body reached the app intact
        assert '"weekly";r=4999997;' in chat.headers["ratelimit"]
        assert chat.text.count('"token": "hello"') == 2
        usage = client.get("/usage", headers={"x-api-key": "sk-pro-demo"}).json()
        assert usage["plan"] == "pro"
        assert {item["name"]: item["used"] for item in usage["limits"]}["weekly"] == 5
        revoked = client.post("/v1/chat", json={}, headers={"x-api-key": "sk-revoked-demo"})
        assert revoked.status_code == 403
        assert "terms-of-service" in revoked.json()["detail"]
        bench = client.post(
            "/v1/benchmark/run", json={"max_tokens": 2}, headers={"x-api-key": "sk-revoked-demo"}
        )
        assert bench.status_code == 200
        unknown = client.post("/v1/chat", json={}, headers={"x-api-key": "sk-nope"})
        assert unknown.status_code == 401
        assert client.get("/healthz").json() == {"status": "ok"}
        metrics = client.get("/metrics")  # a route: no redirect to /metrics/
        assert metrics.status_code == 200
        assert "quotaguard_decisions_total" in metrics.text

    async def streams_free() -> bool:
        return (await guard.usage("bob", plan="pro")).limit("streams").remaining == 4

    import asyncio

    wait_for(lambda: asyncio.run(streams_free()))


def test_starlette_example() -> None:
    example = load("starlette_app")
    with serve(example.create_app()) as url, httpx.Client(base_url=url) as client:
        anonymous = [client.get("/").status_code for _ in range(6)]
        assert anonymous == [200] * 5 + [429]
        made_up = client.get("/", headers={"x-api-key": "made-up"})  # no customer: per IP
        assert made_up.status_code == 429
        home = client.get("/", headers={"x-api-key": "sk-basic-demo"})
        assert home.json() == {"hello": "world", "plan": "basic"}
        assert home.headers["x-ratelimit-limit"]
        search = client.get("/search", headers={"x-api-key": "sk-basic-demo"})
        assert search.status_code == 200
        usage = client.get("/usage", headers={"x-api-key": "sk-basic-demo"}).json()
        assert {item["name"]: item["used"] for item in usage["limits"]}["daily"] == 6
        assert client.get("/healthz").text == "ok"
