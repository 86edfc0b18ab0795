"""Pool metrics on ``/metrics`` (Prometheus text format), summed over Gunicorn's workers.

An operator paged after a quiet night asks "how often did the kit save a request?":
``idleproof_db_connections_replaced_total{cause}`` answers it, beside checkouts, pings
and the 503s served while the database was unavailable.

Every Gunicorn worker is its own process with its own counters, and any one of them
answers a scrape. So with ``PROMETHEUS_MULTIPROC_DIR`` set, prometheus_client's
multiprocess mode is used: each worker writes its counts to files in that directory and
``/metrics`` sums all of them, dead workers' included (counters never go back).
``idleproof.gunicorn_conf`` sets a directory private to each Gunicorn master when the variable
is unset. Without it at all (``flask run``, one process) the counts are this process's own.

Cost on the hot path: a few additions to plain numbers per request, no file write and no
database round trip. A thread of each process adds them to the shared files once a
second (:data:`FLUSH_INTERVAL`) and sets the pool gauges from what its pools hold then;
``/metrics`` flushes the answering process first, so the others are at most a second
behind.
"""

from __future__ import annotations

import bisect
import os
import threading
import time
from typing import Any

from sqlalchemy.pool import QueuePool

from idleproof.guard import CAUSES, LOST_CAUSES, Observer

MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
if MULTIPROC_DIR:
    # prometheus_client picks its storage when imported and opens files in the directory
    # as soon as a counter exists: the directory must exist before the import below.
    os.makedirs(MULTIPROC_DIR, mode=0o700, exist_ok=True)

from prometheus_client import (  # noqa: E402 - must follow the directory check above
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)

CHECKOUTS = Counter(
    "idleproof_db_checkouts",
    "Connections the pool handed to a request (after replacing any dead one).",
)
REPLACED = Counter(
    "idleproof_db_connections_replaced",
    "Pooled connections found dead and replaced before a request could use them, by cause "
    "(closed_by_server: wait_timeout, KILL or restart; ping_failed: a vanished or stalled "
    "peer; inherited_across_fork). Age-based pool_recycle is not counted here.",
    ["cause"],
)
CONNECTS = Counter(
    "idleproof_db_connects",
    "New database connections opened: replacements, pool_recycle by age and pool growth.",
)
PINGS = Counter(
    "idleproof_db_pings",
    "Pings sent on checkout to connections idle longer than DB_PING_AFTER_IDLE.",
)
UNAVAILABLE = Counter(
    "idleproof_http_503_responses",
    "503 responses served because the database was unreachable or the pool exhausted, "
    "by the exception that caused them.",
    ["error"],
)

LOST = Counter(
    "idleproof_db_connections_lost",
    "Connections that died under a statement, by cause (closed_by_server; network: the "
    "kernel declared the peer dead after DB_NET_TIMEOUT; query_timeout: DB_READ_TIMEOUT or "
    "DB_WRITE_TIMEOUT ran out; failover: the server turned read-only or shut down).",
    ["cause"],
)
RETRIES = Counter(
    "idleproof_db_request_retries",
    "Requests run a second time on a fresh connection because theirs died before anything "
    "was committed, by cause.",
    ["cause"],
)
ZOMBIES = Counter(
    "idleproof_db_zombie_threads_ended",
    "Server threads of lost connections ended with KILL (they held a transaction and its "
    "row locks until the server noticed).",
)
# Gauges: each worker reports its own pool; livesum adds up the live workers.
CHECKED_OUT = Gauge(
    "idleproof_db_connections_checked_out",
    "Connections handed to requests right now.",
    multiprocess_mode="livesum",
)
POOL_SIZE = Gauge(
    "idleproof_db_pool_connections",
    "Connections open in the pools (handed out or idle).",
    multiprocess_mode="livesum",
)
OVERFLOW = Gauge(
    "idleproof_db_pool_overflow_in_use",
    "Connections open beyond DB_POOL_SIZE (DB_MAX_OVERFLOW's share).",
    multiprocess_mode="livesum",
)
WAIT_BUCKETS = (0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2, 5)
CHECKOUT_WAIT = Histogram(
    "idleproof_db_checkout_wait_seconds",
    "Time from asking the pool for a connection to holding a usable one (waiting for a "
    "free one, replacing a dead one, a ping).",
    buckets=WAIT_BUCKETS,
)

# Every cause is listed from the start with 0, so a rate() query never sees a gap.
for _cause in CAUSES:
    REPLACED.labels(_cause)
for _cause in LOST_CAUSES:
    LOST.labels(_cause)

# How often each process adds what it counted to the shared files, and reads its pools.
FLUSH_INTERVAL = 1.0


