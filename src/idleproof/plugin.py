"""The kit's protection for engines an application builds itself: a SQLAlchemy engine plugin.

Switched on without touching the application's code, in either of two ways:

* the database URL: ``mysql+pymysql://USER:PASSWORD@HOST/DB?plugin=idleproof`` (SQLAlchemy
  loads plugins named in the URL from the ``sqlalchemy.plugins`` entry point group, and
  removes the parameter before the driver sees the URL);
* the environment: ``IDLEPROOF_PLUGIN=1`` for a process whose Gunicorn loads
  :mod:`idleproof.gunicorn_conf` (or that calls :func:`enable_for_all_engines`): every
  ``mysql+pymysql`` engine the process creates afterwards gets the plugin.

The plugin reads the kit's settings from the environment (``DB_*``, the same table as the
reference app: ``idleproof settings``), never ``DATABASE_URL``: the URL is the
application's. It overrides the pool arguments the application passed (``pool_pre_ping``,
``pool_recycle``, ``pool_size``, ...) with the kit's, and logs one line per engine naming
each override, so an operator reading the log knows what runs. It does not change the
application's transactions: reads stay in whatever transaction mode the application uses.

A schema migration gets a plugin of its own, ``?plugin=idleproof_migration``
(:class:`MigrationPlugin`): the network's bounds without the web request's.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, CreateEnginePlugin, Engine
from sqlalchemy.engine import url as sa_url
from sqlalchemy.util import to_list

from idleproof import metrics
from idleproof.connection import watch_for_dead_peer
from idleproof.engine import check_tls_ca, connect_options, pool_options, protect
from idleproof.settings import Settings, SettingsError

log = logging.getLogger(__name__)

NAME = "idleproof"
MIGRATION = "idleproof_migration"
DRIVER = "mysql+pymysql"
# The environment switch read by :mod:`idleproof.gunicorn_conf`.
SWITCH = "IDLEPROOF_PLUGIN"
# Arguments that take the pool out of the engine's hands: the plugin cannot protect it.
_OWN_POOL = ("pool", "creator")


class IdleProofPlugin(CreateEnginePlugin):
    """``CreateEnginePlugin``: the kit's pool arguments in, the guard on the new engine."""

    def __init__(self, url: URL, kwargs: dict[str, Any]) -> None:
        super().__init__(url, kwargs)
        shown = _check_driver(url, NAME)
        taken = [name for name in _OWN_POOL if kwargs.get(name) is not None]
        if taken:
            raise SettingsError(
                f"{shown}: the application passes {taken[0]}=, so the engine's pool is not "
                f"its own and the {NAME} plugin cannot protect it: drop plugin={NAME}"
            )
        self.settings = Settings.from_env(url=url.render_as_string(hide_password=False))
        check_tls_ca(self.settings)
        self.overrides = apply(kwargs, self.settings)
        log.info(
            "%s plugin on %s: %s",
            NAME,
            shown,
            "; ".join(self.overrides) or "no argument of the application's overridden",
        )

    def update_url(self, url: URL) -> URL:
        # SQLAlchemy has already removed plugin= from the URL it passes here; there is
        # nothing else to take out. (The base class raises NotImplementedError.)
        return url

    def engine_created(self, engine: Engine) -> None:
        protect(engine, self.settings, metrics.PrometheusObserver())


