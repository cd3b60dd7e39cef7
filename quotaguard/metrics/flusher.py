"""Getting every exporter's counts out: a background timer, a flush at exit, fork safety.

One daemon thread per process serves every live exporter: it wakes when the earliest
exporter's ``flush_interval`` deadline passes and flushes that exporter if it holds
anything not yet handed to prometheus_client. So counts reach the exposition (and, in
multiprocess mode, the shared files) within ``flush_interval`` whether or not more
traffic or a scrape comes.

At interpreter exit (``atexit``: a normal return, ``sys.exit``, uvicorn's graceful exit
after ``max_requests``) every live exporter is flushed.

SIGTERM needs more: uvicorn (alone, or as gunicorn's ``UvicornWorker``) shuts down
gracefully on SIGTERM, then restores the previous handler and raises SIGTERM again; with
the default handler the process dies of it and ``atexit`` never runs. So when an exporter
is created in the main thread while SIGTERM has its default disposition, a handler is
installed that flushes every exporter, then dies of SIGTERM as before
(`flush_on_sigterm`; ``ExporterConfig(flush_on_sigterm=False)`` opts out). A program
whose own SIGTERM handler is in place keeps it; call `flush_on_sigterm` to chain a flush
in front of it (e.g. from gunicorn's ``post_worker_init`` hook with ``--preload``). A
process killed by SIGKILL loses what it counted in its last ``flush_interval``.

``fork`` waits for a background flush under way to finish (so the child never inherits a
prometheus_client lock held half way through a flush); the child starts with fresh locks,
drops what the parent had buffered (the parent publishes it) and gets its own timer
thread when it aggregates its first batch (a fork hook starts no thread).
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
import time
import weakref
from types import FrameType
from typing import Any, Protocol

__all__ = ["Flushable", "ensure_running", "flush_on_sigterm", "register"]

logger = logging.getLogger("quotaguard.metrics")

# The longest the timer sleeps, so that a clock jump or a missed wake-up heals itself.
_MAX_SLEEP = 5.0
# The longest the exit flush waits for an exporter's lock held by another thread.
_EXIT_WAIT = 2.0
# The longest a fork waits for a background flush under way.
_FORK_WAIT = 5.0


class Flushable(Protocol):
    """What the timer needs of an exporter."""

    def flush_due(self) -> float:
        """Flush if the deadline passed; return the next deadline (``time.monotonic``)."""
        ...

    def flush_at_exit(self, wait: float) -> None:
        """Flush everything, waiting at most ``wait`` seconds for the lock."""
        ...

    def after_fork_in_child(self) -> None:
        """Forget the parent's locks and buffered counts."""
        ...


class _Flusher:
    """The process's timer thread over a weak set of exporters."""

    def __init__(self) -> None:
        self._exporters: weakref.WeakSet[Flushable] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        # Held by the timer thread while it flushes, and by a fork while it happens.
        self._busy = threading.Lock()
        self._held_for_fork = False

    def register(self, exporter: Flushable) -> None:
        with self._lock:
            self._exporters.add(exporter)
            self._ensure_thread()
        self._wake.set()  # a new deadline may be earlier than the thread's

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._run, name="quotaguard-metrics-flush", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                exporters = list(self._exporters)
                if not exporters:
                    self._thread = None
                    return
            now = time.monotonic()
            wake = now + _MAX_SLEEP
            for exporter in exporters:
                try:
                    with self._busy:
                        wake = min(wake, exporter.flush_due())
                except Exception:  # pragma: no cover - the timer must survive anything
                    logger.exception("quotaguard metrics: background flush failed")
            del exporters  # no strong reference while asleep: exporters can be collected
            self._wake.wait(max(0.001, wake - time.monotonic()))
            self._wake.clear()

    def flush_all(self) -> None:
        for exporter in list(self._exporters):
            exporter.flush_at_exit(_EXIT_WAIT)

    def before_fork(self) -> None:
        self._held_for_fork = self._busy.acquire(timeout=_FORK_WAIT)

    def after_fork_in_parent(self) -> None:
        if self._held_for_fork:
            self._held_for_fork = False
            self._busy.release()

    def after_fork_in_child(self) -> None:
        self._busy = threading.Lock()
        self._held_for_fork = False
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread = None  # started again by the child's first batch (see `ensure_running`)
        for exporter in list(self._exporters):
            exporter.after_fork_in_child()

    def ensure_running(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._exporters:
                    self._ensure_thread()


_FLUSHER = _Flusher()
atexit.register(_FLUSHER.flush_all)
os.register_at_fork(
    before=_FLUSHER.before_fork,
    after_in_parent=_FLUSHER.after_fork_in_parent,
    after_in_child=_FLUSHER.after_fork_in_child,
)


def ensure_running() -> None:
    """Start the timer thread if this process has none (a forked child)."""
    _FLUSHER.ensure_running()


def register(exporter: Flushable, *, on_sigterm: bool = True) -> None:
    """Flush ``exporter`` in the background every ``flush_interval`` and at exit.

    ``on_sigterm``: also on SIGTERM, if SIGTERM has its default disposition and this is
    the main thread (see the module doc).
    """
    _FLUSHER.register(exporter)
    if on_sigterm and threading.current_thread() is threading.main_thread():
        try:
            default = signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
        except (ValueError, OSError):  # pragma: no cover - no SIGTERM on this platform
            return
        if default:
            flush_on_sigterm()


_previous: dict[int, Any] = {}


def flush_on_sigterm() -> None:
    """Flush every exporter of this process when SIGTERM arrives, then do what was set.

    Chains in front of the SIGTERM handler in place: after the flush, a previous Python
    handler is called; with the default disposition the process dies of SIGTERM as it
    would have; an ignored SIGTERM stays ignored. Call it from the main thread (gunicorn:
    the ``post_worker_init(worker)`` hook). Calling it again changes nothing.
    """
    current = signal.getsignal(signal.SIGTERM)
    if current is _flush_then_continue:
        return
    _previous[signal.SIGTERM] = current
    signal.signal(signal.SIGTERM, _flush_then_continue)


def _flush_then_continue(signum: int, frame: FrameType | None) -> None:
    _FLUSHER.flush_all()
    previous = _previous.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)
    elif previous != signal.SIG_IGN:
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)