class _Pending:
    """What this process counted since its last flush: plain numbers, so that the request
    path never touches prometheus_client (a lock and an mmap write per sample)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pid = os.getpid()
        self.thread: threading.Thread | None = None
        self.counters: dict[tuple[Any, ...], float] = {}
        self.waits = [0] * (len(WAIT_BUCKETS) + 1)
        self.wait_sum = 0.0

    def add(self, key: tuple[Any, ...], amount: float = 1) -> None:
        if self.thread is None:
            self._start()
        with self.lock:
            self.counters[key] = self.counters.get(key, 0) + amount

    def wait(self, seconds: float) -> None:
        if self.thread is None:
            self._start()
        with self.lock:
            self.waits[bisect.bisect_left(WAIT_BUCKETS, seconds)] += 1
            self.wait_sum += seconds

    def _start(self) -> None:
        with _FORK_LOCK:
            if self.thread is None:
                self.thread = threading.Thread(
                    target=self._loop, name="idleproof-metrics", daemon=True
                )
                self.thread.start()

    def _loop(self) -> None:
        while True:
            time.sleep(FLUSH_INTERVAL)
            if self.pid != os.getpid():
                return
            flush()

    def take(self) -> tuple[dict[tuple[Any, ...], float], list[int], float]:
        with self.lock:
            taken = self.counters, self.waits, self.wait_sum
            self.counters, self.waits, self.wait_sum = {}, [0] * len(self.waits), 0.0
        return taken


def _in_child() -> None:
    """A new process (a Gunicorn worker) starts from zero, with a flusher of its own: what
    the parent counted is the parent's to flush."""
    global _PENDING
    _PENDING = _Pending()
    _FORK_LOCK.release()


# Held while a flush writes prometheus_client's files, and across a fork: a child must not
# inherit prometheus_client's own lock taken by a flush half done.
_FORK_LOCK = threading.RLock()
_PENDING = _Pending()
os.register_at_fork(
    before=_FORK_LOCK.acquire, after_in_parent=_FORK_LOCK.release, after_in_child=_in_child
)


def flush() -> None:
    """Add this process's counts to the shared counters, and set its pool gauges from what
    its pools hold right now."""
    from idleproof.engine import protected_engines  # the engines import metrics' observer

    with _FORK_LOCK:
        counters, waits, wait_sum = _PENDING.take()
        for (metric, *labels), amount in counters.items():
            (metric.labels(*labels) if labels else metric).inc(amount)
        if any(waits):
            # prometheus_client has no call to add n samples to a bucket: its own parts.
            for bucket, count in zip(CHECKOUT_WAIT._buckets, waits, strict=True):
                if count:
                    bucket.inc(count)
            CHECKOUT_WAIT._sum.inc(wait_sum)
        out = held = overflow = 0
        for engine in protected_engines():
            pool = engine.pool
            if isinstance(pool, QueuePool):
                out += pool.checkedout()
                held += pool.checkedout() + pool.checkedin()
                overflow += max(0, pool.overflow())
        CHECKED_OUT.set(out)
        POOL_SIZE.set(held)
        OVERFLOW.set(overflow)


class PrometheusObserver(Observer):
    """The engine's reports, counted for Prometheus: a few plain additions per request on
    the hot path; each process's counts reach the shared files within FLUSH_INTERVAL."""

    def replaced(self, cause: str) -> None:
        _PENDING.add((REPLACED, cause))

    def lost(self, cause: str) -> None:
        _PENDING.add((LOST, cause))

    def pinged(self) -> None:
        _PENDING.add((PINGS,))

    def connected(self) -> None:
        _PENDING.add((CONNECTS,))

    def checked_out(self) -> None:
        _PENDING.add((CHECKOUTS,))

    def zombie_ended(self) -> None:
        _PENDING.add((ZOMBIES,))

    def retried(self, cause: str) -> None:
        _PENDING.add((RETRIES, cause))

    def waited(self, seconds: float) -> None:
        _PENDING.wait(seconds)


def count_unavailable(exc: BaseException) -> None:
    _PENDING.add((UNAVAILABLE, type(exc).__name__))


def _registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=MULTIPROC_DIR)  # type: ignore[no-untyped-call]
    return registry


def serve(address: str, port: int) -> None:
    """Serve the sum over every worker on ``http://address:port/metrics`` from a thread of
    this process (Gunicorn's master: ``IDLEPROOF_METRICS_PORT``)."""
    start_http_server(port, addr=address, registry=_registry() if MULTIPROC_DIR else REGISTRY)


def render() -> tuple[bytes, str]:
    """The body and content type of ``/metrics``; never touches the database. This process's
    own counts are flushed first; other workers' are at most FLUSH_INTERVAL behind."""
    flush()
    if MULTIPROC_DIR:
        return generate_latest(_registry()), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
