"""The demo: the example LLM API (llm_api.py) under simulated customers, in seconds.

Run it:  .venv/bin/python examples/demo.py [--no-progress] [--serve SECONDS]
         (or `quotaguard demo` from a source checkout; `bash scripts/demo.sh` sets it up)

The app of llm_api.py, exactly as a user would run it (its plans, API keys, routes,
middleware, /usage and /metrics), serves on a free 127.0.0.1 port under uvicorn in a
thread, on the in-memory backend. An httpx client plays four of its customers over four
simulated days; a `quotaguard.testing.FakeClock` shared by the guard, the exporter and
the driver makes an hour pass between rounds, so the run is fast and its decisions are
the same every time:

- carol (plan max) chats steadily, three times an hour;
- alice (plan free) sends a burst of 20 requests every six hours (burst limit: 10);
- bob (plan pro) chats twice an hour for a day and a half, then spikes to 40 large jobs an hour
  and runs into his 5-hour window, then his weekly cap;
- mallory (plan pro) was revoked by an operator when the app started, but keeps a
  benchmark-only allowance on a plan of its own (200,000 tokens a day).

Each chat reserves the body's max_tokens, streams, and settles the tokens really used.
The report (demo_report.py) follows. Needs FastAPI, uvicorn and httpx
(``pip install -e '.[demo]'``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO

import attrs

from quotaguard import AsyncGuard, Guard, MemoryBackend
from quotaguard.integrations import hash_key
from quotaguard.testing import FakeClock

HOURS = 96
SPIKE_HOUR = 36  # day 2, noon
WIRE_HEADERS = ("content-type", "retry-after", "cache-control", "ratelimit-policy", "ratelimit")
"""The response headers the report shows for a refusal."""


@attrs.frozen
class Persona:
    """A simulated customer: an API key of the example app, and what they do."""

    key: str
    behaviour: str


PERSONAS = (
    Persona("sk-max-demo", "steady: 3 chats an hour"),
    Persona("sk-free-demo", "bursts of 20 every 6 hours"),
    Persona("sk-pro-demo", "spikes to 40 big jobs/hour on day 2"),
    Persona("sk-revoked-demo", "revoked; benchmark runs only"),
)
"""The simulated customers, in the report's order: steady, bursting, spiking, revoked."""


@attrs.define
class Tally:
    """The outcomes of one customer's requests to one route."""

    customer: str
    route: str
    plan: str
    behaviour: str
    statuses: dict[int, int] = attrs.field(factory=dict)
    denied_by: dict[str, int] = attrs.field(factory=dict)
    tokens: int = 0


@attrs.frozen
class Exchange:
    """One request and the response it got, as sent on the wire."""

    request: str
    """The request line and the customer's credential, e.g. ``POST /v1/chat (...)``."""
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
    """Each customer's `quotaguard.Usage` at the end."""
    audit: dict[str, list[Any]]
    """The audit entries of each revoked customer."""
    metrics: str
    """The last scrape of /metrics."""
    seconds: float
    refusals: dict[int, Exchange]
    """The first response of each refusal status (429, 403), as sent."""
    spikes: list[Any]
    """The `quotaguard.metrics.SpikeEvent`s the exporter's ``on_spike`` hook received."""
    started: float
    """The simulated clock's start, in seconds since the epoch."""

    @property
    def days(self) -> int:
        """How many days were simulated."""
        return HOURS // 24

    @property
    def requests(self) -> int:
        """How many requests were sent."""
        return sum(sum(t.statuses.values()) for t in self.tallies.values())


