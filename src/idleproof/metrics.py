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

Cost on the hot path: one counter increment per checkout (a lock and an mmap write), no
database round trip.
"""

from __future__ import annotations

import os

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
CHECKOUT_WAIT = Histogram(
    "idleproof_db_checkout_wait_seconds",
    "Time from asking the pool for a connection to holding a usable one (waiting for a "
    "free one, replacing a dead one, a ping).",
    buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2, 5),
)

# Every cause is listed from the start with 0, so a rate() query never sees a gap.
for _cause in CAUSES:
    REPLACED.labels(_cause)
for _cause in LOST_CAUSES:
    LOST.labels(_cause)


class PrometheusObserver(Observer):
    """The engine's reports, as Prometheus samples."""

    def replaced(self, cause: str) -> None:
        REPLACED.labels(cause).inc()

    def lost(self, cause: str) -> None:
        LOST.labels(cause).inc()

    def pinged(self) -> None:
        PINGS.inc()

    def connected(self) -> None:
        CONNECTS.inc()

    def checked_out(self) -> None:
        CHECKOUTS.inc()

    def zombie_ended(self) -> None:
        ZOMBIES.inc()

    def retried(self, cause: str) -> None:
        RETRIES.labels(cause).inc()

    def pool_changed(self, checked_out: int, open_connections: int, overflow: int) -> None:
        CHECKED_OUT.set(checked_out)
        POOL_SIZE.set(open_connections)
        OVERFLOW.set(overflow)

    def waited(self, seconds: float) -> None:
        CHECKOUT_WAIT.observe(seconds)


def count_unavailable(exc: BaseException) -> None:
    UNAVAILABLE.labels(type(exc).__name__).inc()


def _registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=MULTIPROC_DIR)  # type: ignore[no-untyped-call]
    return registry


def serve(address: str, port: int) -> None:
    """Serve the sum over every worker on ``http://address:port/metrics`` from a thread of
    this process (Gunicorn's master: ``IDLEPROOF_METRICS_PORT``)."""
    start_http_server(port, addr=address, registry=_registry() if MULTIPROC_DIR else REGISTRY)


def render() -> tuple[bytes, str]:
    """The body and content type of ``/metrics``; never touches the database."""
    if MULTIPROC_DIR:
        return generate_latest(_registry()), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
