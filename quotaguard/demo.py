"""``quotaguard demo``: an LLM API under simulated load, in under a minute, without Redis.

A FastAPI app (the ASGI `QuotaMiddleware`, the ``/usage`` route and the Prometheus
``/metrics`` endpoint) runs under uvicorn on a free 127.0.0.1 port, in a thread, on the
in-memory backend. An httpx client plays four customers over four simulated days; a
`quotaguard.testing.FakeClock` shared by the guard and the driver makes an hour pass
between rounds, so the run is fast and its decisions are the same every time:

- ``ada`` (plan pro) chats steadily, three times an hour;
- ``bob`` (plan free) sends a burst of 20 requests every six hours (burst limit: 10);
- ``cyd`` (plan pro) chats modestly for two days, then spikes to 10 large jobs an hour
  and runs into the 5-hour window, then the weekly cap;
- ``eve`` (plan pro) was revoked by an operator but keeps a benchmark-only allowance on
  a plan of its own (20 runs a day).

Each chat reserves its estimate (``?max_tokens=``) and settles the tokens it really used.
The run ends with a table of HTTP outcomes per customer and the limits that refused them,
each customer's usage per limit, the audit trail in sentences, the first 429 and the
first 403 exactly as sent (headers and problem+json bodies), each customer's spike ratio as
``/metrics`` shows it and the spikes the exporter's ``on_spike`` hook reported (cyd only),
and where ``/metrics`` is served.

Needs FastAPI, uvicorn and httpx (``pip install 'quotaguard[demo]'``).
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

import attrs

from quotaguard.backends.memory import MemoryBackend
from quotaguard.core.policy import Concurrency, Plan, RollingWindow, TokenBucket
from quotaguard.guard import AsyncGuard, Guard
from quotaguard.testing import FakeClock

__all__ = ["CUSTOMERS", "PLANS", "DemoResult", "create_app", "run_demo", "simulate"]

PLANS = [
    Plan(
        "free",
        [
            TokenBucket("burst", 10, "1/6 seconds"),
            RollingWindow.from_rate("five_hour", "50000/5 hours", unit="tokens"),
            RollingWindow.from_rate("weekly", "500000/week", unit="tokens"),
            Concurrency("streams", 2, lease_ttl="10 minutes"),
        ],
    ),
    Plan(
        "pro",
        [
            TokenBucket("burst", 60, "1/second"),
            RollingWindow.from_rate("five_hour", "1000000/5 hours", unit="tokens"),
            RollingWindow.from_rate("weekly", "3000000/week", unit="tokens"),
            Concurrency("streams", 4, lease_ttl="10 minutes"),
        ],
    ),
    # what a revoked customer may still use, and only in the "benchmark" scope
    Plan(
        "benchmark",
        [TokenBucket("burst", 5, "1/10 seconds"), RollingWindow.from_rate("bench_daily", "20/day")],
    ),
]
"""The demo's plans."""


@attrs.frozen
class DemoCustomer:
    """A simulated customer: who, on which plan, with which API key, doing what."""

    name: str
    plan: str
    key: str
    behaviour: str


CUSTOMERS = (
    DemoCustomer("ada", "pro", "sk-demo-ada", "steady: 3 chats an hour"),
    DemoCustomer("bob", "free", "sk-demo-bob", "bursts of 20 every 6 hours"),
    DemoCustomer("cyd", "pro", "sk-demo-cyd", "spikes to 10 big jobs/hour on day 3"),
    DemoCustomer("eve", "pro", "sk-demo-eve", "revoked; benchmark runs only"),
)
"""The simulated customers."""

REVOCATION = "Suspended for a terms-of-service review; benchmark runs remain available."
HOURS = 96
ESTIMATE = 1_000


