"""The Flask extension with Flask-SQLAlchemy, as its documentation sets it up, against a real
MariaDB (wait_timeout=2)::

    db = SQLAlchemy()
    IdleProof(app, flask_sqlalchemy=db)
    db.init_app(app)

Flask's test client drives the requests: the extension's work (the engine plugin on
Flask-SQLAlchemy's engines, the retry, the 503) happens inside the app, no server needed.
Each protection is shown beside the same app without it, which must fail.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pymysql
import pytest
from flask import Flask, jsonify
from flask.typing import ResponseReturnValue
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import text
from sqlalchemy.engine import Engine

from harness import free_port
from harness.mariadb import LocalMariaDB
from idleproof import plugin
from idleproof.engine import is_protected
from idleproof.flask import RETRY_AFTER, IdleProof
from idleproof.settings import SETTINGS, SettingsError
from tests.helpers import WAIT_TIMEOUT, report

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def kit_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kit's DB_* settings for the plugin; nothing inherited from outside."""
    for setting in SETTINGS:
        monkeypatch.delenv(setting.env, raising=False)
    monkeypatch.delenv(plugin.SWITCH, raising=False)
    monkeypatch.setenv("DB_IDLE_TIMEOUT", str(WAIT_TIMEOUT))


@dataclass
class App:
    """A Flask-SQLAlchemy app, its ``db``, the extension (None: left out), and how many
    times each view ran."""

    flask: Flask
    db: SQLAlchemy
    idleproof: IdleProof | None
    runs: dict[str, int] = field(default_factory=dict)

    def engines(self) -> dict[str | None, Engine]:
        with self.flask.app_context():
            return dict(self.db.engines)

    def dispose(self) -> None:
        with self.flask.app_context():
            for engine in self.db.engines.values():
                engine.dispose()


Killer = Callable[[int], None]


def add_views(app: App, kill: Killer) -> None:
    """Views that read and write through ``db.session``; ``kill`` ends a server thread the
    way an operator's KILL does, in the middle of a view."""
    db, flask = app.db, app.flask

    def ran(name: str) -> int:
        app.runs[name] = app.runs.get(name, 0) + 1
        return app.runs[name]

    def connection_id() -> int:
        return int(db.session.execute(text("SELECT CONNECTION_ID()")).scalar_one())

    @flask.get("/id")
    def current_id() -> ResponseReturnValue:
        return jsonify(connection_id=connection_id())

    @flask.get("/read-twice")
    def read_twice() -> ResponseReturnValue:
        run = ran("read-twice")
        first = connection_id()
        if run == 1:
            kill(first)  # between two statements, nothing committed
        notes = db.session.execute(text("SELECT COUNT(*) FROM notes")).scalar_one()
        return jsonify(runs=run, connection_id=first, notes=notes)

    @flask.post("/write-then-die/<marker>")
    def write_then_die(marker: str) -> ResponseReturnValue:
        run = ran("write-then-die")
        db.session.execute(text("INSERT INTO notes (text) VALUES (:t)"), {"t": marker})
        if run == 1:
            kill(connection_id())  # the INSERT is not committed yet
        db.session.execute(text("SELECT 1"))
        db.session.commit()
        return jsonify(runs=run), 201

    @flask.post("/commit-then-die/<marker>")
    def commit_then_die(marker: str) -> ResponseReturnValue:
        run = ran("commit-then-die")
        db.session.execute(text("INSERT INTO notes (text) VALUES (:t)"), {"t": marker})
        db.session.commit()  # from here on, running the view again would write twice
        kill(connection_id())
        db.session.execute(text("SELECT 1"))
        return jsonify(runs=run), 201


@pytest.fixture
def make_app(mariadb: LocalMariaDB) -> Iterator[Callable[..., App]]:
    made: list[App] = []

    def kill(thread_id: int) -> None:
        mariadb.execute(f"KILL {thread_id}")
        time.sleep(0.1)

    def make(url: str | None = None, *, idleproof: bool = True, **config: object) -> App:
        flask = Flask(__name__)
        flask.config["SQLALCHEMY_DATABASE_URI"] = url or mariadb.url
        flask.config.update(config)
        db = SQLAlchemy()
        ext = IdleProof(flask, flask_sqlalchemy=db) if idleproof else None
        db.init_app(flask)
        app = App(flask, db, ext)
        add_views(app, kill)
        made.append(app)
        return app

    yield make
    for app in made:
        app.dispose()


def notes_with(mariadb: LocalMariaDB, marker: str) -> int:
    rows = mariadb.execute(
        f"SELECT COUNT(*) FROM `{mariadb.database}`.notes WHERE text = '{marker}'"
    )
    return int(str(rows[0][0]))


def test_flask_sqlalchemys_engines_are_protected(
    make_app: Callable[..., App], mariadb: LocalMariaDB, tmp_path: Path
) -> None:
    binds = {
        "reports": mariadb.url,
        "audit": {"url": mariadb.url, "pool_pre_ping": True},
        "cache": f"sqlite:///{tmp_path / 'cache.db'}",  # not MySQL: not the kit's
    }
    app = make_app(SQLALCHEMY_BINDS=binds)
    protected = {key: is_protected(engine) for key, engine in app.engines().items()}
    assert protected == {None: True, "reports": True, "audit": True, "cache": False}
    with app.flask.app_context():
        for engine in app.db.engines.values():
            with engine.connect() as conn:
                assert conn.execute(text("SELECT 1")).scalar_one() == 1
    without = make_app(idleproof=False)
    assert not any(is_protected(engine) for engine in without.engines().values())


