"""The Flask integration: a request lifecycle that survives dead connections.

``IdleProof(app)`` gives a Flask app, on top of a protected engine (:mod:`idleproof.engine`):

* a request-scoped session, removed after every request and rolled back first on error, so
  one failed request never leaves a ``PendingRollbackError`` for the next;
* the retry of a request whose connection died before any COMMIT of it was sent
  (:meth:`IdleProof.call_retrying`);
* a 503 JSON answer with ``Retry-After`` when the database is unreachable or the pool is
  exhausted, never Flask's 500 page;
* ``/readyz`` on request (:meth:`IdleProof.readiness_blueprint`).

With plain SQLAlchemy the extension builds the engine from the settings (``DATABASE_URL``,
``DB_*``) and owns the session (:attr:`IdleProof.session`). With Flask-SQLAlchemy, pass its
``db``: the extension adds the engine plugin to the engines ``db`` makes, and uses
``db.session``::

    db = SQLAlchemy()
    IdleProof(app, flask_sqlalchemy=db)   # before db.init_app(app)
    db.init_app(app)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import sqlalchemy
from flask import Blueprint, Flask, Response, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    InterfaceError,
    InvalidRequestError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session, scoped_session, sessionmaker

from idleproof import connection as dbapi
from idleproof import metrics
from idleproof.connection import CommitOutcomeUnknown, socket_timeouts
from idleproof.engine import create_engine, is_protected
from idleproof.guard import Observer
from idleproof.plugin import NAME as PLUGIN
from idleproof.proxy import client_address, request_id
from idleproof.settings import Settings, SettingsError

__all__ = ["IdleProof", "error_body", "get_db", "request_tag"]

log = logging.getLogger(__name__)
T = TypeVar("T")

EXTENSION = "idleproof"
# Seconds a client should wait before retrying while the database is unavailable.
RETRY_AFTER = 5
# Deaths worth a second try: the statement never ran to its end on a live server, and the
# retry costs at most a connect. Not QUERY_TIMEOUT: that query already took its full bound.
_RETRIED = {dbapi.CLOSED, dbapi.NETWORK, dbapi.FAILOVER}
# OperationalError: connect refused/timed out, lost mid-query (2006, 2013).
# InterfaceError: PyMySQL's "(0, '')" on a socket that is already gone.
# TimeoutError: every pooled connection busy for DB_POOL_TIMEOUT.
# InvalidRequestError: the pool gave up replacing a dead connection on checkout.
UNAVAILABLE = (OperationalError, InterfaceError, PoolTimeoutError, InvalidRequestError)


class IdleProof:
    """The Flask extension; one per app (``app.extensions["idleproof"]``)."""

    def __init__(
        self,
        app: Flask | None = None,
        *,
        settings: Settings | None = None,
        flask_sqlalchemy: Any = None,
        observer: Observer | None = None,
    ) -> None:
        self.flask_sqlalchemy = flask_sqlalchemy
        self.settings = settings
        self.observer = observer if observer is not None else metrics.PrometheusObserver()
        self.engine: sqlalchemy.Engine | None = None
        self._session: scoped_session[Session] | None = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        if self.flask_sqlalchemy is not None:
            self._init_flask_sqlalchemy(app)
        else:
            self.settings = self.settings or Settings.from_env()
            self.engine = create_engine(self.settings, self.observer)
            self._session = scoped_session(sessionmaker(bind=self.engine, expire_on_commit=False))
        app.extensions[EXTENSION] = self
        app.teardown_appcontext(self.remove_session)
        # Every view, the app's and any added later, runs under call_retrying.
        dispatch = app.dispatch_request
        app.dispatch_request = lambda: self.call_retrying(dispatch)  # type: ignore[method-assign]
        for exc_class in UNAVAILABLE:
            app.register_error_handler(exc_class, self.database_unavailable)

    def _init_flask_sqlalchemy(self, app: Flask) -> None:
        """Make Flask-SQLAlchemy's engines with the plugin; refuse unprotected ones."""
        # The plugin reads the same settings; the URL is Flask-SQLAlchemy's.
        self.settings = self.settings or Settings.from_env(url="")
        if "sqlalchemy" not in app.extensions:
            options = app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", {})
            _add_plugin(options)
            # SQLALCHEMY_ENGINE_OPTIONS is the default engine's only: Flask-SQLAlchemy
            # builds each of SQLALCHEMY_BINDS from its own entry. A MySQL bind gets the
            # plugin there; another database's (SQLite, say) is not the kit's to protect.
            binds = {}
            for key, bind in app.config.get("SQLALCHEMY_BINDS", {}).items():
                bind = dict(bind) if isinstance(bind, dict) else {"url": bind}
                if _is_mysql(bind.get("url")):
                    _add_plugin(bind)
                binds[key] = bind
            app.config["SQLALCHEMY_BINDS"] = binds
            return
        with app.app_context():
            engines = self.flask_sqlalchemy.engines.items()
            unprotected = [
                e for key, e in engines if not is_protected(e) and (key is None or _is_mysql(e.url))
            ]
        if unprotected:
            raise SettingsError(
                f"Flask-SQLAlchemy already made {unprotected[0].url!r} without the {PLUGIN} "
                f"plugin: create IdleProof(app, flask_sqlalchemy=db) before db.init_app(app), "
                f"or add ?plugin={PLUGIN} to SQLALCHEMY_DATABASE_URI"
            )

    @property
    def session(self) -> scoped_session[Session]:
        """The request-scoped session (Flask-SQLAlchemy's ``db.session`` when given)."""
        if self.flask_sqlalchemy is not None:
            session: scoped_session[Session] = self.flask_sqlalchemy.session
            return session
        assert self._session is not None, "IdleProof.init_app(app) was not called"
        return self._session

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
        token = dbapi.COMMITTED.set(False)
        try:
            try:
                return view()
            except DBAPIError as exc:
                cause = _retry_cause(exc)
                if cause is None:
                    raise
            log.info("retrying the request on a fresh connection: %s", cause)
            self.observer.retried(cause)
            self.remove_session()
            return view()
        finally:
            dbapi.COMMITTED.reset(token)

    def remove_session(self, exc: BaseException | None = None) -> None:
        """Give the connection back after every request; roll back first on error."""
        try:
            if exc is not None:
                self.session.rollback()
        except SQLAlchemyError:
            log.warning("rollback after a failed request failed; discarding the session")
        finally:
            self.session.remove()

    def database_unavailable(self, exc: Exception) -> ResponseReturnValue:
        """The error handler: 503 JSON with ``Retry-After``, never a 500."""
        log.warning("database unavailable: %s %s", str(exc).splitlines()[0], request_tag())
        metrics.count_unavailable(exc)
        if isinstance(getattr(exc, "orig", None), CommitOutcomeUnknown):
            # Not retried (it could run twice): the client must look before it tries again.
            body = error_body(
                "commit_outcome_unknown",
                "the connection to the database was lost while the change was being "
                "committed: it may or may not have been saved; check before sending it again",
            )
        else:
            body = error_body("database_unavailable", "the database is not reachable")
        return body, 503, {"Retry-After": str(RETRY_AFTER)}

    def start_transaction(self) -> None:
        """Open the request's transaction now, so the reads that follow share one snapshot.

        Without it each read runs in autocommit and sees the latest committed data; the
        first write opens the transaction by itself (:mod:`idleproof.connection`).
        """
        self.session.connection().connection.dbapi_connection.begin()  # type: ignore[union-attr]

    @contextmanager
    def quick_connection(self) -> Iterator[sqlalchemy.Connection]:
        """A connection whose queries give up after ``DB_PING_TIMEOUT`` (health checks)."""
        engine = self.flask_sqlalchemy.engine if self.flask_sqlalchemy else self.engine
        assert engine is not None and self.settings is not None
        with (
            engine.connect() as conn,
            socket_timeouts(conn.connection.dbapi_connection, self.settings.ping_timeout),
        ):
            yield conn

    def readiness_blueprint(self, path: str = "/readyz") -> Blueprint:
        """``GET /readyz``: 200 after one bounded round trip, 503 JSON (the error handler)
        while the database does not answer. Register it: ``app.register_blueprint(...)``."""
        bp = Blueprint("idleproof_readiness", __name__)

        @bp.get(path)
        def readyz() -> ResponseReturnValue:
            with self.quick_connection() as conn:
                conn.execute(sqlalchemy.text("SELECT 1"))
            return jsonify(status="ready")

        return bp