def create_app(guard: AsyncGuard, exporter: Any | None = None) -> Any:
    """The demo LLM API on ``guard``.

    Routes: ``POST /v1/chat``, ``POST /v1/benchmark/run``, ``GET /usage``,
    ``GET /metrics`` (when an exporter is given), ``GET /healthz``.
    """
    from fastapi import FastAPI
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    from quotaguard.integrations import APIKey, Identity, QuotaMiddleware, Route, exempt, hash_key
    from quotaguard.integrations.asgi import report_cost
    from quotaguard.integrations.fastapi import install, usage_router

    table = {hash_key(c.key): Identity(c.name, c.plan) for c in CUSTOMERS}
    identify = APIKey(lookup=table.get)
    api = FastAPI(title="quotaguard demo: an LLM API")
    install(api)
    api.include_router(usage_router(guard, identify))
    if exporter is not None:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
        from starlette.responses import Response

        @api.get("/metrics", include_in_schema=False)
        async def metrics() -> Response:  # a route, not a mount: no redirect to /metrics/
            return Response(generate_latest(exporter.registry), media_type=CONTENT_TYPE_LATEST)

    @api.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    async def complete(request: Request) -> JSONResponse:
        """A fake model: uses 90% of max_tokens plus the prompt, reported as the cost."""
        body = json.loads(await request.body() or b"{}")
        prompt_tokens = len(str(body.get("prompt", "")).split())
        completion = int(body.get("max_tokens", ESTIMATE)) * 9 // 10
        report_cost(request, prompt_tokens + completion)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion}
        return JSONResponse({"text": "lorem ipsum " * 3, "usage": usage})

    # plain Starlette routes: the endpoint takes the request, nothing for FastAPI to inject
    api.add_route("/v1/chat", complete, methods=["POST"])
    api.add_route("/v1/benchmark/run", complete, methods=["POST"])

    return QuotaMiddleware(
        api,
        guard,
        identify=identify,
        routes=[
            exempt("/healthz"),
            exempt("/usage"),
            exempt("/metrics*"),
            Route("/v1/chat", cost=_estimate, unit="tokens", reports_cost=True),
            Route(
                "/v1/benchmark/run",
                cost=_estimate,
                unit="tokens",
                reports_cost=True,
                scope="benchmark",
            ),
        ],
    )


def _estimate(scope: Any) -> int:
    for part in scope.get("query_string", b"").decode("latin-1").split("&"):
        name, _, value = part.partition("=")
        if name == "max_tokens" and value.isdigit():
            return int(value)
    return ESTIMATE


@contextlib.contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run ``app`` under uvicorn on a free loopback port in a thread; yields its URL."""
    import uvicorn

    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted sockets only when the
    # listening socket says TCP; without it, every keep-alive response waits 40 ms for
    # a delayed ACK (Nagle's algorithm)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the demo server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@attrs.define
class Tally:
    """The outcomes of one customer's requests to one route."""

    customer: str
    route: str
    plan: str = ""
    statuses: Counter[int] = attrs.field(factory=Counter)
    denied_by: Counter[str] = attrs.field(factory=Counter)
    tokens: int = 0


WIRE_HEADERS = (
    "content-type",
    "retry-after",
    "cache-control",
    "ratelimit-policy",
    "ratelimit",
)
"""The response headers the report shows for a refusal."""


@attrs.frozen
class Exchange:
    """One request and the response it got, as sent on the wire."""

    request: str
    """The request line and the customer's credential, e.g. ``POST /v1/chat (ada)``."""
    status: int
    """The response's HTTP status."""
    headers: tuple[tuple[str, str], ...]
    """The response headers of `WIRE_HEADERS` that were sent, in that order."""
    body: str
    """The response body."""


@attrs.define
class DemoResult:
    """What the simulation did."""

    url: str
    tallies: dict[tuple[str, str], Tally]
    usage: dict[str, Any]
    audit: list[Any]
    metrics: str
    seconds: float
    refusals: dict[int, Exchange] = attrs.field(factory=dict)
    """The first response of each refusal status (429, 403), as sent."""
    spikes: list[Any] = attrs.field(factory=list)
    """The `quotaguard.metrics.SpikeEvent`s the exporter's ``on_spike`` hook received."""
    started: float = 0.0
    """The simulated clock's start, in seconds since the epoch."""

    @property
    def requests(self) -> int:
        """How many requests were sent."""
        return sum(sum(t.statuses.values()) for t in self.tallies.values())


def _plan_of(customer: DemoCustomer, route: str) -> str:
    if customer.name == "eve":
        return "benchmark" if route.startswith("/v1/benchmark") else "(revoked)"
    return customer.plan


