"""prometheus_client multiprocess mode: two worker processes, one scrape."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from quotaguard.metrics import ExporterConfig, PrometheusExporter, mark_process_dead

from .conftest import decision, run_promtool

WORKER = textwrap.dedent(
    """
    import sys
    from quotaguard import Guard, Plan, TokenBucket
    from quotaguard.metrics import PrometheusExporter

    name, count = sys.argv[1], int(sys.argv[2])
    exporter = PrometheusExporter()
    assert exporter.multiprocess
    plan = Plan("pro", [TokenBucket("burst", 100, "1/second")])
    guard = Guard([plan], default_plan="pro", observers=[exporter])
    for _ in range(count):
        guard.acquire(name, 1)
    exporter.publish()
    print("ready", flush=True)
    sys.stdin.readline()  # stay alive (a live worker) until the test has scraped
    """
)


def test_two_processes_aggregate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, promtool: str
) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, name, str(count)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for name, count in (("alice", 30), ("bob", 50))
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None
            assert worker.stdout.readline().strip() == "ready"
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
        scraper = PrometheusExporter(multiprocess=True)
        text = generate_latest(scraper.registry).decode()
    finally:
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.close()
            worker.wait(30)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    allowed = (("decision", "allowed"), ("limit", ""), ("plan", "pro"))
    assert samples[("quotaguard_decisions_total", allowed)] == 80  # 30 + 50, summed
    assert samples[("quotaguard_units_consumed_total", (("limit", "burst"), ("plan", "pro")))] == 80
    top = {
        dict(labels)["customer"]: v
        for (name, labels), v in samples.items()
        if name == "quotaguard_top_customer_utilization_ratio"
    }
    assert top == {"alice": pytest.approx(0.3, abs=0.02), "bob": pytest.approx(0.5, abs=0.02)}
    near = [v for (name, labels), v in samples.items() if name == "quotaguard_near_limit_customers"]
    assert near and all(v == 0 for v in near)
    run_promtool(promtool, "check", "metrics", stdin=text)

    # Dead workers' snapshots no longer count; mark_process_dead removes them.
    for worker in workers:
        mark_process_dead(worker.pid, tmp_path)
    assert not list(tmp_path.glob("quotaguard_topk_*.json")) or all(
        str(worker.pid) not in p.name for p in tmp_path.glob("*.json") for worker in workers
    )
    text = generate_latest(scraper.registry).decode()
    assert "alice" not in text and "bob" not in text
    assert "quotaguard_decisions_total" in text  # counters of dead workers still count


EXITING_WORKER = textwrap.dedent(
    """
    import os, signal, sys, time
    from quotaguard import Guard, Plan, TokenBucket
    from quotaguard.metrics import ExporterConfig, PrometheusExporter

    how, interval = sys.argv[1], float(sys.argv[2])
    exporter = PrometheusExporter(ExporterConfig(flush_interval=interval))
    plan = Plan("pro", [TokenBucket("burst", 5, "1/hour")])
    guard = Guard([plan], default_plan="pro", observers=[exporter])
    for _ in range(7):  # 5 allowed, 2 denied: fewer than a batch, nothing flushed yet
        guard.acquire("ann", 1)
    if how == "exit":
        sys.exit(0)
    if how == "sigterm":
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)  # never reached: the process dies of SIGTERM after the flush
    print("idle", flush=True)
    sys.stdin.readline()
    """
)


def on_disk(directory: Path) -> dict[str, float]:
    """The decisions the multiprocess files hold, read without any exporter's flush."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, str(directory))
    counts: dict[str, float] = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == "quotaguard_decisions_total":
                counts[sample.labels["decision"]] = sample.value
    return counts


