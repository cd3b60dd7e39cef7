"""Real gunicorn + uvicorn workers, PROMETHEUS_MULTIPROC_DIR and max_requests recycling:
the scraped counters equal the HTTP statuses served, within flush_interval, across exits.
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.redis_support import free_port

pytest.importorskip("gunicorn")
pytest.importorskip("uvicorn")

ROOT = Path(__file__).resolve().parents[2]
FLUSH_INTERVAL = 0.5
CONF = """
from quotaguard.metrics import mark_process_dead

def child_exit(server, worker):
    mark_process_dead(worker.pid)
"""


def get(port: int, path: str) -> tuple[int, int, bytes]:
    """One request on its own connection: (status, worker pid, body).

    A worker shutting down closes the connections it accepted but did not start reading
    (no decision was made for them): those are sent again.
    """
    for _ in range(5):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, int(response.getheader("x-worker-pid", "0")), response.read()
        except (ConnectionResetError, http.client.RemoteDisconnected):
            time.sleep(0.05)
        finally:
            connection.close()
    raise AssertionError(f"{path}: connection reset five times")


def scraped(port: int) -> Counter[str]:
    status, _, body = get(port, "/metrics")
    assert status == 200
    counts: Counter[str] = Counter()
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == "quotaguard_decisions_total":
                counts[sample.labels["decision"]] += int(sample.value)
    return counts


def wait_until_up(port: int, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert server.poll() is None, "gunicorn exited"
        try:
            get(port, "/healthz")
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("gunicorn did not start")


@pytest.mark.slow
def test_counters_equal_statuses_across_worker_recycling(tmp_path: Path) -> None:
    multiproc = tmp_path / "multiproc"
    multiproc.mkdir()
    (tmp_path / "gunicorn_conf.py").write_text(CONF)
    port = free_port()
    log = tmp_path / "gunicorn.log"
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
        "QG_TEST_FLUSH_INTERVAL": str(FLUSH_INTERVAL),
        "PYTHONPATH": str(ROOT),
        "PYTHONWARNINGS": "ignore::DeprecationWarning",
    }
    with log.open("wb") as err:  # the child keeps its own copy of the descriptor
        server = _start(port, tmp_path / "gunicorn_conf.py", env, err)
    try:
        wait_until_up(port, server)
        served: Counter[int] = Counter()
        workers: set[int] = set()
        for round_ in range(2):
            for i in range(36):
                status, pid, _ = get(port, f"/hit/customer-{i % 2}")
                served[status] += 1
                workers.add(pid)
                time.sleep(0.02)  # uvicorn checks max_requests every 0.1 s
            if round_ == 0 and _alive(pid):
                # What gunicorn does to stop a worker gracefully: SIGTERM, here to the worker
                # that has just served (its latest counts are not flushed yet).
                os.kill(pid, signal.SIGTERM)
        assert served[200] and served[429] and set(served) == {200, 429}
        assert len(workers) > 2, ("no worker was recycled", served, workers, _tail(log))
        # No more traffic: the idle worker's timer and the exited workers' exit flushes
        # must bring every count to the scrape within flush_interval (with generous slack
        # for a loaded machine).
        time.sleep(FLUSH_INTERVAL)
        deadline = time.monotonic() + 2 * FLUSH_INTERVAL + 5
        counts = scraped(port)
        while counts != {"allowed": served[200], "denied": served[429]}:
            assert time.monotonic() < deadline, (counts, served, _tail(log))
            time.sleep(0.1)
            counts = scraped(port)
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:  # pragma: no cover - a hung server
            server.kill()
            server.wait(10)


def _start(port: int, conf: Path, env: dict[str, str], err: Any) -> subprocess.Popen[bytes]:
    """gunicorn with two uvicorn workers, recycled every 9 requests (uvicorn's graceful exit,
    as in production)."""
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "--config",
        str(conf),
        "--worker-class",
        "uvicorn.workers.UvicornWorker",
        "--workers",
        "2",
        "--max-requests",
        "9",
        "--no-control-socket",  # gunicorn 23+ would open one in ~/.gunicorn
        "--bind",
        f"127.0.0.1:{port}",
        "tests.metrics.gunicorn_app:app",
    ]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
