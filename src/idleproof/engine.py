"""The engine: SQLAlchemy's, with the kit's protection on it.

:func:`create_engine` builds one from :class:`~idleproof.settings.Settings`; the engine
plugin (:mod:`idleproof.plugin`) puts the same protection on an engine an application
builds itself. Either way :func:`protect` attaches it:

* bounded waits: the TCP connect and the handshake by ``connect_timeout``, a dead peer by
  ``net_timeout`` (the kernel's verdict: :mod:`idleproof.connection`), queries by
  ``read_timeout``/``write_timeout``, so no request outlives Gunicorn's timeout;
* no dead connection reaches a request: the guard checks each checkout, cheapest check
  first, and busy connections cost nothing (:mod:`idleproof.guard`);
* recycling below the path's idle limits and the maximum connection age;
* :func:`create_engine`'s connections run reads in autocommit, one round trip each, and
  open a transaction with the first write (:mod:`idleproof.connection`).

Every protected engine is remembered (weakly) so that Gunicorn's ``post_fork`` hook
(:mod:`idleproof.gunicorn_conf`) can give each new worker empty pools of its own without
knowing the application: :func:`dispose_after_fork`. That registry is the one piece of
module state: the hook has no other way to find engines an application made.
"""

from __future__ import annotations

import os
import time
import weakref
from typing import Any

import pymysql
import sqlalchemy
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.pool import QueuePool

from idleproof import breaker
from idleproof.connection import KitConnection, tls_args, watch_for_dead_peer
from idleproof.guard import ConnectionGuard, Observer
from idleproof.settings import Settings, SettingsError

# Each protected engine and its guard.
_PROTECTED: weakref.WeakKeyDictionary[Engine, ConnectionGuard] = weakref.WeakKeyDictionary()


class TimedQueuePool(QueuePool):
    """SQLAlchemy's QueuePool, failing at once while the database host is unreachable
    (:mod:`idleproof.breaker`), and reporting how long each checkout took (the wait for a
    free connection, plus replacing a dead one)."""

    guard: ConnectionGuard | None = None
    # Where the breaker probes the database host (None: a unix socket).
    probe: tuple[str, int] | None = None

    def connect(self) -> Any:
        breaker.check(self.probe)
        if self.guard is not None and self.guard.condemned_before < breaker.opened_at():
            # Connections older than the outage are not worth a ping: replaced on checkout.
            self.guard.condemned_before = breaker.opened_at()
        started = time.monotonic()
        try:
            return super().connect()
        finally:
            if self.guard is not None:
                self.guard.observer.waited(time.monotonic() - started)

    def recreate(self) -> QueuePool:
        pool = super().recreate()  # dispose() builds a new pool: keep reporting
        pool.guard = self.guard  # type: ignore[attr-defined]
        pool.probe = self.probe  # type: ignore[attr-defined]
        return pool


def pool_options(settings: Settings) -> dict[str, Any]:
    """``create_engine`` keyword arguments for the pool."""
    return {
        "poolclass": TimedQueuePool,
        "pool_size": settings.pool_size,
        "max_overflow": settings.max_overflow,
        "pool_timeout": settings.pool_timeout,
        # Replaced by age before the path's idle limit, and before a failover is too old.
        "pool_recycle": min(settings.pool_recycle, settings.max_connection_age),
        # The guard replaces pool_pre_ping: same safety, no round trip on busy connections.
        "pool_pre_ping": False,
    }


def connect_options(settings: Settings) -> dict[str, Any]:
    """PyMySQL's connect arguments: the handshake's bounds and TLS."""
    return {
        # PyMySQL applies read_timeout to the handshake too; the guard widens it after.
        "connect_timeout": settings.connect_timeout,
        "read_timeout": settings.connect_timeout,
        "write_timeout": settings.connect_timeout,
        **tls_args(settings.tls_ca),
    }


def check_tls_ca(settings: Settings) -> None:
    if settings.tls_ca and not os.access(settings.tls_ca, os.R_OK):
        raise SettingsError(
            f"DB_TLS_CA={settings.tls_ca}: cannot read it: point it at the CA certificate "
            "(PEM) that signed the database server's certificate, readable by the app's user"
        )


def protect(
    engine: Engine,
    settings: Settings,
    observer: Observer | None = None,
) -> ConnectionGuard:
    """Put the kit's protection on an engine whose pool was built with
    :func:`pool_options`; remember it for :func:`dispose_after_fork`. An engine protected
    already (the plugin named twice, say) keeps the guard it has."""
    if engine in _PROTECTED:
        return _PROTECTED[engine]
    guard = ConnectionGuard(settings, observer)
    engine.pool.guard = guard  # type: ignore[attr-defined]
    url = engine.url
    address = (url.host, url.port or 3306) if url.host and "unix_socket" not in url.query else None
    engine.pool.probe = address  # type: ignore[attr-defined]

    @event.listens_for(engine, "do_connect")
    def connect(dialect: Any, record: Any, cargs: Any, cparams: Any) -> KitConnection:
        try:
            conn = KitConnection(*cargs, **cparams)
        except pymysql.err.OperationalError as exc:
            breaker.connect_failed(exc)
            raise
        breaker.connected()
        conn.remember_address()
        watch_for_dead_peer(getattr(conn, "_sock", None), settings.net_timeout)
        return conn

    guard.attach(engine)
    _PROTECTED[engine] = guard
    return guard


def create_engine(settings: Settings, observer: Observer | None = None, **options: Any) -> Engine:
    """An engine for ``settings.database_url`` with the kit's protection, reads in
    autocommit (one round trip each) and a transaction from the first write on.
    ``options`` go to SQLAlchemy's ``create_engine`` (``echo=True``, say)."""
    check_tls_ca(settings)
    engine = sqlalchemy.create_engine(
        settings.database_url,
        **pool_options(settings),
        connect_args={**connect_options(settings), "charset": "utf8mb4", "autocommit": True},
        **options,
    )
    protect(engine, settings, observer)
    return engine


def protected_engines() -> list[Engine]:
    """Every engine of this process that carries the kit's protection."""
    return list(_PROTECTED)


def is_protected(engine: Engine) -> bool:
    return engine in _PROTECTED


def guard_of(engine: Engine) -> ConnectionGuard:
    """The guard on a protected engine (its settings, how many pings it sent)."""
    return _PROTECTED[engine]


def dispose_after_fork() -> int:
    """In a new worker: give every protected engine an empty pool of its own. Returns how
    many engines it disposed.

    ``close=False`` leaves the parent's sockets alone (SQLAlchemy 2's recommended form): a
    connection closed here would send COM_QUIT on a socket the parent still uses.
    """
    engines = protected_engines()
    for engine in engines:
        engine.dispose(close=False)
    return len(engines)