@contextlib.contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run ``app`` under uvicorn on a free loopback port in a thread; yield its URL."""
    import uvicorn

    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted sockets only when the
    # listening socket says TCP; without it, every keep-alive response waits 40 ms for
    # a delayed ACK (Nagle's algorithm)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
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
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def schedule(hour: int) -> Iterator[tuple[Persona, str, int]]:
    """The requests of simulated hour ``hour``: (persona, route, max_tokens)."""
    steady, bursting, spiking, revoked = PERSONAS
    yield from [(steady, "/v1/chat", 2_000)] * 3
    yield from [(bursting, "/v1/chat", 500)] * (20 if hour % 6 == 0 else 2)
    if hour < SPIKE_HOUR:
        yield from [(spiking, "/v1/chat", 2_000)] * 2
    else:
        yield from [(spiking, "/v1/chat", 4_000)] * 40
    yield from [(revoked, "/v1/chat", 1_000)] * 2
    yield from [(revoked, "/v1/benchmark/run", 4_000)] * 3


class Progress:
    """A one-line progress bar on a terminal; a line a simulated day otherwise."""

    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream
        self.tty = bool(stream is not None and stream.isatty())

    def update(self, hour: int, sent: int, refused: int) -> None:
        """Show the progress after simulated hour ``hour``."""
        stream = self.stream
        if stream is None:
            return
        done = hour + 1
        day, clock = divmod(hour, 24)
        text = f"day {day + 1} {clock:02d}:00  {sent:>5,} requests, {refused:>4,} refused"
        if self.tty:
            stream.write(f"\r  [{'#' * (done * 30 // HOURS):<30}] {text}")
            if done == HOURS:
                stream.write("\n")
        elif done % 24 == 0:
            stream.write(f"  simulated {text}\n")
        stream.flush()


def _client(url: str) -> Any:
    import httpx

    # TCP_NODELAY: a POST's headers and body go out in two writes; without it, Nagle's
    # algorithm and delayed ACKs add 40 ms to every request on loopback
    nodelay = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
    return httpx.Client(base_url=url, transport=httpx.HTTPTransport(socket_options=nodelay))


def _used_tokens(stream: str) -> int:
    """The tokens of a reply, from the usage event at the end of its stream."""
    for line in reversed(stream.splitlines()):
        if line.startswith('data: {"usage"'):
            usage = json.loads(line.removeprefix("data: "))["usage"]
            return int(usage["prompt_tokens"] + usage["completion_tokens"])
    return 0


def _exchange(route: str, name: str, plan: str, response: Any) -> Exchange:
    shown = tuple((h, response.headers[h]) for h in WIRE_HEADERS if h in response.headers)
    request = f"POST {route} (x-api-key of {name}, on plan {plan})"
    return Exchange(request, response.status_code, shown, response.text)


def simulate(
    progress: TextIO | None = None,
    serve_seconds: float = 0.0,
    ready: Callable[[DemoResult], object] | None = None,
    announce: TextIO | None = None,
) -> DemoResult:
    """Run the example app and the simulated customers; return what happened.

    ``ready`` is called with the result while the server is still up; then, with
    ``serve_seconds``, the server stays up that long for exploring: its URL and a few
    curl commands are written first to ``announce`` (default: ``progress``, else stderr).
    """
    import llm_api

    from quotaguard.metrics import PrometheusExporter

    started = time.perf_counter()
    clock = FakeClock()
    spikes: list[Any] = []
    exporter = PrometheusExporter(clock=clock, on_spike=spikes.append)
    backend = MemoryBackend(clock=clock)
    plans = llm_api.PLANS
    guard = AsyncGuard(plans, backend, default_plan="free", clock=clock, observers=[exporter])
    operator = Guard(plans, backend, default_plan="free", clock=clock)
    identities = {p.key: llm_api.CUSTOMERS[hash_key(p.key)] for p in PERSONAS}
    app = llm_api.create_app(guard, exporter, seconds_per_token=0, tokens_per_event=4096)
    tallies: dict[tuple[str, str], Tally] = {}
    refusals: dict[int, Exchange] = {}
    refused = sent = 0
    bar = Progress(progress)
    start = clock.now()
    with serve(app) as url, _client(url) as client:
        for hour in range(HOURS):
            for persona, route, max_tokens in schedule(hour):
                who = identities[persona.key]
                response = client.post(
                    route,
                    headers={"x-api-key": persona.key},
                    json={"prompt": "go", "max_tokens": max_tokens},
                )
                plan = "benchmark" if route == "/v1/benchmark/run" else who.plan
                tally = tallies.setdefault(
                    (who.customer, route), Tally(who.customer, route, plan, persona.behaviour)
                )
                status = response.status_code
                tally.statuses[status] = tally.statuses.get(status, 0) + 1
                sent += 1
                if status == 200:
                    tally.tokens += _used_tokens(response.text)
                else:
                    refused += 1
                    if status not in refusals:
                        refusals[status] = _exchange(route, who.customer, who.plan, response)
                    if status == 429:
                        for name in response.json().get("violated-policies", []):
                            tally.denied_by[name] = tally.denied_by.get(name, 0) + 1
                    if status == 403:
                        tally.plan = "(revoked)"
                clock.advance(1)  # one simulated second between requests
            # An hour passes in a fraction of a real second: flush as the exporter's 1 s
            # timer would have, so counts land at the simulated time they were made.
            exporter.flush()
            clock.set(clock.now() - clock.now() % 3600 + 3600)  # on to the next hour
            bar.update(hour, sent, refused)
        usage = {
            who.customer: operator.usage(who.customer, plan=who.plan) for who in identities.values()
        }
        revoked = [name for name, found in usage.items() if found.meta.revocation is not None]
        for name in revoked:
            usage[name] = operator.usage(name, plan="benchmark")
        result = DemoResult(
            url,
            tallies,
            usage,
            {name: operator.audit(name) for name in revoked},
            client.get("/metrics").text,
            time.perf_counter() - started,
            refusals,
            spikes,
            start,
        )
        if ready is not None:
            ready(result)
        if serve_seconds > 0:
            _explore(url, serve_seconds, announce or progress or sys.stderr)
    return result


def _explore(url: str, seconds: float, stream: TextIO) -> None:
    stream.write(
        f"\nThe demo server is up for {seconds:g} s at {url} ; try:\n"
        f"  curl -i -H 'x-api-key: sk-max-demo' -d '{{\"max_tokens\": 50}}' {url}/v1/chat\n"
        f"  curl -H 'x-api-key: sk-pro-demo' {url}/usage    # bob, at his weekly cap\n"
        f"  curl {url}/metrics\n"
    )
    stream.flush()
    time.sleep(seconds)


def run_demo(
    out: TextIO | None = None,
    err: TextIO | None = None,
    *,
    progress: bool = True,
    serve: float = 0.0,
) -> int:
    """Run the demo and print its report to ``out``; returns an exit code."""
    from demo_report import report

    out = out or sys.stdout
    err = err or sys.stderr
    missing = [name for name in ("fastapi", "uvicorn", "httpx") if not _importable(name)]
    if missing:
        err.write(
            f"quotaguard: error: the demo needs {', '.join(missing)}: pip install -e '.[demo]'\n"
        )
        return 1
    stream = err if progress else None
    if stream is not None:
        stream.write("quotaguard demo: 4 customers, 4 simulated days, no Redis needed\n")

    def show(result: DemoResult) -> None:
        out.write(report(result))
        out.flush()

    simulate(stream, serve, show, announce=out)
    return 0


def _importable(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def main() -> None:
    """``python examples/demo.py [...]``: the same as ``quotaguard demo [...]``."""
    from quotaguard.cli import main as cli

    sys.exit(cli(["demo", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
