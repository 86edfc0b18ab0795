"""The configurations the kit is compared with, serving the kit's own views and model.

* ``naive``: the incident's setup. A default ``create_engine``, a module-level
  ``scoped_session`` never removed, the schema created at import (so with ``preload_app``
  the master opens a connection every worker inherits) and no ``post_fork`` dispose.
  Flask's default error page: failures are 500s.
* ``bare``: the naive engine and session (no pre-ping, no recycle, no teardown), minus the
  two things that make ``naive`` fail under load by itself: no master connection at
  import, and the engine disposed after fork. Its read transaction never ends: the
  transaction tests show it serving a stale snapshot and holding a metadata lock.
* ``fsa-preping``: Flask-SQLAlchemy 3.1 with ``pool_pre_ping=True`` and ``pool_recycle``:
  the textbook fix users pick (a ping before every checkout).
* ``fsa-recycle``: Flask-SQLAlchemy 3.1 with ``pool_recycle`` only: fast, not safe (a
  connection the network or the server dropped is handed out).
* ``floor-orm``: a plain engine in autocommit running the kit's views (the same ORM
  code): the least an ORM request can cost on this stack. No guard, no metrics, no retry,
  no transaction around writes.
* ``floor``: the same engine, views written without the ORM (one ``SELECT`` per ``GET /``,
  one ``INSERT ... RETURNING`` per ``POST /notes``): the round-trip floor.

Every one uses the kit's ``Note`` model and answers the same JSON; the Flask-SQLAlchemy
and floor sessions keep their objects after commit (``expire_on_commit=False``), as the
kit's do, so ``POST /notes`` answers from the ``INSERT ... RETURNING`` without a reload.
Flask-SQLAlchemy's own default (``True``) would add a ``SELECT`` (and with pre-ping a
``PING``) after every commit.

Served by the kit's ``gunicorn.conf.py`` unchanged (same workers, timeouts, preload; its
``post_fork`` disposes only the kit's engines, so each variant that disposes after a fork
registers that itself):
``KIT_VARIANT=naive gunicorn -c gunicorn.conf.py harness.variants:app``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy
from flask import Flask, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy import insert, select
from sqlalchemy.orm import Session, scoped_session, sessionmaker

from app.models import Base, Note
from app.payload import BadNote, parse_note
from app.views import RECENT_NOTES, bp
from idleproof.connection import tls_args
from idleproof.flask import EXTENSION, error_body
from idleproof.settings import Settings

VARIANTS = ("naive", "bare", "fsa-preping", "fsa-recycle", "floor-orm", "floor")


class PlainDatabase:
    """A plain engine and a thread-scoped session; what the kit's views and hooks call."""

    def __init__(self, engine: sqlalchemy.Engine, expire_on_commit: bool = True):
        self.engine = engine
        self.session: scoped_session[Session] = scoped_session(
            sessionmaker(bind=engine, expire_on_commit=expire_on_commit)
        )

    def init_app(self, app: Flask) -> None:
        app.extensions[EXTENSION] = self
        # What a textbook post_fork hook does; the kit's hook disposes only the engines it
        # protects, and these are not.
        os.register_at_fork(after_in_child=self.dispose_after_fork)

    def dispose_after_fork(self) -> None:
        self.engine.dispose(close=False)

    @contextmanager
    def quick_connection(self) -> Iterator[sqlalchemy.Connection]:
        with self.engine.connect() as conn:
            yield conn


class NaiveDatabase(PlainDatabase):
    def dispose_after_fork(self) -> None:
        """The naive setup has no post_fork hook: the inherited pool is kept."""


class RemovingDatabase(PlainDatabase):
    """The session removed at the end of every request, as any correct app does."""

    def init_app(self, app: Flask) -> None:
        super().init_app(app)
        app.teardown_appcontext(lambda exc: self.session.remove())


