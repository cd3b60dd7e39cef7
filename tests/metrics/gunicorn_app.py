"""The ASGI app the gunicorn test serves: one guard per worker, its exporter in multiprocess mode.

``GET /hit/<customer>`` decides one request (200 or 429); ``GET /metrics`` scrapes every
worker's merged metrics. Each response names the worker (``x-worker-pid``).
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import generate_latest

from quotaguard import Guard, Plan, TokenBucket
from quotaguard.metrics import ExporterConfig, PrometheusExporter

exporter = PrometheusExporter(
    ExporterConfig(flush_interval=float(os.environ["QG_TEST_FLUSH_INTERVAL"]))
)
assert exporter.multiprocess
guard = Guard(
    [Plan("pro", [TokenBucket("burst", 1, "1/hour")])], default_plan="pro", observers=[exporter]
)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    if path == "/metrics":
        status, body = 200, generate_latest(exporter.registry)
    elif path.startswith("/hit/"):
        allowed = guard.acquire(path.removeprefix("/hit/"), 1).allowed
        status, body = (200 if allowed else 429), b""
    else:
        status, body = 404, b""
    headers = [(b"x-worker-pid", str(os.getpid()).encode()), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