def _schedule(hour: int) -> Iterator[tuple[DemoCustomer, str, int]]:
    """The requests of simulated hour ``hour``: (customer, route, max_tokens)."""
    ada, bob, cyd, eve = CUSTOMERS
    for _ in range(3):
        yield ada, "/v1/chat", 2_000
    for _ in range(20 if hour % 6 == 0 else 2):
        yield bob, "/v1/chat", 500
    if hour < 48:
        for _ in range(2):
            yield cyd, "/v1/chat", 4_000
    else:
        for _ in range(10):
            yield cyd, "/v1/chat", 40_000
    for _ in range(2):
        yield eve, "/v1/chat", 1_000
    yield eve, "/v1/benchmark/run", 2_000


class _Progress:
    """A one-line progress bar on a terminal; a line a simulated day otherwise."""

    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream
        self.tty = bool(stream is not None and stream.isatty())

    def update(self, hour: int, sent: int, refused: int) -> None:
        stream = self.stream
        if stream is None:
            return
        done = hour + 1
        day, clock = divmod(hour, 24)
        text = f"day {day + 1} {clock:02d}:00  {sent:>5,} requests, {refused:>4,} refused"
        if self.tty:
            bar = "#" * (done * 30 // HOURS)
            stream.write(f"\r  [{bar:<30}] {text}")
            if done == HOURS:
                stream.write("\n")
        elif done % 24 == 0:
            stream.write(f"  simulated {text}\n")
        stream.flush()


def simulate(
    progress: TextIO | None = None,
    serve_seconds: float = 0.0,
    ready: Callable[[DemoResult], object] | None = None,
    announce: TextIO | None = None,
) -> DemoResult:
    """Run the app and the simulated customers; return what happened.

    ``ready`` is called with the result while the server is still up; then, with
    ``serve_seconds``, the server stays up that long for exploring: its URL and a few
    curl commands are written first to ``announce`` (default: ``progress``, else stderr).
    """
    from quotaguard.metrics import PrometheusExporter

    started = time.perf_counter()
    clock = FakeClock()
    spikes: list[Any] = []
    exporter = PrometheusExporter(clock=clock, on_spike=spikes.append)
    clock_start = clock.now()
    backend = MemoryBackend(clock=clock)
    guard = AsyncGuard(PLANS, backend, default_plan="free", clock=clock, observers=[exporter])
    operator = Guard(PLANS, backend, default_plan="free", clock=clock)  # the operator's view
    operator.revoke(
        "eve", REVOCATION, allow_scopes={"benchmark": "benchmark"}, actor="ops:demo-operator"
    )
    tallies: dict[tuple[str, str], Tally] = {}
    refusals: dict[int, Exchange] = {}
    refused = sent = 0
    bar = _Progress(progress)
    with serve(create_app(guard, exporter)) as url, _client(url) as client:
        for hour in range(HOURS):
            for customer, route, max_tokens in _schedule(hour):
                response = client.post(
                    f"{route}?max_tokens={max_tokens}",
                    headers={"x-api-key": customer.key},
                    json={
                        "prompt": "summarise this quarter's support tickets",
                        "max_tokens": max_tokens,
                    },
                )
                tally = tallies.get((customer.name, route))
                if tally is None:
                    tally = Tally(customer.name, route, _plan_of(customer, route))
                    tallies[customer.name, route] = tally
                tally.statuses[response.status_code] += 1
                sent += 1
                if response.status_code == 200:
                    usage = response.json()["usage"]
                    tally.tokens += usage["prompt_tokens"] + usage["completion_tokens"]
                else:
                    refused += 1
                    if response.status_code not in refusals:
                        refusals[response.status_code] = _exchange(route, customer, response)
                    if response.status_code == 429:
                        for name in response.json().get("violated-policies", []):
                            tally.denied_by[name] += 1
                clock.advance(1)  # one simulated second between requests
            # An hour passes in a fraction of a real second: flush as the exporter's 1 s
            # timer would have, so counts land at the simulated time they were made.
            exporter.flush()
            clock.set(clock.now() - clock.now() % 3600 + 3600)  # on to the next hour
            bar.update(hour, sent, refused)
        metrics = client.get("/metrics").text
        usage = {
            c.name: operator.usage(c.name, plan="benchmark" if c.name == "eve" else c.plan)
            for c in CUSTOMERS
        }
        result = DemoResult(
            url,
            tallies,
            usage,
            operator.audit("eve"),
            metrics,
            time.perf_counter() - started,
            refusals,
            spikes,
            clock_start,
        )
        if ready is not None:
            ready(result)
        if serve_seconds > 0:
            _explore(url, serve_seconds, announce or progress or sys.stderr)
    return result


def _exchange(route: str, customer: DemoCustomer, response: Any) -> Exchange:
    shown = tuple(
        (name, response.headers[name]) for name in WIRE_HEADERS if name in response.headers
    )
    request = f"POST {route} (x-api-key of {customer.name}, on plan {customer.plan})"
    return Exchange(request, response.status_code, shown, response.text)


def _client(url: str) -> Any:
    import httpx

    # TCP_NODELAY: a POST's headers and body go out in two writes; without it, Nagle's
    # algorithm and delayed ACKs add 40 ms to every request on loopback
    nodelay = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
    return httpx.Client(base_url=url, transport=httpx.HTTPTransport(socket_options=nodelay))


def _explore(url: str, seconds: float, stream: TextIO) -> None:
    stream.write(
        f"\nThe demo server is up for {seconds:g} s at {url} ; try:\n"
        f"  curl -i -X POST -H 'x-api-key: sk-demo-ada' -d '{{\"max_tokens\": 50}}' "
        f"{url}/v1/chat\n"
        f"  curl -H 'x-api-key: sk-demo-cyd' {url}/usage\n"
        f"  curl {url}/metrics\n"
    )
    stream.flush()
    time.sleep(seconds)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[int]) -> str:
    from quotaguard.cli import table

    return table(header, rows, numeric)


