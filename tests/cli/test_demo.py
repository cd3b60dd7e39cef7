"""``quotaguard demo`` end to end: a real server, real HTTP, four simulated customers."""

from __future__ import annotations

import io
import re
import time

import pytest

from quotaguard.cli import EXIT_OK, main

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("httpx")


def row(out: str, *start: str) -> list[str]:
    for line in out.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if cells[: len(start)] == list(start):
            return cells
    raise AssertionError(f"no row {start} in:\n{out}")


def test_the_demo_runs_in_under_a_minute_and_shows_every_kind_of_decision() -> None:
    out, err = io.StringIO(), io.StringIO()
    started = time.perf_counter()
    assert main(["demo", "--no-progress"], stdout=out, stderr=err) == EXIT_OK
    elapsed = time.perf_counter() - started
    assert elapsed < 60
    text = out.getvalue()
    assert text.startswith("quotaguard demo: 1,632 requests from 4 customers over 4 simulated days")
    # steady: never refused
    assert row(text, "ada", "steady: 3 chats an hour")[3:8] == ["pro", "288", "288", "0", "0"]
    # bursting: refused by the burst limit only
    bob = row(text, "bob", "bursts of 20 every 6 hours")
    assert int(bob[6]) > 0 and bob[8] == f"burst {bob[6]}"
    # spiking: the 5-hour window first, then the weekly cap
    cyd = row(text, "cyd")
    assert int(cyd[6]) > 0 and re.fullmatch(r"five_hour \d+, weekly \d+", cyd[8])
    assert int(row(text, "cyd", "pro", "weekly")[6].rstrip("%")) >= 95
    # revoked: every chat is a 403, benchmark runs pass until their own daily cap
    assert row(text, "eve", "revoked; benchmark runs only")[3:8] == [
        "(revoked)", "192", "0", "0", "192"
    ]  # fmt: skip
    bench = row(text, "eve", "/v1/benchmark/run")
    assert bench[2:6] == ["benchmark", "96", "80", "16"] and bench[7] == "bench_daily 16"
    # the audit trail reads as sentences
    audit = text.split("Audit trail of eve", 1)[1]
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC  ops:demo-operator revoked eve\n", audit)
    assert 'reason shown to eve (HTTP 403): "Suspended for a terms-of-service review' in audit
    assert 'still allowed: scope "benchmark" on plan "benchmark"' in audit
    # one real 429 and one real 403, headers and problem+json bodies as sent
    wire = text.split("On the wire:", 1)[1].split("Prometheus metrics were served", 1)[0]
    too_many = wire.split("HTTP/1.1 429 Too Many Requests", 1)[1]
    assert "POST /v1/chat (x-api-key of bob, on plan free)" in wire
    for line in (
        "content-type: application/problem+json",
        "retry-after: 1",
        "cache-control: no-store",
        'ratelimit-policy: "burst";q=10;w=60',
        'ratelimit: "burst";r=0;t=1',
        '"violated-policies": [',
    ):
        assert line in too_many, line
    forbidden = wire.split("HTTP/1.1 403 Forbidden", 1)[1].split("HTTP/1.1 429", 1)[0]
    assert '"status": 403' in forbidden and "benchmark runs remain available" in forbidden
    assert "retry-after" not in forbidden
    assert re.search(r"served at http://127\.0\.0\.1:\d+/metrics", text)
    # the Prometheus counters agree with the HTTP statuses the client saw
    burst = f'quotaguard_decisions_total{{decision="denied",limit="burst",plan="free"}} {bob[6]}.0'
    assert burst in text
    assert 'quotaguard_decisions_total{decision="revoked",limit="",plan=""} 192.0' in text
    # spike detection: cyd flagged on the metrics and by the hook, the steady ones not
    spikes = text.split("Spike ratio (", 1)[1]
    spiking = row(spikes, "cyd", "pro")
    assert float(spiking[2]) >= 10 and re.fullmatch(r"day 3 \d\d:00, at [\d.]+x", spiking[3])
    for name in ("ada", "bob"):
        steady = row(spikes, name)
        assert 0.5 <= float(steady[2]) <= 2 and steady[3] == "-", steady
    assert err.getvalue() == ""  # --no-progress


def test_the_demo_serves_after_its_report_and_metrics_answer_without_a_redirect() -> None:
    import httpx

    from quotaguard import AsyncGuard
    from quotaguard.demo import PLANS, create_app, serve
    from quotaguard.metrics import PrometheusExporter

    exporter = PrometheusExporter()
    guard = AsyncGuard(PLANS, default_plan="free", observers=[exporter])
    with serve(create_app(guard, exporter)) as url:
        response = httpx.get(f"{url}/metrics")
    assert response.status_code == 200
    assert "quotaguard_build_info" in response.text

    out = io.StringIO()
    assert main(["demo", "--no-progress", "--serve", "0.2"], stdout=out) == EXIT_OK
    text = out.getvalue()
    report_end = text.index("To keep the server up")
    announced = re.search(r"The demo server is up for 0\.2 s at (http://127\.0\.0\.1:\d+) ;", text)
    assert announced is not None and announced.start() > report_end