def test_a_killed_connection_costs_no_request(
    make_app: Callable[..., App], mariadb: LocalMariaDB, request: pytest.FixtureRequest
) -> None:
    kit, naive = make_app(), make_app(idleproof=False)
    before = {}
    for name, app in (("kit", kit), ("naive", naive)):
        answer = app.flask.test_client().get("/id")
        assert answer.status_code == 200
        before[name] = answer.json["connection_id"]  # type: ignore[index]
    for thread_id in before.values():
        try:
            mariadb.execute(f"KILL {thread_id}")
        except pymysql.MySQLError as error:
            # 1094, unknown thread: the server's wait_timeout closed it first (a slow
            # machine), which leaves the pooled connection just as dead.
            if error.args[0] != 1094:
                raise
    time.sleep(0.1)

    assert naive.flask.test_client().get("/id").status_code == 500
    started = time.monotonic()
    answer = kit.flask.test_client().get("/id")
    took = time.monotonic() - started
    assert answer.status_code == 200, answer.text
    assert answer.json["connection_id"] != before["kit"]  # type: ignore[index]
    report(request, "flask", f"GET after KILL: naive 500, kit 200 in {took * 1000:.0f} ms")


def test_an_unreachable_database_is_a_503_with_retry_after(
    make_app: Callable[..., App],
) -> None:
    closed = f"mysql+pymysql://app:x@127.0.0.1:{free_port()}/app"
    app = make_app(closed)
    assert app.idleproof is not None
    app.flask.register_blueprint(app.idleproof.readiness_blueprint())
    client = app.flask.test_client()
    for path in ("/id", "/readyz"):
        started = time.monotonic()
        answer = client.get(path)
        assert answer.status_code == 503, answer.text
        assert answer.headers["Retry-After"] == str(RETRY_AFTER)
        assert answer.json is not None and answer.json["error"] == "database_unavailable"
        assert time.monotonic() - started < 5
    # Without the extension: Flask's own 500 page.
    naive = make_app(closed, idleproof=False).flask.test_client().get("/id")
    assert naive.status_code == 500 and naive.json is None


@pytest.mark.parametrize("unprotected", ["default", "bind"])
def test_idleproof_after_init_app_on_an_unprotected_url_is_refused(
    unprotected: str, mariadb: LocalMariaDB
) -> None:
    flask = Flask(__name__)
    if unprotected == "default":
        flask.config["SQLALCHEMY_DATABASE_URI"] = mariadb.url
    else:  # the default engine has the plugin in its URL; a MySQL bind does not
        flask.config["SQLALCHEMY_DATABASE_URI"] = f"{mariadb.url}?plugin=idleproof"
        flask.config["SQLALCHEMY_BINDS"] = {"reports": mariadb.url}
    db = SQLAlchemy()
    db.init_app(flask)
    try:
        with pytest.raises(SettingsError) as refused:
            IdleProof(flask, flask_sqlalchemy=db)
    finally:
        with flask.app_context():
            for engine in db.engines.values():
                engine.dispose()
    message = str(refused.value)
    assert "\n" not in message
    assert "before db.init_app(app)" in message
    assert "?plugin=idleproof" in message
    assert mariadb.password not in message


def test_idleproof_after_init_app_on_a_url_with_the_plugin_is_accepted(
    make_app: Callable[..., App], mariadb: LocalMariaDB
) -> None:
    flask = Flask(__name__)
    flask.config["SQLALCHEMY_DATABASE_URI"] = f"{mariadb.url}?plugin=idleproof"
    db = SQLAlchemy()
    db.init_app(flask)
    try:
        IdleProof(flask, flask_sqlalchemy=db)
        with flask.app_context():
            assert is_protected(db.engine)
    finally:
        with flask.app_context():
            db.engine.dispose()


def test_readiness(make_app: Callable[..., App]) -> None:
    app = make_app()
    assert app.idleproof is not None
    app.flask.register_blueprint(app.idleproof.readiness_blueprint())
    answer = app.flask.test_client().get("/readyz")
    assert answer.status_code == 200
    assert answer.json == {"status": "ready"}


def test_a_read_whose_connection_died_is_run_again(make_app: Callable[..., App]) -> None:
    app = make_app()
    answer = app.flask.test_client().get("/read-twice")
    assert answer.status_code == 200, answer.text
    assert answer.json is not None and answer.json["runs"] == 2
    assert app.runs == {"read-twice": 2}
    # The control: the engine is protected (?plugin=idleproof), but no extension retries.
    naive = make_app(
        f"{app.flask.config['SQLALCHEMY_DATABASE_URI']}?plugin=idleproof", idleproof=False
    )
    assert naive.flask.test_client().get("/read-twice").status_code == 500
    assert naive.runs == {"read-twice": 1}


def test_a_write_whose_connection_died_before_commit_is_written_once(
    make_app: Callable[..., App], mariadb: LocalMariaDB
) -> None:
    app = make_app()
    marker = f"before-commit-{uuid.uuid4().hex[:12]}"
    answer = app.flask.test_client().post(f"/write-then-die/{marker}")
    assert answer.status_code == 201, answer.text
    assert app.runs == {"write-then-die": 2}
    assert notes_with(mariadb, marker) == 1  # the first run's INSERT died uncommitted


def test_a_view_that_committed_is_not_run_again(
    make_app: Callable[..., App], mariadb: LocalMariaDB
) -> None:
    app = make_app()
    marker = f"after-commit-{uuid.uuid4().hex[:12]}"
    answer = app.flask.test_client().post(f"/commit-then-die/{marker}")
    assert answer.status_code == 503, answer.text
    assert answer.json is not None and answer.json["error"] == "database_unavailable"
    assert app.runs == {"commit-then-die": 1}
    assert notes_with(mariadb, marker) == 1
