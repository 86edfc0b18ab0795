"""Flask reference app whose database lifecycle survives idle and dropped connections."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from flask import Flask
from flask.typing import ResponseReturnValue
from sqlalchemy.exc import InterfaceError, InvalidRequestError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from werkzeug.exceptions import HTTPException

from app import metrics
from app.connection import CommitOutcomeUnknown
from app.db import Database
from app.errors import error_body, request_tag
from app.settings import Settings

log = logging.getLogger(__name__)

# Seconds a client should wait before retrying while the database is unavailable.
RETRY_AFTER = 5

# Largest request body read (413 above): a note of 500 characters written as JSON escapes
# (12 bytes for a character outside the BMP) stays far below it.
MAX_BODY_BYTES = 64 * 1024


def create_app(settings: Settings | None = None, environ: Mapping[str, str] | None = None) -> Flask:
    """Build the app. Settings come from the environment unless given."""
    settings = settings or Settings.from_env(environ)
    app = Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    db = Database(settings, metrics.PrometheusObserver())
    metrics.instrument(db.engine)
    db.init_app(app)

    from app.views import bp

    app.register_blueprint(bp)
    register_error_handlers(app)
    return app


def register_error_handlers(app: Flask) -> None:
    """Every error is JSON; a database that is down or busy is a 503, never a 500."""

    def database_unavailable(exc: Exception) -> ResponseReturnValue:
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

    def http_error(exc: HTTPException) -> ResponseReturnValue:
        # Keep werkzeug's headers (Allow on a 405); only its HTML body is replaced.
        headers = [(k, v) for k, v in exc.get_headers() if k.lower() != "content-type"]
        name = exc.name.lower().replace(" ", "_")
        return error_body(name, exc.description or exc.name), exc.code or 500, headers

    def internal_error(exc: Exception) -> ResponseReturnValue:
        log.exception("unhandled error %s", request_tag())
        return error_body("internal_error", "see the server log"), 500

    # OperationalError: connect refused/timed out, lost mid-query (2006, 2013).
    # InterfaceError: PyMySQL's "(0, '')" on a socket that is already gone.
    # TimeoutError: every pooled connection busy for DB_POOL_TIMEOUT.
    # InvalidRequestError: the pool gave up replacing a dead connection on checkout.
    for exc_class in (OperationalError, InterfaceError, PoolTimeoutError, InvalidRequestError):
        app.register_error_handler(exc_class, database_unavailable)
    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(Exception, internal_error)
