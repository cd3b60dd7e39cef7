"""Serving ``/metrics``: an ASGI app and a standalone HTTP server, both prometheus_client's."""

from __future__ import annotations

from typing import Any, Protocol

import prometheus_client
from prometheus_client import CollectorRegistry

__all__ = ["Scrapable", "make_metrics_app", "start_metrics_server"]


class Scrapable(Protocol):
    """Anything with a registry to serve, such as a `PrometheusExporter`."""

    @property
    def registry(self) -> CollectorRegistry:
        """The registry to scrape."""
        ...


def make_metrics_app(exporter: Scrapable, *, disable_compression: bool = False) -> Any:
    """prometheus_client's ASGI app over the exporter's registry.

    Mount it in Starlette / FastAPI: ``app.mount("/metrics", make_metrics_app(exporter))``.
    """
    return prometheus_client.make_asgi_app(
        exporter.registry, disable_compression=disable_compression
    )


def start_metrics_server(
    exporter: Scrapable, port: int = 9464, addr: str = "0.0.0.0"
) -> tuple[Any, Any]:
    """Serve the exporter's registry on ``http://addr:port/metrics`` from a daemon thread.

    Returns prometheus_client's ``(server, thread)``; call ``server.shutdown()`` to stop.
    """
    return prometheus_client.start_http_server(port, addr=addr, registry=exporter.registry)
