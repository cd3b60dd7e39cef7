"""Real redis-server processes for the tests: one standalone server and a 3-node Redis
Cluster, each on free loopback ports, started lazily once per test session and stopped
at exit. Never the shared server on 6379, never anything but 127.0.0.1.

`register_contract_backends` adds the Redis backends (standalone and cluster, sync and
async) to the contract suite. Each factory yields a backend on a fresh key prefix, so
tests are isolated without flushing.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster

from quotaguard.backends.redis import AsyncRedisBackend, ClientSettings, RedisBackend

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"
HOST = "127.0.0.1"
PATIENT = ClientSettings(timeout=10)
"""For the contract suite's backends: a budget no loaded CI machine can exhaust."""


def available() -> bool:
    """Whether redis-server and redis-cli are installed."""
    return os.path.exists(REDIS_SERVER) and os.path.exists(REDIS_CLI)


def free_port() -> int:
    """A free TCP port on loopback (also free for the cluster bus, port + 10000)."""
    while True:
        with socket.socket() as sock:
            sock.bind((HOST, 0))
            port = int(sock.getsockname()[1])
        if port + 10000 < 65536 and port != 6379:
            with socket.socket() as bus:
                try:
                    bus.bind((HOST, port + 10000))
                except OSError:
                    continue
            return port


class RedisServer:
    """One redis-server process on a loopback port, with no persistence by default.

    ``extra`` adds redis-server arguments (e.g. ``["--maxmemory", "2mb"]``).
    """

    def __init__(
        self, port: int | None = None, *, cluster: bool = False, extra: list[str] | None = None
    ) -> None:
        self.port = port or free_port()
        self.cluster = cluster
        self.extra = list(extra or [])
        self.dir = tempfile.mkdtemp(prefix=f"qg-redis-{self.port}-")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        args = [
            REDIS_SERVER,
            "--port", str(self.port),
            "--bind", HOST,
            "--save", "",
            "--appendonly", "no",
            "--dir", self.dir,
            "--protected-mode", "yes",
            "--loglevel", "warning",
        ]  # fmt: skip
        if self.cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
        args += self.extra
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.dir
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with redis.Redis(HOST, self.port, socket_timeout=0.5) as client:
                    client.ping()
                return self
            except redis.ConnectionError:
                time.sleep(0.01)
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def signal(self, number: int) -> None:
        """Send ``number`` (SIGSTOP, SIGCONT, SIGKILL...) to this server's own PID."""
        assert self.process is not None
        os.kill(self.process.pid, number)

    def kill(self) -> None:
        """SIGKILL this server (no shutdown, no save) and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def client(self, **options: Any) -> redis.Redis:
        """A plain client of this one node."""
        return redis.Redis(HOST, self.port, socket_timeout=5, **options)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a stopped server cannot terminate
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"


class RedisClusterServers:
    """Cluster-enabled redis-server processes joined into one cluster: three primaries,
    and ``replicas`` replicas of each; ``extra`` adds redis-server arguments."""

    def __init__(self, replicas: int = 0, extra: list[str] | None = None) -> None:
        self.replicas = replicas
        self.nodes = [RedisServer(cluster=True, extra=extra) for _ in range(3 * (1 + replicas))]

    def start(self) -> RedisClusterServers:
        for node in self.nodes:
            node.start()
        subprocess.run(
            [
                REDIS_CLI,
                "--cluster",
                "create",
                *(f"{HOST}:{node.port}" for node in self.nodes),
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.healthy():
                return self
            time.sleep(0.05)
        raise RuntimeError("redis cluster did not become ready")

    def healthy(self, nodes: list[RedisServer] | None = None) -> bool:
        """Whether every running node (or each of ``nodes``) says cluster_state:ok."""
        for node in nodes or self.nodes:
            if node.process is None:
                continue
            try:
                with redis.Redis(HOST, node.port, socket_timeout=1) as client:
                    info = client.execute_command("CLUSTER", "INFO")
            except redis.RedisError:
                return False
            text = info.decode() if isinstance(info, bytes) else str(info)
            if "cluster_state:ok" not in text:
                return False
        return True

    def node_for(self, key: str) -> RedisServer:
        """The primary that serves ``key``'s slot, as the first running node sees it."""
        running = next(node for node in self.nodes if node.process is not None)
        with running.client() as client:
            slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
            for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    port = int(primary[1])
                    return next(node for node in self.nodes if node.port == port)
        raise LookupError(key)

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"{HOST}:{node.port}" for node in self.nodes)

    @property
    def startup(self) -> list[tuple[str, int]]:
        return [(HOST, node.port) for node in self.nodes]


