"""The configurations the kit is compared with, serving the kit's own views.

* ``naive`` (also the benchmark's *bare* engine): the incident's setup. A default
  ``create_engine``, a module-level ``scoped_session`` never removed, the schema created
  at import (so with ``preload_app`` the master opens a connection every worker inherits)
  and no ``post_fork`` dispose. Flask's default error page: failures are 500s.
* ``textbook``: SQLAlchemy's documented answer: ``pool_pre_ping=True``, ``pool_recycle``
  below the idle timeout, session removed on teardown, engine disposed after fork.
* ``bare``: the benchmark's speed limit: the naive engine and session (no pre-ping, no
  recycle, no teardown), minus the two things that make ``naive`` fail under load by
  itself: no master connection at import, and the engine disposed after fork (two workers
  sharing one socket answer 500s under concurrent load, which is no speed limit).
* ``kit-noremove``: the kit exactly (``create_app()``), minus the teardown that removes
  the session. Not a setting to run: the benchmark uses it to price the per-request
  session removal on its own (the session then keeps its connection across requests).
* ``kit-close``: the kit closing the session at teardown instead of removing it (the
  ``Session`` object is reused); see :func:`create_kit_closing_session`.

Served by the kit's ``gunicorn.conf.py`` unchanged (same workers, timeouts, preload):
``KIT_VARIANT=naive gunicorn -c gunicorn.conf.py harness.variants:app``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy
from flask import Flask
from sqlalchemy.orm import Session, scoped_session, sessionmaker

from app.models import Base
from app.settings import Settings
from app.views import bp


class NaiveDatabase:
    def __init__(self, engine: sqlalchemy.Engine):
        self.engine = engine
        self.session: scoped_session[Session] = scoped_session(sessionmaker(bind=engine))

    def init_app(self, app: Flask) -> None:
        app.extensions["db"] = self

    def dispose_after_fork(self) -> None:
        """The naive setup has no post_fork hook: the inherited pool is kept."""

    @contextmanager
    def quick_connection(self) -> Iterator[sqlalchemy.Connection]:
        with self.engine.connect() as conn:
            yield conn


class BareDatabase(NaiveDatabase):
    def dispose_after_fork(self) -> None:
        self.engine.dispose(close=False)


class TextbookDatabase(NaiveDatabase):
    def init_app(self, app: Flask) -> None:
        super().init_app(app)
        app.teardown_appcontext(lambda exc: self.session.remove())

    def dispose_after_fork(self) -> None:
        self.engine.dispose(close=False)


def create_kit_without_removal() -> Flask:
    from app import create_app
    from app.db import get_db

    app = create_app()
    app.teardown_appcontext_funcs.remove(get_db(app).remove_session)
    return app


def create_kit_closing_session() -> Flask:
    """The kit, closing the request's session at teardown instead of removing it.

    ``close()`` ends the transaction and returns the connection exactly like ``remove()``,
    but keeps the thread's ``Session`` object for the next request instead of building a
    new one. The benchmark prices that difference.
    """
    from app import create_app
    from app.db import get_db

    app = create_app()
    db = get_db(app)
    app.teardown_appcontext_funcs.remove(db.remove_session)

    def close_session(exc: BaseException | None = None) -> None:
        try:
            if exc is not None:
                db.session.rollback()
        finally:
            db.session.close()

    app.teardown_appcontext(close_session)
    return app


def create_variant_app(kind: str) -> Flask:
    if kind == "kit-noremove":
        return create_kit_without_removal()
    if kind == "kit-close":
        return create_kit_closing_session()
    settings = Settings.from_env()
    app = Flask(__name__)
    db: NaiveDatabase
    if kind == "naive":
        db = NaiveDatabase(sqlalchemy.create_engine(settings.database_url))
        # The classic "create tables at import": under preload this runs in the master.
        Base.metadata.create_all(db.engine)
    elif kind == "bare":
        db = BareDatabase(sqlalchemy.create_engine(settings.database_url))
    elif kind == "textbook":
        engine = sqlalchemy.create_engine(
            settings.database_url,
            pool_pre_ping=True,
            # As configured, not truncated: int(1.8) = 1 s would retire every connection
            # by age before a fault scenario's 1.3 s quiet period, and no ping would
            # ever meet a vanished or stalled peer.
            pool_recycle=settings.pool_recycle,
        )
        db = TextbookDatabase(engine)
    else:
        raise SystemExit(
            f"KIT_VARIANT={kind!r} is unknown: use naive, bare, textbook, kit-noremove or kit-close"
        )
    db.init_app(app)
    app.register_blueprint(bp)
    return app


app = create_variant_app(os.environ.get("KIT_VARIANT", "naive"))