def report(result: DemoResult) -> str:
    """The readable summary of a run."""
    from quotaguard.cli import _duration

    lines = [
        f"quotaguard demo: {result.requests:,} requests from 4 customers over {HOURS // 24} "
        f"simulated days, in {result.seconds:.1f} s",
        "(FastAPI + QuotaMiddleware on the in-memory backend; a FakeClock makes the hours pass)",
        "",
        "Decisions per customer and route (HTTP status of every request):",
        "",
    ]
    behaviour = {c.name: c.behaviour for c in CUSTOMERS}
    rows: list[tuple[str, ...]] = []
    for tally in result.tallies.values():
        statuses = tally.statuses
        denied = ", ".join(f"{name} {count}" for name, count in sorted(tally.denied_by.items()))
        rows.append(
            (
                tally.customer,
                behaviour[tally.customer] if tally.route == "/v1/chat" else "",
                tally.route,
                tally.plan,
                f"{sum(statuses.values()):,}",
                f"{statuses[200]:,}",
                f"{statuses[429]:,}",
                f"{statuses[403]:,}",
                denied or "-",
            )
        )
    header = ("customer", "behaviour", "route", "plan", "sent", "200", "429", "403")
    lines.append(_table((*header, "429s by limit"), rows, (4, 5, 6, 7)))
    lines += ["", "Usage at the end, per customer and limit (guard.usage):", ""]
    rows = []  # the same type as above
    for name, usage in result.usage.items():
        for status in usage.limits:
            rows.append(
                (
                    name,
                    usage.plan,
                    status.name,
                    status.limit.unit,
                    f"{status.used:,.0f}",
                    f"{status.quota:,}",
                    f"{status.utilization:.0%}",
                    _duration(status.reset_after) if status.reset_after else "-",
                )
            )
    header = ("customer", "plan", "limit", "unit", "used", "quota", "used%", "resets in")
    lines.append(_table(header, rows, (4, 5, 6, 7)))
    lines += ["", *_audit_report(result)]
    lines += ["", *_wire_report(result)]
    decisions = [
        line
        for line in result.metrics.splitlines()
        if line.startswith("quotaguard_decisions_total{") and 'decision="allowed"' not in line
    ]
    lines += ["", f"Prometheus metrics were served at {result.url}/metrics"]
    if decisions:
        lines += ["refusals counted there:", *(f"  {line}" for line in decisions[:6])]
    lines += ["", *_spike_report(result), ""]
    lines.append("To keep the server up and explore it with curl: quotaguard demo --serve 300")
    return "\n".join(lines) + "\n"


