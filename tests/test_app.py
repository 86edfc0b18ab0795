"""The app's HTTP contract against a real MariaDB, in-process (Flask's test client)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from app import create_app
from app.models import NOTE_MAX_LENGTH
from harness import free_port
from harness.mariadb import LocalMariaDB
from idleproof.flask import get_db
from idleproof.settings import Settings
from tests.helpers import WAIT_TIMEOUT

pytestmark = pytest.mark.slow


@pytest.fixture
def app(mariadb: LocalMariaDB) -> Iterator[Flask]:
    settings = Settings.from_env(
        {"DATABASE_URL": mariadb.url, "DB_IDLE_TIMEOUT": str(WAIT_TIMEOUT)}
    )
    app = create_app(settings)
    yield app
    engine = get_db(app).engine
    assert engine is not None
    engine.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def test_health_and_readiness(client: FlaskClient) -> None:
    assert client.get("/healthz").json == {"status": "ok"}
    assert client.get("/readyz").json == {"status": "ready"}


def test_post_then_read_back(client: FlaskClient) -> None:
    created = client.post("/notes", json={"text": "written by test_app"})
    assert created.status_code == 201
    note = created.json
    assert note is not None and note["text"] == "written by test_app" and note["id"] > 0
    listed = client.get("/").json
    assert listed is not None and listed["notes"][0]["id"] == note["id"]


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        ("not json", "application/json", "send a JSON object"),
        ("[1, 2]", "application/json", "send a JSON object"),
        ("{}", "application/json", '"text" is required'),
        ('{"text": ""}', "application/json", '"text" is required'),
        ('{"text": 5}', "application/json", '"text" is required'),
        ('{"text": "' + "x" * (NOTE_MAX_LENGTH + 1) + '"}', "application/json", "longer than"),
        ('{"text": "hi"}', "text/plain", "send a JSON object"),
    ],
)
def test_bad_notes_get_400_with_a_message(
    client: FlaskClient, body: str, content_type: str, message: str
) -> None:
    response = client.post("/notes", data=body, content_type=content_type)
    assert response.status_code == 400
    assert response.json is not None and message in response.json["message"]


def test_unknown_routes_and_methods_answer_json(client: FlaskClient) -> None:
    missing = client.get("/nope")
    assert missing.status_code == 404 and missing.json is not None
    wrong = client.delete("/notes")
    assert wrong.status_code == 405 and wrong.json is not None


def test_database_unreachable_is_a_fast_json_503_with_retry_after() -> None:
    # A port nobody listens on: what the app sees while MariaDB is down.
    url = f"mysql+pymysql://app:x@127.0.0.1:{free_port()}/app"
    client = create_app(Settings.from_env({"DATABASE_URL": url})).test_client()
    for path in ("/", "/readyz"):
        response = client.get(path, headers={"X-Request-Id": f"id-{len(path)}"})
        assert response.status_code == 503
        assert response.headers["Retry-After"].isdigit()
        assert response.json == {
            "error": "database_unavailable",
            "message": "the database is not reachable",
            "request_id": f"id-{len(path)}",
        }
    assert client.post("/notes", json={"text": "lost?"}).status_code == 503
    assert client.get("/healthz").status_code == 200


def test_a_failed_request_does_not_poison_the_next(app: Flask, mariadb: LocalMariaDB) -> None:
    """The incident's second act: one lost connection, then PendingRollbackError forever."""

    def lose_connection_mid_transaction() -> str:
        session = get_db(app).session
        thread_id = session.execute(text("SELECT CONNECTION_ID()")).scalar_one()
        mariadb.execute(f"KILL {int(thread_id)}")
        session.execute(text("SELECT 1"))  # 2013: lost connection, inside a transaction
        return "unreachable"

    app.add_url_rule("/lose", view_func=lose_connection_mid_transaction)
    client = app.test_client()
    assert client.get("/lose").status_code == 503
    assert [client.get("/").status_code for _ in range(5)] == [200] * 5