@pytest.mark.parametrize("how", ["exit", "sigterm"])
def test_nothing_counted_is_lost_at_exit(tmp_path: Path, how: str) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    worker = subprocess.run(
        [sys.executable, "-c", EXITING_WORKER, how, "3600"], env=env, timeout=60, check=False
    )
    assert worker.returncode == (0 if how == "exit" else -signal.SIGTERM)
    assert on_disk(tmp_path) == {"allowed": 5, "denied": 2}


def test_an_idle_process_publishes_within_flush_interval(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    worker = subprocess.Popen(
        [sys.executable, "-c", EXITING_WORKER, "idle", "0.2"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.stdout is not None
        assert worker.stdout.readline().strip() == "idle"
        started = time.monotonic()
        while on_disk(tmp_path) != {"allowed": 5, "denied": 2}:
            # flush_interval is 0.2 s: 5 s is slack for a loaded machine, not the promise
            assert time.monotonic() - started < 5, on_disk(tmp_path)
            time.sleep(0.05)
        assert worker.poll() is None  # published by the timer, not by an exit
    finally:
        assert worker.stdin is not None
        worker.stdin.close()
        worker.wait(30)


def test_a_forked_child_drops_what_the_parent_buffered() -> None:
    """The parent publishes its own buffer; a child publishing it too would count it twice."""
    # A long flush_interval: the background timer leaves this exporter alone.
    exporter = PrometheusExporter(ExporterConfig(flush_interval=3600), multiprocess=False)
    exporter.on_decision(decision("ann", [1, 1, 1]), "memory", 1e-5)  # buffered, not flushed
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what its own flush publishes, then leave at once
        try:
            exporter.flush()
            counted = exporter.registry.get_sample_value(
                "quotaguard_decisions_total", {"plan": "pro", "limit": "", "decision": "allowed"}
            )
            os.write(write, str(counted or 0.0).encode())
        finally:
            os._exit(0)
    os.close(write)
    deadline = time.monotonic() + 30
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        if time.monotonic() > deadline:  # a hung child must fail the test, not hang the suite
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung")
        time.sleep(0.01)
    with os.fdopen(read) as pipe:
        assert float(pipe.read()) == 0
    exporter.flush()
    assert (
        exporter.registry.get_sample_value(
            "quotaguard_decisions_total", {"plan": "pro", "limit": "", "decision": "allowed"}
        )
        == 1
    )


CELLS = textwrap.dedent(
    """
    from prometheus_client import Histogram
    from quotaguard.metrics.buckets import Buckets
    from quotaguard.metrics.cells import histogram_cells

    bounds = (0.5, 0.8, 1.0)
    observed = [0.1, 0.5, 0.7, 0.9, 1.0, 3.0, 0.6]
    reference = Histogram("ref", "r", ["plan"], buckets=bounds, registry=None)
    for x in observed:
        reference.labels("pro").observe(x)
    hist = Buckets(bounds)
    hist.add(observed[:4])
    hist.add(observed[4:], weight=1)
    cells = histogram_cells("ours", "r", ["plan"], ["pro"], bounds)
    for inc, count in zip(cells, [*hist.counts, hist.total]):
        inc(count)
    """
)


def test_histogram_cells_match_observe(tmp_path: Path) -> None:
    """The one use of prometheus_client below its documented API (see ``cells.py``).

    Bulk bucket counts written through `histogram_cells` must read back, merged by
    prometheus_client's multiprocess collector, exactly as ``Histogram.observe`` would.
    """
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", CELLS], env=env, timeout=60, check=True)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, str(tmp_path))
    families = {family.name: family for family in registry.collect()}
    assert families["ours"].type == "histogram"

    def samples(name: str) -> dict[tuple[str, str], float]:
        return {
            (s.name.removeprefix(name), s.labels.get("le", "")): s.value
            for s in families[name].samples
        }

    ours, ref = samples("ours"), samples("ref")
    assert ours.pop(("_sum", "")) == pytest.approx(ref.pop(("_sum", "")))
    assert ours == ref
    assert ours[("_count", "")] == 7
