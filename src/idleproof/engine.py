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
* with ``autocommit``, one round trip per read (:mod:`idleproof.connection`).

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

import sqlalchemy
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.pool import QueuePool

from idleproof.connection import KitConnection, begin_before_writes, tls_args, watch_for_dead_peer
from idleproof.guard import ConnectionGuard, Observer
from idleproof.settings import Settings, SettingsError

# Each protected engine and its guard.
_PROTECTED: weakref.WeakKeyDictionary[Engine, ConnectionGuard] = weakref.WeakKeyDictionary()


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
    *,
    autocommit: bool = False,
) -> ConnectionGuard:
    """Put the kit's protection on an engine whose pool was built with
    :func:`pool_options`; remember it for :func:`dispose_after_fork`. An engine protected
    already (the plugin named twice, say) keeps the guard it has."""
    if engine in _PROTECTED:
        return _PROTECTED[engine]
    guard = ConnectionGuard(settings, observer)
    engine.pool.observer = guard.observer  # type: ignore[attr-defined]

    @event.listens_for(engine, "do_connect")
    def connect(dialect: Any, record: Any, cargs: Any, cparams: Any) -> KitConnection:
        conn = KitConnection(*cargs, **cparams)
        conn.remember_address()
        watch_for_dead_peer(getattr(conn, "_sock", None), settings.net_timeout)
        return conn

    if autocommit:
        event.listen(engine, "before_cursor_execute", begin_before_writes)
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
    protect(engine, settings, observer, autocommit=True)
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