class FlaskSQLAlchemyDatabase:
    """Flask-SQLAlchemy as its documentation sets it up, behind the kit's hooks.

    ``SQLALCHEMY_ENGINE_OPTIONS`` carries the pool options; Flask-SQLAlchemy removes its
    session at the end of every app context and sets MySQL's ``charset=utf8mb4`` itself.
    """

    def __init__(self, app: Flask, settings: Settings, pre_ping: bool):
        from flask_sqlalchemy import SQLAlchemy

        app.config["SQLALCHEMY_DATABASE_URI"] = settings.database_url
        app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {
            "pool_pre_ping": pre_ping,
            # As configured, not truncated: int(1.8) = 1 s would retire every connection
            # by age before a fault scenario's 1.3 s quiet period, and no ping would
            # ever meet a vanished or stalled peer.
            "pool_recycle": settings.pool_recycle,
        }
        self.fsa = SQLAlchemy(session_options={"expire_on_commit": False})
        self.fsa.init_app(app)
        self.app = app
        self.session = self.fsa.session
        app.extensions[EXTENSION] = self
        os.register_at_fork(after_in_child=self.dispose_after_fork)

    @property
    def engine(self) -> sqlalchemy.Engine:
        with self.app.app_context():
            return self.fsa.engine

    def dispose_after_fork(self) -> None:
        # Nothing connects at import, so the pool is empty at fork; disposed all the same.
        self.engine.dispose(close=False)

    @contextmanager
    def quick_connection(self) -> Iterator[sqlalchemy.Connection]:
        with self.engine.connect() as conn:
            yield conn


def autocommit_engine(settings: Settings) -> sqlalchemy.Engine:
    """A plain engine in autocommit that sends nothing but the statements themselves.

    ``skip_autocommit_rollback``: without it SQLAlchemy still sends a ``ROLLBACK`` when a
    connection goes back to the pool, which autocommit makes pointless.
    """
    return sqlalchemy.create_engine(
        settings.database_url, isolation_level="AUTOCOMMIT", skip_autocommit_rollback=True
    )


# The round-trip floor: the kit's two database endpoints written on SQLAlchemy Core.
_notes = Base.metadata.tables[Note.__tablename__]
_columns = (_notes.c.id, _notes.c.text, _notes.c.created_at)


def _note_dict(row: Any) -> dict[str, object]:
    created = row.created_at.isoformat() if row.created_at else None
    return {"id": row.id, "text": row.text, "created_at": created}


def floor_index() -> ResponseReturnValue:
    query = select(*_columns).order_by(_notes.c.id.desc()).limit(RECENT_NOTES)
    with current_app.extensions[EXTENSION].engine.connect() as conn:
        rows = conn.execute(query).all()
    return jsonify(notes=[_note_dict(row) for row in rows])


def floor_create_note() -> ResponseReturnValue:
    try:
        note_text = parse_note(request.mimetype, request.mimetype_params, request.get_data())
    except BadNote as exc:
        return error_body("bad_request", str(exc)), 400
    statement = insert(_notes).values(text=note_text).returning(*_columns)
    with current_app.extensions[EXTENSION].engine.connect() as conn:
        row = conn.execute(statement).one()
    return jsonify(_note_dict(row)), 201


def create_variant_app(kind: str) -> Flask:
    settings = Settings.from_env()
    app = Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    # Naive about the pool, not about TLS: a database that requires it gets it (DB_TLS_CA).
    tls = tls_args(settings.tls_ca)
    if kind in ("fsa-preping", "fsa-recycle"):
        FlaskSQLAlchemyDatabase(app, settings, pre_ping=kind == "fsa-preping")
    elif kind == "naive":
        naive = NaiveDatabase(sqlalchemy.create_engine(settings.database_url, connect_args=tls))
        # The classic "create tables at import": under preload this runs in the master.
        Base.metadata.create_all(naive.engine)
        naive.init_app(app)
    elif kind == "bare":
        PlainDatabase(sqlalchemy.create_engine(settings.database_url, connect_args=tls)).init_app(
            app
        )
    elif kind in ("floor-orm", "floor"):
        RemovingDatabase(autocommit_engine(settings), expire_on_commit=False).init_app(app)
    else:
        raise SystemExit(f"KIT_VARIANT={kind!r} is unknown: use one of {', '.join(VARIANTS)}")
    app.register_blueprint(bp)
    if kind == "floor":
        # The same routes, served without the ORM.
        app.view_functions["notes.index"] = floor_index
        app.view_functions["notes.create_note"] = floor_create_note
    return app


app = create_variant_app(os.environ.get("KIT_VARIANT", "naive"))
