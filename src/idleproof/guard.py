"""The pool's guard: keeps dead connections away from requests, and cleans up after them.

On every checkout, cheapest check first:

1. a connection that crossed a fork is dropped without touching the parent's socket;
2. a connection of a generation the network killed (below) is replaced without a ping;
3. a socket the server closed (``wait_timeout``, ``KILL``, restart: ``closed_by_server``),
   or whose peer the kernel gave up on (keepalive after ``DB_NET_TIMEOUT``: ``network``),
   is seen by a zero-timeout ``poll()``, no round trip;
4. only a connection idle longer than ``ping_after_idle`` pays for a ping, bounded by
   ``ping_timeout``. Busy connections are never pinged: the guard is free under load.

(Older than ``pool_recycle`` never gets here: SQLAlchemy's recycle replaced it by age.)

When a connection dies under a statement, SQLAlchemy hands the error to :meth:`on_error`,
which says why (:func:`idleproof.connection.death_cause`). A death the network caused, or a
failover, condemns the worker's other connections of that generation: they are replaced on
their next checkout instead of each costing a timeout. And the server may still hold the
lost connection's thread, its transaction and row locks, until it notices: the next new
connection ends that thread (``KILL``), so a retried write is not blocked for
``innodb_lock_wait_timeout``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Any

import pymysql
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DisconnectionError

from idleproof import connection as dbapi
from idleproof.connection import KitConnection, idle_socket_fault, socket_timeouts
from idleproof.settings import Settings

log = logging.getLogger(__name__)

# Why a pooled connection was thrown away before a request could use it.
CAUSE_FORK = "inherited_across_fork"
CAUSE_CLOSED = dbapi.CLOSED
CAUSE_NETWORK = dbapi.NETWORK
CAUSE_PING = "ping_failed"
CAUSE_GENERATION = "pool_invalidated"
CAUSES = (CAUSE_FORK, CAUSE_CLOSED, CAUSE_NETWORK, CAUSE_PING, CAUSE_GENERATION)
# Why a connection died under a statement.
LOST_CAUSES = (dbapi.CLOSED, dbapi.NETWORK, dbapi.QUERY_TIMEOUT, dbapi.FAILOVER)
# Deaths after which the server may still hold the thread (it saw no FIN or reset).
_ZOMBIE_CAUSES = {dbapi.NETWORK, dbapi.QUERY_TIMEOUT, CAUSE_PING}
# Deaths that say the worker's other connections of the same age are dead too.
_GENERATION_CAUSES = {dbapi.NETWORK, dbapi.FAILOVER, CAUSE_PING}


class Observer:
    """What the guard and the session report; :mod:`idleproof.metrics` counts it. No-ops
    here."""

    def replaced(self, cause: str) -> None:
        """A pooled connection was found dead on checkout and replaced."""

    def lost(self, cause: str) -> None:
        """A connection died under a statement."""

    def pinged(self) -> None:
        """A connection idle past ping_after_idle was pinged."""

    def zombie_ended(self) -> None:
        """The server thread of a lost connection was ended (KILL)."""

    def retried(self, cause: str) -> None:
        """A request was run again on a fresh connection."""

    def connected(self) -> None:
        """A new database connection was opened."""

    def checked_out(self) -> None:
        """The pool handed a usable connection to a request."""

    def waited(self, seconds: float) -> None:
        """How long one request waited for a usable connection."""


class ConnectionGuard:
    """Pool event handlers that keep dead connections away from requests."""

    def __init__(self, settings: Settings, observer: Observer | None = None):
        self.settings = settings
        self.observer = observer if observer is not None else Observer()
        self.pings = 0
        # Connections made before this moment (time.monotonic) are condemned.
        self.condemned_before = 0.0
        # (server thread id, our "ip:port") of lost connections the server may still hold.
        self.zombies: list[tuple[int, str]] = []

    def attach(self, engine: Engine) -> None:
        self.engine = engine
        event.listen(engine, "connect", self.on_connect)
        event.listen(engine, "checkin", self.on_checkin)
        event.listen(engine, "checkout", self.on_checkout)
        event.listen(engine, "handle_error", self.on_error)

    def on_connect(self, dbapi_connection: Any, record: Any) -> None:
        # The handshake ran under connect_timeout; queries get their own, longer bounds.
        dbapi_connection._read_timeout = self.settings.read_timeout
        dbapi_connection._write_timeout = self.settings.write_timeout
        record.info["pid"] = os.getpid()
        record.info["connected_at"] = record.info["idle_since"] = time.monotonic()
        self.observer.connected()
        if self.zombies:
            self.end_zombies(dbapi_connection)

    def on_checkin(self, dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    def on_checkout(self, dbapi_connection: Any, record: Any, proxy: Any) -> None:
        if record.info.get("pid") != os.getpid():
            # The parent process owns this socket: forget it rather than close it, or
            # the parent's next query would read our COM_QUIT ("Command Out of Sync").
            record.dbapi_connection = proxy.dbapi_connection = None
            self._replace(CAUSE_FORK)
        if record.info["connected_at"] < self.condemned_before:
            self._replace(CAUSE_GENERATION)
        fault = idle_socket_fault(dbapi_connection)
        if fault is not None:
            self.died(dbapi_connection, fault)
            self._replace(fault)
        idle = time.monotonic() - record.info["idle_since"]
        if idle >= self.settings.ping_after_idle:
            self.pings += 1
            self.observer.pinged()
            try:
                with socket_timeouts(dbapi_connection, self.settings.ping_timeout):
                    dbapi_connection.ping(reconnect=False)
            except Exception as exc:
                self.died(dbapi_connection, CAUSE_PING)
                self._replace(CAUSE_PING, str(exc))
        self.observer.checked_out()

    def on_error(self, context: Any) -> None:
        """``handle_error``: a statement failed; if its connection is dead, say why."""
        cause = dbapi.death_cause(context.original_exception, context.is_disconnect)
        if cause is None or context.connection is None:
            return
        # Failover errors are not disconnects to SQLAlchemy: make it drop the connection.
        # The generation is ours to condemn (died()), not the whole pool's on every death.
        context.is_disconnect = True
        context.invalidate_pool_on_disconnect = False
        self.observer.lost(cause)
        log.info("connection lost under a statement: %s", cause)
        fairy = context.connection.connection
        self.died(getattr(fairy, "dbapi_connection", None), cause)

    def died(self, dbapi_connection: Any, cause: str) -> None:
        """Remember what a dead connection leaves behind."""
        if cause in _GENERATION_CAUSES:
            self.condemned_before = time.monotonic()
        if cause in _ZOMBIE_CAUSES and isinstance(dbapi_connection, KitConnection):
            address = dbapi_connection.client_address
            if address:  # over TCP: a unix socket's server end closes with ours
                self.zombies.append((dbapi_connection.server_thread_id[0], address))

    def end_zombies(self, dbapi_connection: Any) -> None:
        """End the server threads of lost connections, from a new connection.

        Only a thread that is still ours: the same id *and* the client address our lost
        socket had (thread ids restart after a server restart).
        """
        zombies, self.zombies = self.zombies, []
        with (
            socket_timeouts(dbapi_connection, self.settings.ping_timeout),
            contextlib.suppress(pymysql.err.MySQLError, OSError),
            dbapi_connection.cursor() as cur,
        ):
            for thread_id, address in zombies:
                cur.execute(
                    "SELECT 1 FROM information_schema.PROCESSLIST WHERE ID = %s AND HOST = %s",
                    (thread_id, address),
                )
                if cur.fetchone():
                    with contextlib.suppress(pymysql.err.OperationalError):  # ended meanwhile
                        cur.execute(f"KILL CONNECTION {int(thread_id)}")
                        self.observer.zombie_ended()
                        log.info("ended server thread %s of a lost connection", thread_id)
            # Outside autocommit (an application's own engine) the SELECT opened a
            # transaction: end it before the connection is handed out.
            dbapi_connection.rollback()

    def _replace(self, cause: str, detail: str = "") -> None:
        self.observer.replaced(cause)
        log.info("replacing pooled connection: %s %s", cause, detail)
        raise DisconnectionError(f"{cause} {detail}".strip())
