"""prometheus_client multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``).

Counters, histograms and the near-limit and build-info gauges go through
prometheus_client's own mmap files (see `MULTIPROCESS_MODES` for each gauge's mode):
at each flush, `MultiprocessSink` adds what the aggregator counted since the last flush.
The top-K gauges cannot: those files never forget a label set, so per-customer series
would grow without bound. Instead each process atomically rewrites one small snapshot
file, ``quotaguard_topk_<pid>.json`` in the same directory (at most K rows per view), and
the scrape merges the snapshots of live processes: per series the most recent value
wins, then the top K are taken again.

Call `mark_process_dead` from gunicorn's ``child_exit`` hook: it removes the process's
live-gauge files and its snapshot.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from prometheus_client import Counter, Gauge
from prometheus_client import multiprocess as _pm
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from quotaguard._version import __version__
from quotaguard.metrics.aggregator import Aggregator
from quotaguard.metrics.buckets import Buckets
from quotaguard.metrics.cells import histogram_cells
from quotaguard.metrics.families import HELP, spike_family, utilization_family

__all__ = [
    "MultiprocessCollector",
    "MultiprocessSink",
    "SnapshotWriter",
    "mark_process_dead",
    "multiprocess_dir",
    "read_snapshots",
]

_PREFIX = "quotaguard_topk_"


def multiprocess_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """The multiprocess directory: ``path``, else ``PROMETHEUS_MULTIPROC_DIR``."""
    value = path if path is not None else os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not value:
        raise ValueError("multiprocess mode needs PROMETHEUS_MULTIPROC_DIR (or a path)")
    return Path(value)


class MultiprocessSink:
    """Adds the aggregator's totals to prometheus_client's shared files, as differences.

    Remembers what it has written, so each flush writes only what was counted since.
    """

    def __init__(self) -> None:
        def counter(name: str, labels: list[str]) -> Counter:
            return Counter(name, HELP[name], labels, registry=None)

        self._decisions = counter("quotaguard_decisions", ["plan", "limit", "decision"])
        self._units = counter("quotaguard_units_consumed", ["plan", "limit"])
        self._refunds = counter("quotaguard_units_refunded", ["plan", "limit"])
        self._unattributed = Counter(
            "quotaguard_settlements_unattributed",
            HELP["quotaguard_settlements_unattributed"],
            registry=None,
        )
        self._errors = counter("quotaguard_backend_errors", ["backend", "reason"])
        self._near_limit = Gauge(
            "quotaguard_near_limit_customers",
            HELP["quotaguard_near_limit_customers"],
            ["plan", "limit", "threshold"],
            registry=None,
            multiprocess_mode="livemax",
        )
        build = Gauge(
            "quotaguard_build_info",
            HELP["quotaguard_build_info"],
            ["version"],
            registry=None,
            multiprocess_mode="max",
        )
        build.labels(__version__).set(1)
        self._written: dict[tuple[Any, ...], float] = {}
        self._cells: dict[tuple[str, tuple[str, ...]], list[Callable[[float], None]]] = {}

    def forget(self, aggregator: Aggregator) -> None:
        """Take everything counted so far as written (a forked child: the parent writes it)."""
        self._written = dict(self._totals(aggregator))

    def push(self, aggregator: Aggregator) -> None:
        """Write what was counted since the last push (call ``aggregator.settle`` first)."""
        written = self._written
        for key, total in self._totals(aggregator):
            delta = total - written.get(key, 0)
            if delta:
                written[key] = total
                self._write(key, delta)

    def set_near_limit(self, rows: Iterable[tuple[str, str, str, int]]) -> None:
        """Publish this process's near-limit counts."""
        for plan, limit, threshold, count in rows:
            self._near_limit.labels(plan, limit, threshold).set(count)

    @staticmethod
    def _totals(aggregator: Aggregator) -> Iterable[tuple[tuple[Any, ...], float]]:
        key: tuple[str, ...]
        for key, n in aggregator.decisions.items():
            yield ("decisions", key), n
        for key, units in aggregator.units.items():
            yield ("units", key), units
        for key, units in aggregator.refunds.items():
            yield ("refunds", key), units
        yield ("unattributed", ()), aggregator.unattributed
        for key, n in aggregator.errors.items():
            yield ("errors", key), n
        hists: list[tuple[str, tuple[str, ...], Buckets]] = [
            ("quotaguard_utilization_ratio", key, hist)
            for key, hist in aggregator.utilization.items()
        ]
        hists.extend(
            ("quotaguard_backend_latency_seconds", (backend,), hist)
            for backend, hist in aggregator.latency.items()
        )
        for name, labels, hist in hists:
            for i, count in enumerate(hist.counts):
                yield ("bucket", name, labels, hist.bounds, i), count
            yield ("sum", name, labels, hist.bounds), hist.total

    def _write(self, key: tuple[Any, ...], delta: float) -> None:
        kind = key[0]
        if kind == "decisions":
            self._decisions.labels(*key[1]).inc(delta)
        elif kind == "units":
            self._units.labels(*key[1]).inc(delta)
        elif kind == "refunds":
            self._refunds.labels(*key[1]).inc(delta)
        elif kind == "unattributed":
            self._unattributed.inc(delta)
        elif kind == "errors":
            self._errors.labels(*key[1]).inc(delta)
        else:
            name, labels, bounds = key[1], key[2], key[3]
            cells = self._cells.get((name, labels))
            if cells is None:
                names = (
                    ["backend"]
                    if name == "quotaguard_backend_latency_seconds"
                    else [
                        "plan",
                        "limit",
                    ]
                )
                cells = self._cells[(name, labels)] = histogram_cells(
                    name, HELP[name], names, list(labels), bounds
                )
            cells[key[4] if kind == "bucket" else -1](delta)