def _audit_report(result: DemoResult) -> list[str]:
    """The audit trail of eve as sentences: who did what, when, why, what is still allowed."""
    lines = ["Audit trail of eve (quotaguard audit eve):"]
    revocation = result.usage["eve"].meta.revocation
    for entry in result.audit:
        when = datetime.fromtimestamp(entry.at, UTC).strftime("%Y-%m-%d %H:%M UTC")
        verb = {"revoke": "revoked", "restore": "restored", "assign": "assigned"}
        lines.append(f"  {when}  {entry.actor} {verb.get(entry.action, entry.action)} eve")
        if entry.reason:
            lines.append(f'    reason shown to eve (HTTP 403): "{entry.reason}"')
        if entry.action == "revoke" and revocation is not None:
            allowed = ", ".join(
                f'scope "{scope}" on plan "{plan}"' for scope, plan in revocation.allow_scopes
            )
            lines.append(f"    still allowed: {allowed or 'nothing'}")
        elif entry.detail:
            lines.append(f"    {entry.detail}")
    return lines


def _wire_report(result: DemoResult) -> list[str]:
    """The first 429 and the first 403 as they went over the wire."""
    lines = ["On the wire: the first refusal of each kind, as the client received it"]
    for status in sorted(result.refusals):
        exchange = result.refusals[status]
        lines += ["", f"  {exchange.request}", f"  HTTP/1.1 {status} {_REASONS.get(status, '')}"]
        lines += [f"  {name}: {value}" for name, value in exchange.headers]
        try:
            body = json.dumps(json.loads(exchange.body), indent=2, ensure_ascii=False)
        except ValueError:
            body = exchange.body
        lines += ["", *(f"  {line}" for line in body.splitlines())]
    return lines


_REASONS = {401: "Unauthorized", 403: "Forbidden", 429: "Too Many Requests"}


def _spike_report(result: DemoResult) -> list[str]:
    """Each customer's spike ratio from the scrape, and what the spike hook reported."""
    from prometheus_client.parser import text_string_to_metric_families

    ratios = {
        sample.labels["customer"]: (sample.labels["plan"], sample.value)
        for family in text_string_to_metric_families(result.metrics)
        for sample in family.samples
        if sample.name == "quotaguard_top_customer_spike_ratio"
    }
    flagged: dict[str, Any] = {}
    for event in result.spikes:
        flagged.setdefault(event.customer, event)
    rows = []
    for name, (plan, ratio) in sorted(ratios.items(), key=lambda item: -item[1][1]):
        event = flagged.get(name)
        if event is None:
            hook = "-"
        else:
            day, second = divmod(event.at - result.started, 86_400)
            hook = f"day {int(day) + 1} {int(second // 3600):02d}:00, at {event.ratio:.1f}x"
        rows.append((name, plan, f"{ratio:.1f}", hook))
    lines = [
        "Spike ratio (quotaguard_top_customer_spike_ratio: recent tokens over the customer's",
        "own baseline; about 1 when steady) and the on_spike hook (fires at 10x):",
        "",
    ]
    header = ("customer", "plan", "spike ratio", "on_spike fired")
    return [*lines, _table(header, rows, (2,))]


def run_demo(out: TextIO | None = None, *, progress: bool = True, serve: float = 0.0) -> int:
    """Run the demo and print its report to ``out``; returns an exit code."""
    out = out or sys.stdout
    missing = [name for name in ("fastapi", "uvicorn", "httpx") if not _importable(name)]
    if missing:
        sys.stderr.write(
            f"quotaguard: error: the demo needs {', '.join(missing)}: "
            "pip install 'quotaguard[demo]'\n"
        )
        return 1
    stream = sys.stderr if progress else None
    if stream is not None:
        stream.write("quotaguard demo: 4 customers, 4 simulated days, no Redis needed\n")

    def show(result: DemoResult) -> None:
        out.write(report(result))
        out.flush()

    simulate(stream, serve, show, announce=out)
    return 0


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
