"""``quotaguard demo`` end to end: the example app on a real server, real HTTP, four
simulated customers; and what the command says where there is no source checkout."""

from __future__ import annotations

import importlib.util
import io
import re
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

from quotaguard.cli import EXIT_ERROR, EXIT_OK, main
from quotaguard.cli.commands import demo as demo_command

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("httpx")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def row(out: str, *start: str) -> list[str]:
    for line in out.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if cells[: len(start)] == list(start):
            return cells
    raise AssertionError(f"no row {start} in:\n{out}")


def load(name: str) -> ModuleType:
    """An example module, with its neighbours importable as the demo imports them."""
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    spec = importlib.util.spec_from_file_location(f"test_demo_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_demo_runs_in_under_a_minute_and_shows_every_kind_of_decision() -> None:
    out, err = io.StringIO(), io.StringIO()
    started = time.perf_counter()
    assert main(["demo", "--no-progress"], stdout=out, stderr=err) == EXIT_OK
    elapsed = time.perf_counter() - started
    assert elapsed < 60
    text = out.getvalue()
    assert text.startswith("quotaguard demo: 3,720 requests from 4 customers over 4 simulated days")
    assert "(examples/llm_api.py on the in-memory backend" in text
    # steady: never refused
    assert row(text, "carol", "steady: 3 chats an hour")[3:8] == ["max", "288", "288", "0", "0"]
    # bursting: refused by the burst limit only
    alice = row(text, "alice", "bursts of 20 every 6 hours")
    assert int(alice[6]) > 0 and alice[8] == f"burst {alice[6]}"
    # spiking: the 5-hour window first, then the weekly cap
    bob = row(text, "bob")
    assert int(bob[6].replace(",", "")) > 0
    assert re.fullmatch(r"five_hour \d+, weekly \d+", bob[8])
    assert int(row(text, "bob", "pro", "weekly")[6].rstrip("%")) >= 95
    # revoked: every chat is a 403, benchmark runs pass until their own daily cap
    assert row(text, "mallory", "revoked; benchmark runs only")[3:8] == [
        "(revoked)", "192", "0", "0", "192"
    ]  # fmt: skip
    bench = row(text, "mallory", "/v1/benchmark/run")
    assert bench[2:4] == ["benchmark", "288"] and int(bench[5]) > 0
    assert bench[7] == f"bench_daily {bench[5]}"
    assert int(row(text, "mallory", "benchmark", "bench_daily")[6].rstrip("%")) >= 90
    # the audit trail reads as sentences
    audit = text.split("Audit trail of mallory", 1)[1]
    assert re.search(
        r"\d{4}-\d\d-\d\d \d\d:\d\d UTC  ops:trust-and-safety revoked mallory\n", audit
    )
    assert 'reason shown to mallory (HTTP 403): "Access suspended for a terms-of-service' in audit
    assert 'still allowed: scope "benchmark" on plan "benchmark"' in audit
    # one real 429 and one real 403, headers and problem+json bodies as sent
    wire = text.split("On the wire:", 1)[1].split("Prometheus metrics were served", 1)[0]
    too_many = wire.split("HTTP/1.1 429 Too Many Requests", 1)[1]
    assert "POST /v1/chat (x-api-key of alice, on plan free)" in wire
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
    burst = 'quotaguard_decisions_total{decision="denied",limit="burst",plan="free"}'
    assert f"{burst} {alice[6]}.0" in text
    assert 'quotaguard_decisions_total{decision="revoked",limit="",plan=""} 192.0' in text
    # spike detection: bob flagged on the metrics and by the hook, the steady ones not
    spikes = text.split("Spike ratio (", 1)[1]
    spiking = row(spikes, "bob", "pro")
    assert float(spiking[2]) >= 10 and re.fullmatch(r"day 2 \d\d:00, at [\d.]+x", spiking[3])
    for name in ("carol", "alice"):
        steady = row(spikes, name)
        assert 0.5 <= float(steady[2]) <= 2 and steady[3] == "-", steady
    assert err.getvalue() == ""  # --no-progress


def test_the_demo_serves_after_its_report_and_metrics_answer_without_a_redirect() -> None:
    import httpx

    demo, llm_api = load("demo"), load("llm_api")
    with demo.serve(llm_api.create_app()) as url:
        response = httpx.get(f"{url}/metrics")
    assert response.status_code == 200
    assert "quotaguard_build_info" in response.text

    out = io.StringIO()
    assert main(["demo", "--no-progress", "--serve", "0.2"], stdout=out) == EXIT_OK
    text = out.getvalue()
    report_end = text.index("To keep the server up")
    announced = re.search(r"The demo server is up for 0\.2 s at (http://127\.0\.0\.1:\d+) ;", text)
    assert announced is not None and announced.start() > report_end


def test_the_demo_is_found_only_in_a_source_checkout(tmp_path: Path) -> None:
    assert demo_command.find_demo() == EXAMPLES / "demo.py"
    installed = tmp_path / "site-packages" / "quotaguard" / "__init__.py"
    installed.parent.mkdir(parents=True)
    (tmp_path / "site-packages" / "examples").mkdir()
    (tmp_path / "site-packages" / "examples" / "demo.py").write_text("")  # not ours
    assert demo_command.find_demo(installed) is None


def test_outside_a_source_checkout_the_command_says_how_to_run_the_demo(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(demo_command, "find_demo", lambda: None)
    out, err = io.StringIO(), io.StringIO()
    assert main(["demo"], stdout=out, stderr=err) == EXIT_ERROR
    assert out.getvalue() == ""
    assert err.getvalue() == (
        "quotaguard: error: the demo is examples/demo.py of a source checkout of quotaguard, "
        "and this installation has none: in a clone of the repository, run: "
        "bash scripts/demo.sh\n"
    )
