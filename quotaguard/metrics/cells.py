"""The one place quotaguard reaches below prometheus_client's documented API.

Multiprocess mode needs histogram observations added in bulk (a batch's count per
bucket, and sampled readings that stand for several decisions), and prometheus_client
offers no public way to do that: ``Histogram.observe`` adds one observation, and custom
collectors are not supported in multiprocess mode. So the histogram's values are
created here the way prometheus_client's own ``Histogram`` creates them, through
``prometheus_client.values.ValueClass``. Single-process mode does not use this (it
exposes its own bucket counts from a collector; see `quotaguard.metrics.families`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from prometheus_client import values
from prometheus_client.utils import floatToGoString

__all__ = ["histogram_cells"]


def histogram_cells(
    name: str,
    documentation: str,
    labelnames: Sequence[str],
    labelvalues: Sequence[str],
    bounds: Sequence[float],
) -> list[Callable[[float], None]]:
    """The ``inc`` of each bucket of one histogram's label set (``+Inf`` last), then of its sum.

    Buckets are not cumulative here: like ``Histogram.observe``, an observation is added
    to the one bucket it falls in, and prometheus_client's multiprocess collector
    accumulates them at scrape time.

    Relies on ``values.ValueClass(typ, metric_name, name, labelnames, labelvalues,
    help_text)`` and its ``inc``, as prometheus_client 0.19 (the oldest quotaguard
    supports) to 0.26 (the newest tested) define them;
    ``tests/metrics/test_multiprocess.py::test_histogram_cells_match_observe`` fails if
    that changes.
    """
    labels = tuple(labelnames)
    bucket_labels = (*labels, "le")
    cells = [
        values.ValueClass(
            "histogram",
            name,
            name + "_bucket",
            bucket_labels,
            (*labelvalues, floatToGoString(bound)),  # type: ignore[no-untyped-call]
            documentation,
        ).inc
        for bound in (*bounds, float("inf"))
    ]
    total = values.ValueClass(
        "histogram", name, name + "_sum", labels, tuple(labelvalues), documentation
    )
    cells.append(total.inc)
    return cells
