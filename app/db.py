"""The engine and session lifecycle: the one module that owns database connections.

What it guarantees, and why each piece is here:

* fork safety: Gunicorn's ``post_fork`` calls :meth:`Database.dispose_after_fork`, and a
  connection that still crosses a fork is dropped without touching the parent's socket;
* stale-connection detection on checkout, cheapest check first: a connection older than
  ``pool_recycle`` is replaced outright (SQLAlchemy's own recycle); a socket the server
  closed (``wait_timeout``, ``KILL``, restart) is seen by a zero-timeout ``poll()`` with
  no round trip; only a connection idle longer than ``ping_after_idle`` pays for a ping,
  and that ping gives up after ``ping_timeout`` so a vanished or stalled peer costs about
  a second, not TCP's 15 minutes. Busy connections are never pinged, so the guard is free
  under load;
* bounded waits: the TCP connect and the handshake are bounded by ``connect_timeout``,
  queries by ``read_timeout``/``write_timeout``, so no request outlives Gunicorn's timeout;
* the session is removed after every request, and rolled back first on error, so one
  failed request never leaves a ``PendingRollbackError`` for the next.
"""

from __future__ import annotations

import logging
import os
import select
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import sqlalchemy
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DisconnectionError, SQLAlchemyError
from sqlalchemy.orm import Session, scoped_session, sessionmaker

from app.connection import KitConnection, begin_before_writes
from app.settings import Settings

if TYPE_CHECKING:
    from flask import Flask

log = logging.getLogger(__name__)

# Why a pooled connection was thrown away before a request could use it.
CAUSE_FORK = "inherited_across_fork"
CAUSE_CLOSED = "closed_by_server"
CAUSE_PING = "ping_failed"
CAUSES = (CAUSE_FORK, CAUSE_CLOSED, CAUSE_PING)

_POLL_EVENTS = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP


def socket_is_quiet(dbapi_connection: Any) -> bool:
    """True when nothing is waiting on an idle connection's socket.

    Between requests the server has nothing to say; readable data, EOF or an error means it
    closed the connection (MariaDB sends a FIN, MySQL 8 first sends error 4031). A
    zero-timeout poll sees that locally, without a round trip, for plain and TLS sockets.
    """
    sock = getattr(dbapi_connection, "_sock", None)
    if sock is None:
        return False
    try:
        poller = select.poll()
        poller.register(sock.fileno(), _POLL_EVENTS)
        return not poller.poll(0)
    except (OSError, ValueError):
        return False


@contextmanager
def socket_timeouts(dbapi_connection: Any, seconds: float) -> Iterator[None]:
    """Temporarily bound PyMySQL's socket reads and writes to ``seconds``."""
    saved = dbapi_connection._read_timeout, dbapi_connection._write_timeout
    dbapi_connection._read_timeout = dbapi_connection._write_timeout = seconds
    try:
        yield
    finally:
        dbapi_connection._read_timeout, dbapi_connection._write_timeout = saved