_lock = threading.Lock()
_standalone: RedisServer | None = None
_cluster: RedisClusterServers | None = None
_prefixes = itertools.count()


def standalone() -> RedisServer:
    """The session's standalone server (started on first use)."""
    global _standalone
    with _lock:
        if _standalone is None:
            _standalone = RedisServer().start()
            atexit.register(_standalone.cleanup)
        return _standalone


def cluster() -> RedisClusterServers:
    """The session's 3-node cluster (started on first use)."""
    global _cluster
    with _lock:
        if _cluster is None:
            _cluster = RedisClusterServers().start()
            atexit.register(_cluster.cleanup)
        return _cluster


def fresh_prefix() -> str:
    """A key prefix no other test in this session uses."""
    return f"t{os.getpid()}x{next(_prefixes)}"


def sync_client(kind: str) -> Any:
    """A new sync client for ``kind`` ("standalone" or "cluster")."""
    if kind == "standalone":
        return redis.Redis(host=HOST, port=standalone().port, socket_timeout=5)
    nodes = [redis.cluster.ClusterNode(h, p) for h, p in cluster().startup]
    return redis.cluster.RedisCluster(startup_nodes=nodes, socket_timeout=5)


def async_client(kind: str) -> Any:
    """A new asyncio client for ``kind`` ("standalone" or "cluster")."""
    if kind == "standalone":
        return redis.asyncio.Redis(host=HOST, port=standalone().port, socket_timeout=5)
    nodes = [redis.asyncio.cluster.ClusterNode(h, p) for h, p in cluster().startup]
    return redis.asyncio.cluster.RedisCluster(startup_nodes=nodes, socket_timeout=5)


def sync_factory(kind: str) -> Callable[[Any], contextlib.AbstractContextManager[Any]]:
    """A contract-suite factory: the test's clock -> a fresh sync Redis backend."""

    @contextlib.contextmanager
    def factory(clock: Any) -> Iterator[RedisBackend]:
        backend = RedisBackend(sync_client(kind), prefix=fresh_prefix(), settings=PATIENT)
        try:
            yield backend
        finally:
            backend.close()

    return factory


def async_factory(kind: str) -> Callable[[Any], contextlib.AbstractContextManager[Any]]:
    """A contract-suite factory: the test's clock -> a fresh asyncio Redis backend.

    The asyncio client binds its connections to the loop that uses them (the test's);
    the backend is closed on that loop when the test ends.
    """

    @contextlib.contextmanager
    def factory(clock: Any) -> Iterator[AsyncRedisBackend]:
        backend = LoopTrackingAsyncBackend(
            async_client(kind), prefix=fresh_prefix(), settings=PATIENT
        )
        try:
            yield backend
        finally:
            backend.close_on_loop()

    return factory


class LoopTrackingAsyncBackend(AsyncRedisBackend):
    """Remembers the event loop it ran on, to close its connections there."""

    loop: asyncio.AbstractEventLoop | None = None

    async def _run(self, operation: Any) -> Any:
        self.loop = asyncio.get_running_loop()
        return await super()._run(operation)

    def close_on_loop(self) -> None:
        loop = self.loop
        if loop is not None and not loop.is_closed() and not loop.is_running():
            loop.run_until_complete(self.close())


def register_contract_backends(
    sync_backends: dict[str, Any], async_backends: dict[str, Any]
) -> None:
    """Add the Redis backends to the contract suite (when redis-server is installed)."""
    if not available():
        return
    for kind, name in (("standalone", "redis"), ("cluster", "redis-cluster")):
        sync_backends[name] = sync_factory(kind)
        async_backends[name] = async_factory(kind)


def run(coroutine: Any) -> Any:
    """Run a coroutine on a new event loop."""
    return asyncio.run(coroutine)
