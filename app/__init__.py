"""The reference app: notes in MariaDB, served through the kit's Flask integration.

It uses the ``idleproof`` library exactly as any application would (``IdleProof(app)``);
everything it adds is its own: the notes, and JSON for every error (the library answers
only the database's 503s).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from flask import Flask
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from idleproof.flask import IdleProof, error_body, request_tag
from idleproof.settings import Settings

log = logging.getLogger(__name__)

# Largest request body read (413 above): a note of 500 characters written as JSON escapes
# (12 bytes for a character outside the BMP) stays far below it.
MAX_BODY_BYTES = 64 * 1024


def create_app(settings: Settings | None = None, environ: Mapping[str, str] | None = None) -> Flask:
    """Build the app. Settings come from the environment unless given."""
    app = Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    db = IdleProof(app, settings=settings or Settings.from_env(environ))
    app.register_blueprint(db.readiness_blueprint())

    from app.views import bp

    app.register_blueprint(bp)
    register_error_handlers(app)
    return app


def register_error_handlers(app: Flask) -> None:
    """Every error is JSON (a database that is down is the library's 503)."""

    def http_error(exc: HTTPException) -> ResponseReturnValue:
        # Keep werkzeug's headers (Allow on a 405); only its HTML body is replaced.
        headers = [(k, v) for k, v in exc.get_headers() if k.lower() != "content-type"]
        name = exc.name.lower().replace(" ", "_")
        return error_body(name, exc.description or exc.name), exc.code or 500, headers

    def internal_error(exc: Exception) -> ResponseReturnValue:
        log.exception("unhandled error %s", request_tag())
        return error_body("internal_error", "see the server log"), 500

    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(Exception, internal_error)
