"""The engine and session lifecycle: the one module that owns database connections.

What it guarantees, and why each piece is here:

* fork safety: Gunicorn's ``post_fork`` calls :meth:`Database.dispose_after_fork`, and a
  connection that still crosses a fork is dropped without touching the parent's socket;
* no dead connection reaches a request: the guard checks each checkout, cheapest check
  first, and busy connections cost nothing (app/guard.py);
* bounded waits: the TCP connect and the handshake by ``connect_timeout``, a dead peer by
  ``net_timeout`` (the kernel's verdict: app/connection.py), queries by
  ``read_timeout``/``write_timeout``, so no request outlives Gunicorn's timeout;
* one round trip per read: autocommit outside writes (app/connection.py);
* a request whose connection died before anything of it was committed runs once more, on a
  fresh connection (:meth:`Database.call_retrying`);
* the session is removed after every request, and rolled back first on error, so one
  failed request never leaves a ``PendingRollbackError`` for the next.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy
from flask import g, has_app_context
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session, scoped_session, sessionmaker
from sqlalchemy.pool import QueuePool

from app import connection as dbapi
from app.connection import (
    CommitOutcomeUnknown,
    KitConnection,
    begin_before_writes,
    socket_timeouts,
    tls_args,
    watch_for_dead_peer,
)
from app.guard import CAUSES, ConnectionGuard, Observer
from app.settings import Settings, SettingsError

if TYPE_CHECKING:
    from flask import Flask

__all__ = ["CAUSES", "CommitOutcomeUnknown", "Database", "Observer", "get_db"]

log = logging.getLogger(__name__)
T = TypeVar("T")

# Deaths worth a second try: the statement never ran to its end on a live server, and the
# retry costs at most a connect. Not QUERY_TIMEOUT: that query already took its full bound.
_RETRIED = {dbapi.CLOSED, dbapi.NETWORK, dbapi.FAILOVER}


class TimedQueuePool(QueuePool):
    """SQLAlchemy's QueuePool, reporting how long each checkout took (the wait for a free
    connection, plus replacing a dead one)."""

    observer: Observer = Observer()

    def connect(self) -> Any:
        started = time.monotonic()
        try:
            return super().connect()
        finally:
            self.observer.waited(time.monotonic() - started)

    def recreate(self) -> QueuePool:
        pool = super().recreate()  # dispose() builds a new pool: keep reporting
        pool.observer = self.observer  # type: ignore[attr-defined]
        return pool


def create_engine(settings: Settings, guard: ConnectionGuard | None = None) -> Engine:
    if settings.tls_ca and not os.access(settings.tls_ca, os.R_OK):
        raise SettingsError(
            f"DB_TLS_CA={settings.tls_ca}: cannot read it: point it at the CA certificate "
            "(PEM) that signed the database server's certificate, readable by the app's user"
        )
    guard = guard or ConnectionGuard(settings)
    engine = sqlalchemy.create_engine(
        settings.database_url,
        poolclass=TimedQueuePool,
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_timeout=settings.pool_timeout,
        # Replaced by age before the path's idle limit, and before a failover is too old.
        pool_recycle=min(settings.pool_recycle, settings.max_connection_age),
        # The guard replaces pool_pre_ping: same safety, no round trip on busy connections.
        pool_pre_ping=False,
        connect_args={
            # PyMySQL applies read_timeout to the handshake too; the guard widens it after.
            "connect_timeout": settings.connect_timeout,
            "read_timeout": settings.connect_timeout,
            "write_timeout": settings.connect_timeout,
            "charset": "utf8mb4",
            # Reads outside transactions, writes in one (app/connection.py).
            "autocommit": True,
            **tls_args(settings.tls_ca),
        },
    )
    engine.pool.observer = guard.observer  # type: ignore[attr-defined]

    @event.listens_for(engine, "do_connect")
    def connect(dialect: Any, record: Any, cargs: Any, cparams: Any) -> KitConnection:
        conn = KitConnection(*cargs, **cparams)
        conn.remember_address()
        watch_for_dead_peer(getattr(conn, "_sock", None), settings.net_timeout)
        return conn

    event.listen(engine, "before_cursor_execute", begin_before_writes)
    guard.attach(engine)
    return engine


class Database:
    """Owns the engine and the request-scoped session of one Flask app."""

    def __init__(self, settings: Settings, observer: Observer | None = None):
        self.settings = settings
        self.observer = observer if observer is not None else Observer()
        self.guard = ConnectionGuard(settings, self.observer)
        self.engine = create_engine(settings, self.guard)
        self.session: scoped_session[Session] = scoped_session(
            sessionmaker(bind=self.engine, expire_on_commit=False)
        )
        event.listen(self.engine, "commit", self._committing)

    def init_app(self, app: Flask) -> None:
        app.extensions["db"] = self
        app.teardown_appcontext(self.remove_session)
        # Every view, the app's and any added later, runs under call_retrying.
        dispatch = app.dispatch_request
        app.dispatch_request = lambda: self.call_retrying(dispatch)  # type: ignore[method-assign]

    def call_retrying(self, view: Callable[[], T]) -> T:
        """Run ``view``; if its connection died before anything of it was committed, run it
        once more on a fresh connection.

        Retried: a view whose connection was closed by the server, lost to the network
        (``DB_NET_TIMEOUT``) or met a failover (read-only, shutting down) before any COMMIT of
        this request was sent. Nothing of the first run reached the database, so nothing is
        duplicated, whatever the HTTP method. Not retried: a COMMIT that was under way
        (:class:`CommitOutcomeUnknown`: it may have committed), a failure after a COMMIT,
        a query that ran into ``DB_READ_TIMEOUT`` (a stall: a second one would double the
        wait), a second death, and any SQL error. A view with side effects outside the
        database (a mail, a call to another service) runs them twice on a retry.
        """
        g.db_committed = False
        try:
            return view()
        except DBAPIError as exc:
            cause = self._retry_cause(exc)
            if cause is None:
                raise
        log.info("retrying the request on a fresh connection: %s", cause)
        self.observer.retried(cause)
        self.remove_session()
        return view()

    def _retry_cause(self, exc: DBAPIError) -> str | None:
        if exc.orig is None or g.get("db_committed") or isinstance(exc.orig, CommitOutcomeUnknown):
            return None
        cause = dbapi.death_cause(exc.orig, exc.connection_invalidated)
        return cause if cause in _RETRIED else None

    def _committing(self, conn: sqlalchemy.Connection) -> None:
        """``commit`` event: from here on the request has (maybe) committed something."""
        if has_app_context():
            g.db_committed = True

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
