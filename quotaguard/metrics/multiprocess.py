"""prometheus_client multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``).

Counters, histograms and the near-limit and build-info gauges go through
prometheus_client's own mmap files (see `MULTIPROCESS_MODES` for each gauge's mode). The
top-K gauges cannot: those files never forget a label set, so per-customer series would
grow without bound. Instead each process atomically rewrites one small snapshot file,
``quotaguard_topk_<pid>.json`` in the same directory (at most K rows per view), and the
scrape merges the snapshots of live processes: per series the most recent value wins,
then the top K are taken again.

Call `mark_process_dead` from gunicorn's ``child_exit`` hook: it removes the process's
live-gauge files and its snapshot.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import multiprocess as _pm
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from quotaguard.metrics.exporter import spike_family, utilization_family

if TYPE_CHECKING:
    from quotaguard.metrics.exporter import PrometheusExporter

__all__ = ["MultiprocessCollector", "SnapshotWriter", "mark_process_dead", "multiprocess_dir"]

_PREFIX = "quotaguard_topk_"


def multiprocess_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """The multiprocess directory: ``path``, else ``PROMETHEUS_MULTIPROC_DIR``."""
    value = path if path is not None else os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not value:
        raise ValueError("multiprocess mode needs PROMETHEUS_MULTIPROC_DIR (or a path)")
    return Path(value)


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
    """The scrape side of multiprocess mode for one exporter.

    Flushes the scraping process's own buffer and snapshot, then yields prometheus_client's
    merged metrics of every process and the merged top-K views.
    """

    def __init__(
        self, exporter: PrometheusExporter, path: str | os.PathLike[str] | None = None
    ) -> None:
        self._exporter = exporter
        self._directory = multiprocess_dir(path)

    def collect(self) -> Iterable[Metric]:
        """Every process's metrics, merged."""
        exporter = self._exporter
        exporter.publish()
        collector = _pm.MultiProcessCollector(None, str(self._directory))  # type: ignore[no-untyped-call]
        merged: list[Metric] = list(collector.collect())  # type: ignore[no-untyped-call]
        utilization, spikes = read_snapshots(self._directory, exporter.config.top_k)
        merged.append(utilization_family(utilization))
        if exporter.spikes is not None:
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