def _add_plugin(options: dict[str, Any]) -> None:
    plugins = list(options.get("plugins", []))
    options["plugins"] = plugins if PLUGIN in plugins else [*plugins, PLUGIN]


def _is_mysql(url: Any) -> bool:
    """Whether an engine URL (text or URL) names a MySQL database, whatever its driver."""
    try:
        return url is not None and make_url(url).get_backend_name() == "mysql"
    except (ArgumentError, ValueError):
        return False  # not for us to judge: Flask-SQLAlchemy reports a malformed URL


def _retry_cause(exc: DBAPIError) -> str | None:
    if exc.orig is None or dbapi.COMMITTED.get() or isinstance(exc.orig, CommitOutcomeUnknown):
        return None
    cause = dbapi.death_cause(exc.orig, exc.connection_invalidated)
    return cause if cause in _RETRIED else None


def get_db(app: Flask | None = None) -> IdleProof:
    """The app's extension (``current_app``'s when no app is given)."""
    db: IdleProof = (app or current_app).extensions[EXTENSION]
    return db


def error_body(error: str, message: str) -> Response:
    """What failed, what to change, and the id that finds the request in every log."""
    return jsonify(error=error, message=message, request_id=request_id(request.environ))


def request_tag() -> str:
    """For log lines: the same id and client address as the access log."""
    return f"request_id={request_id(request.environ)} client={client_address(request.environ)}"