class MigrationPlugin(CreateEnginePlugin):
    """``CreateEnginePlugin`` for a schema migration: the network cannot hang it or break
    it, and no statement is cut short.

    A migration runs once, often on one connection that waits while the tool loads its
    next step, and runs DDL that takes as long as the table is big. The web plugin's bounds
    do not fit it: ``DB_READ_TIMEOUT`` would cut an ``ALTER TABLE`` halfway, and its guard
    would ``KILL`` it. What fits are the kernel's bounds: keepalives that keep a firewall's
    or NAT's flow alive while the connection waits, with ``TCP_USER_TIMEOUT`` declaring a
    host dead after ``DB_NET_TIMEOUT`` of silence, and a handshake bounded by
    ``DB_CONNECT_TIMEOUT``. The application's pool arguments stay as they are, and so do
    its own read and write timeouts (none, unless it set them).
    """

    def __init__(self, url: URL, kwargs: dict[str, Any]) -> None:
        super().__init__(url, kwargs)
        shown = _check_driver(url, MIGRATION)
        self.settings = Settings.from_env(url=url.render_as_string(hide_password=False))
        connect_args = dict(kwargs.get("connect_args") or {})
        # PyMySQL bounds the handshake with its read and write timeouts: the connect
        # timeout's for the handshake, the application's own (or none) after it.
        self.statement_timeouts = (
            connect_args.get("read_timeout"),
            connect_args.get("write_timeout"),
        )
        handshake = connect_args.setdefault("connect_timeout", self.settings.connect_timeout)
        connect_args["read_timeout"] = connect_args["write_timeout"] = handshake
        kwargs["connect_args"] = connect_args
        log.info(
            "%s plugin on %s: handshake within %s s, a silent peer dead after %s s "
            "(DB_NET_TIMEOUT), statements unbounded by the kit",
            MIGRATION,
            shown,
            handshake,
            self.settings.net_timeout,
        )

    def update_url(self, url: URL) -> URL:
        return url

    def engine_created(self, engine: Engine) -> None:
        net_timeout = self.settings.net_timeout
        read_timeout, write_timeout = self.statement_timeouts

        @event.listens_for(engine, "do_connect")
        def connect(dialect: Any, record: Any, cargs: Any, cparams: Any) -> Any:
            conn = dialect.connect(*cargs, **cparams)
            conn._read_timeout, conn._write_timeout = read_timeout, write_timeout
            watch_for_dead_peer(getattr(conn, "_sock", None), net_timeout)
            return conn


def _check_driver(url: URL, name: str) -> str:
    """The URL as it may be shown (no password); a URL of another driver is refused."""
    shown = url.render_as_string(hide_password=True)
    if url.drivername != DRIVER:
        raise SettingsError(
            f"{shown}: the {name} plugin protects {DRIVER} engines only: use a "
            f"{DRIVER}:// URL or drop plugin={name}"
        )
    return shown


def apply(kwargs: dict[str, Any], settings: Settings) -> list[str]:
    """Put the kit's pool and connect arguments into ``kwargs``; say what was replaced."""
    overrides = []
    for key, value in pool_options(settings).items():
        if key in kwargs and kwargs[key] != value:
            overrides.append(f"{key}={_shown(kwargs[key])} -> {_shown(value)}")
        kwargs[key] = value
    connect_args = dict(kwargs.get("connect_args") or {})
    for key, value in connect_options(settings).items():
        if key in connect_args and connect_args[key] != value:
            overrides.append(f"connect_args {key}={connect_args[key]!r} -> {value!r}")
        connect_args[key] = value
    kwargs["connect_args"] = connect_args
    return overrides


def _shown(value: Any) -> str:
    return value.__name__ if isinstance(value, type) else repr(value)


def enable_for_all_engines(environ: Mapping[str, str] | None = None) -> bool:
    """With ``IDLEPROOF_PLUGIN`` set to 1 (or true/yes/on), add the plugin to every
    ``mysql+pymysql`` engine this process creates from now on; returns whether it did.

    SQLAlchemy has no setting for this, so the one method every ``create_engine`` calls to
    load a URL's plugins is wrapped, whichever way the application imported
    ``create_engine``. An engine of another driver (SQLite, say) is left alone.
    """
    env = os.environ if environ is None else environ
    raw = env.get(SWITCH, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw not in ("1", "true", "yes", "on"):
        raise SettingsError(f"{SWITCH}={raw!r} is not a switch: set it to 1 or leave it unset")
    original = sa_url.URL._instantiate_plugins
    if getattr(original, "idleproof", False):
        return True

    def instantiate_plugins(self: URL, kwargs: Mapping[str, Any]) -> Any:
        named = [*to_list(self.query.get("plugin", ())), *kwargs.get("plugins", [])]
        if self.drivername == DRIVER and NAME not in named:
            kwargs = {**kwargs, "plugins": [*kwargs.get("plugins", []), NAME]}
        return original(self, kwargs)

    instantiate_plugins.idleproof = True  # type: ignore[attr-defined]
    sa_url.URL._instantiate_plugins = instantiate_plugins  # type: ignore[method-assign]
    log.info("%s=%s: every %s engine gets the %s plugin", SWITCH, raw, DRIVER, NAME)
    return True