class ConnectionGuard:
    """Pool event handlers that keep dead connections away from requests."""

    def __init__(
        self,
        settings: Settings,
        on_replace: Callable[[str], None] | None = None,
        on_ping: Callable[[], None] | None = None,
    ):
        self.settings = settings
        self.on_replace = on_replace or (lambda cause: None)
        self.on_ping = on_ping or (lambda: None)
        self.pings = 0

    def attach(self, engine: Engine) -> None:
        event.listen(engine, "connect", self.on_connect)
        event.listen(engine, "checkin", self.on_checkin)
        event.listen(engine, "checkout", self.on_checkout)

    def on_connect(self, dbapi_connection: Any, record: Any) -> None:
        # The handshake ran under connect_timeout; queries get their own, longer bounds.
        dbapi_connection._read_timeout = self.settings.read_timeout
        dbapi_connection._write_timeout = self.settings.write_timeout
        record.info["pid"] = os.getpid()
        record.info["idle_since"] = time.monotonic()

    def on_checkin(self, dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    def on_checkout(self, dbapi_connection: Any, record: Any, proxy: Any) -> None:
        if record.info.get("pid") != os.getpid():
            # The parent process owns this socket: forget it rather than close it, or
            # the parent's next query would read our COM_QUIT ("Command Out of Sync").
            record.dbapi_connection = proxy.dbapi_connection = None
            self._replace(CAUSE_FORK)
        # Idle past pool_recycle never gets here: SQLAlchemy's recycle (by age, which is
        # at least the idle time) already replaced it, without a round trip.
        idle = time.monotonic() - record.info["idle_since"]
        if not socket_is_quiet(dbapi_connection):
            self._replace(CAUSE_CLOSED)
        if idle >= self.settings.ping_after_idle:
            self.pings += 1
            self.on_ping()
            try:
                with socket_timeouts(dbapi_connection, self.settings.ping_timeout):
                    dbapi_connection.ping(reconnect=False)
            except Exception as exc:
                self._replace(CAUSE_PING, str(exc))

    def _replace(self, cause: str, detail: str = "") -> None:
        self.on_replace(cause)
        log.info("replacing pooled connection: %s %s", cause, detail)
        raise DisconnectionError(f"{cause} {detail}".strip())


def create_engine(settings: Settings, guard: ConnectionGuard | None = None) -> Engine:
    engine = sqlalchemy.create_engine(
        settings.database_url,
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_timeout=settings.pool_timeout,
        pool_recycle=settings.pool_recycle,
        # The guard replaces pool_pre_ping: same safety, no round trip on busy connections.
        pool_pre_ping=False,
        connect_args={
            # PyMySQL applies read_timeout to the handshake too; on_connect widens it after.
            "connect_timeout": settings.connect_timeout,
            "read_timeout": settings.connect_timeout,
            "write_timeout": settings.connect_timeout,
            "charset": "utf8mb4",
            # Reads outside transactions, writes in one (app/connection.py).
            "autocommit": True,
        },
    )

    @event.listens_for(engine, "do_connect")
    def connect(dialect: Any, record: Any, cargs: Any, cparams: Any) -> KitConnection:
        return KitConnection(*cargs, **cparams)

    event.listen(engine, "before_cursor_execute", begin_before_writes)
    (guard or ConnectionGuard(settings)).attach(engine)
    return engine


class Database:
    """Owns the engine and the request-scoped session of one Flask app."""

    def __init__(
        self,
        settings: Settings,
        on_replace: Callable[[str], None] | None = None,
        on_ping: Callable[[], None] | None = None,
    ):
        self.settings = settings
        self.guard = ConnectionGuard(settings, on_replace, on_ping)
        self.engine = create_engine(settings, self.guard)
        self.session: scoped_session[Session] = scoped_session(
            sessionmaker(bind=self.engine, expire_on_commit=False)
        )

    def init_app(self, app: Flask) -> None:
        app.extensions["db"] = self
        app.teardown_appcontext(self.remove_session)

    def remove_session(self, exc: BaseException | None = None) -> None:
        """Give the connection back after every request; roll back first on error."""
        try:
            if exc is not None:
                self.session.rollback()
        except SQLAlchemyError:
            log.warning("rollback after a failed request failed; discarding the session")
        finally:
            self.session.remove()

    def dispose_after_fork(self) -> None:
        """Called in each new Gunicorn worker: start with an empty pool of our own.

        ``close=False`` leaves the parent's sockets alone (SQLAlchemy 2's recommended form).
        """
        self.engine.dispose(close=False)

    def start_transaction(self) -> None:
        """Open the request's transaction now, so the reads that follow share one snapshot.

        Without it each read runs in autocommit and sees the latest committed data; the
        first write opens the transaction by itself (app/connection.py).
        """
        self.session.connection().connection.dbapi_connection.begin()  # type: ignore[union-attr]

    @contextmanager
    def quick_connection(self) -> Iterator[sqlalchemy.Connection]:
        """A connection whose queries give up after ``ping_timeout`` (health checks)."""
        with self.engine.connect() as conn:
            dbapi_connection = conn.connection.dbapi_connection
            with socket_timeouts(dbapi_connection, self.settings.ping_timeout):
                yield conn


def get_db(app: Flask) -> Database:
    db: Database = app.extensions["db"]
    return db


def dispose_after_fork(app: Flask) -> None:
    """The ``post_fork`` hook's whole job: give a new worker a pool of its own."""
    get_db(app).dispose_after_fork()