class SnapshotWriter:
    """Publishes this process's top-K views to its snapshot file."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.directory = multiprocess_dir(path)
        """The multiprocess directory."""

    def write(
        self,
        utilization: list[tuple[str, str, str, float]],
        spikes: list[tuple[str, str, float]],
        now: float,
    ) -> None:
        """Atomically replace this process's snapshot."""
        pid = os.getpid()
        target = self.directory / f"{_PREFIX}{pid}.json"
        temporary = self.directory / f".{_PREFIX}{pid}.tmp"
        body = {"pid": pid, "at": now, "utilization": utilization, "spikes": spikes}
        temporary.write_text(json.dumps(body), encoding="utf-8")
        os.replace(temporary, target)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - alive, another user's
        return True
    return True


def read_snapshots(
    directory: Path, top_k: int
) -> tuple[list[tuple[str, str, str, float]], list[tuple[str, str, float]]]:
    """Merge the live processes' snapshots: most recent value per series, then top K."""
    utilization: dict[tuple[str, str, str], tuple[float, float]] = {}
    spikes: dict[tuple[str, str], tuple[float, float]] = {}
    for file in directory.glob(f"{_PREFIX}*.json"):
        try:
            body: dict[str, Any] = json.loads(file.read_text(encoding="utf-8"))
            pid = int(body["pid"])
            at = float(body["at"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if not _alive(pid):
            continue
        for customer, plan, limit, value in body.get("utilization", ()):
            key = (str(customer), str(plan), str(limit))
            if key not in utilization or utilization[key][0] < at:
                utilization[key] = (at, float(value))
        for customer, plan, ratio in body.get("spikes", ()):
            key2 = (str(customer), str(plan))
            if key2 not in spikes or spikes[key2][0] < at:
                spikes[key2] = (at, float(ratio))
    by_limit: dict[tuple[str, str], list[tuple[str, str, str, float]]] = {}
    for (customer, plan, limit), (_, value) in utilization.items():
        by_limit.setdefault((plan, limit), []).append((customer, plan, limit, value))
    top_util = [
        row for rows in by_limit.values() for row in heapq.nlargest(top_k, rows, key=lambda r: r[3])
    ]
    by_plan: dict[str, list[tuple[str, str, float]]] = {}
    for (customer, plan), (_, ratio) in spikes.items():
        by_plan.setdefault(plan, []).append((customer, plan, ratio))
    top_spikes = [
        row for rows in by_plan.values() for row in heapq.nlargest(top_k, rows, key=lambda r: r[2])
    ]
    return top_util, top_spikes


class MultiprocessCollector(Collector):
    """The scrape side of multiprocess mode.

    ``publish``: flushes the scraping process's own counts and snapshot first.
    ``spikes``: whether the spike view is exposed. Yields prometheus_client's merged
    metrics of every process and the merged top-K views.
    """

    def __init__(
        self,
        publish: Callable[[], None],
        top_k: int,
        spikes: bool,
        path: str | os.PathLike[str] | None = None,
    ) -> None:
        self._publish = publish
        self._top_k = top_k
        self._spikes = spikes
        self._directory = multiprocess_dir(path)

    def collect(self) -> Iterable[Metric]:
        """Every process's metrics, merged."""
        self._publish()
        collector = _pm.MultiProcessCollector(None, str(self._directory))  # type: ignore[no-untyped-call]
        merged: list[Metric] = list(collector.collect())  # type: ignore[no-untyped-call]
        utilization, spikes = read_snapshots(self._directory, self._top_k)
        merged.append(utilization_family(utilization))
        if self._spikes:
            merged.append(spike_family(spikes))
        return merged

    def describe(self) -> Iterable[Metric]:
        """Nothing: the metric names are known only at scrape time."""
        return []


def mark_process_dead(pid: int, path: str | os.PathLike[str] | None = None) -> None:
    """Forget a dead worker: prometheus_client's live gauges and quotaguard's snapshot.

    Call it from gunicorn's ``child_exit(server, worker)`` hook with ``worker.pid``.
    """
    directory = multiprocess_dir(path)
    _pm.mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]
    with contextlib.suppress(FileNotFoundError):
        (directory / f"{_PREFIX}{pid}.json").unlink()
