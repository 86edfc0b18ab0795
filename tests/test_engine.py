"""The engine guard against a real MariaDB: what it costs, and what it catches."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from harness.faults import StallProxy
from harness.mariadb import LocalMariaDB
from idleproof.flask import get_db
from idleproof.guard import CAUSE_CLOSED, CAUSE_PING, Observer
from idleproof.settings import Settings
from tests.helpers import Protected, protected

pytestmark = pytest.mark.slow


class Replaced(Observer, list[str]):
    """Records the causes of replaced connections, and when the last was found dead."""

    at = 0.0

    def replaced(self, cause: str) -> None:
        self.append(cause)
        self.at = time.monotonic()


def make_db(url: str, **env: str) -> tuple[Protected, Replaced]:
    replaced = Replaced()
    settings = Settings.from_env({"DATABASE_URL": url, "DB_IDLE_TIMEOUT": "60", **env})
    return protected(settings, replaced), replaced


@pytest.fixture
def db(mariadb: LocalMariaDB) -> Iterator[tuple[Protected, list[str]]]:
    database, replaced = make_db(mariadb.url)
    yield database, replaced
    database.engine.dispose()


def thread_id(database: Protected) -> int:
    with database.engine.connect() as conn:
        return int(conn.execute(text("SELECT CONNECTION_ID()")).scalar_one())


def test_busy_connections_are_never_pinged(db: tuple[Protected, list[str]]) -> None:
    database, replaced = db
    first = thread_id(database)
    for _ in range(200):
        assert thread_id(database) == first
    assert database.guard.pings == 0 and replaced == []


def test_a_connection_idle_past_ping_after_idle_is_pinged_once(
    db: tuple[Protected, list[str]],
) -> None:
    database, replaced = db
    first = thread_id(database)
    time.sleep(database.settings.ping_after_idle + 0.2)
    assert thread_id(database) == first
    assert database.guard.pings == 1 and replaced == []


def test_a_killed_connection_is_seen_without_a_round_trip(
    db: tuple[Protected, list[str]], mariadb: LocalMariaDB
) -> None:
    database, replaced = db
    first = thread_id(database)
    mariadb.execute(f"KILL {first}")
    time.sleep(0.1)
    assert thread_id(database) != first
    assert replaced == [CAUSE_CLOSED] and database.guard.pings == 0


def test_a_connection_idle_past_recycle_is_replaced_without_a_ping(mariadb: LocalMariaDB) -> None:
    database, replaced = make_db(mariadb.url, DB_IDLE_TIMEOUT="2", DB_PING_AFTER_IDLE="5")
    first = thread_id(database)
    time.sleep(database.settings.pool_recycle + 0.1)
    assert thread_id(database) != first
    # SQLAlchemy's pool_recycle replaced it: no ping, and not counted as a dead connection.
    assert replaced == [] and database.guard.pings == 0
    database.engine.dispose()


def test_a_stalled_peer_costs_one_ping_timeout(
    stall_proxy: StallProxy, mariadb: LocalMariaDB
) -> None:
    url = mariadb.url.replace(f":{mariadb.port}/", f":{stall_proxy.port}/")
    database, replaced = make_db(url)
    thread_id(database)
    stall_proxy.stall()
    time.sleep(database.settings.ping_after_idle + 0.1)
    pings = database.guard.pings
    started = time.monotonic()
    thread_id(database)
    # What the stall costs: the ping's wait until the connection is condemned. The new
    # connection after it is a connect's (bounded by connect_timeout), as for any other.
    took = replaced.at - started
    assert replaced == [CAUSE_PING] and database.guard.pings == pings + 1
    assert database.settings.ping_timeout <= took < database.settings.ping_timeout + 1
    database.engine.dispose()


def test_a_connection_inherited_across_fork_is_left_to_the_parent(
    db: tuple[Protected, list[str]],
) -> None:
    """Even without the post_fork dispose, a child never uses the parent's socket."""
    database, _ = db
    parent_thread = thread_id(database)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report its connection id, never touch the parent's socket
        try:
            os.write(write, str(thread_id(database)).encode())
        finally:
            os._exit(0)
    os.close(write)
    child_thread = int(os.read(read, 32))
    os.waitpid(pid, 0)
    assert child_thread != parent_thread
    assert thread_id(database) == parent_thread  # the parent's connection still works


def test_dispose_after_fork_leaves_the_parent_connections_open(
    db: tuple[Protected, list[str]],
) -> None:
    database, _ = db
    parent_thread = thread_id(database)
    pid = os.fork()
    if pid == 0:
        database.dispose_after_fork()
        os._exit(0)
    os.waitpid(pid, 0)
    assert thread_id(database) == parent_thread


def global_status(mariadb: LocalMariaDB, name: str) -> int:
    rows = mariadb.execute(f"SHOW GLOBAL STATUS LIKE '{name}'")
    return int(str(rows[0][1]))


def test_a_read_is_one_round_trip(mariadb: LocalMariaDB) -> None:
    """GET / sends its SELECT and nothing else: no BEGIN, no ROLLBACK, no COMMIT."""
    from app import create_app

    app = create_app(Settings.from_env({"DATABASE_URL": mariadb.url, "DB_IDLE_TIMEOUT": "60"}))
    client = app.test_client()
    client.get("/")  # connect first: the dialect's own set-up statements are not counted
    names = ("Com_select", "Com_begin", "Com_commit", "Com_rollback")
    before = {name: global_status(mariadb, name) for name in names}
    for _ in range(20):
        assert client.get("/").status_code == 200
    sent = {name: global_status(mariadb, name) - before[name] for name in names}
    assert sent == {"Com_select": 20, "Com_begin": 0, "Com_commit": 0, "Com_rollback": 0}
    get_db(app).engine.dispose()  # type: ignore[union-attr]


def test_a_write_is_one_transaction(mariadb: LocalMariaDB) -> None:
    """POST /notes: BEGIN before the INSERT, then COMMIT; nothing is left to roll back."""
    from app import create_app

    app = create_app(Settings.from_env({"DATABASE_URL": mariadb.url, "DB_IDLE_TIMEOUT": "60"}))
    client = app.test_client()
    client.get("/")
    names = ("Com_begin", "Com_insert", "Com_commit", "Com_rollback")
    before = {name: global_status(mariadb, name) for name in names}
    for i in range(10):
        assert client.post("/notes", json={"text": f"tx {i}"}).status_code == 201
    sent = {name: global_status(mariadb, name) - before[name] for name in names}
    assert sent == {"Com_begin": 10, "Com_insert": 10, "Com_commit": 10, "Com_rollback": 0}
    get_db(app).engine.dispose()  # type: ignore[union-attr]


def test_a_transaction_left_open_is_still_rolled_back_on_return(mariadb: LocalMariaDB) -> None:
    database, _ = make_db(mariadb.url, DB_POOL_SIZE="1", DB_MAX_OVERFLOW="0")
    with database.engine.connect() as conn:  # a read: no transaction on the server
        conn.execute(text("SELECT 1"))
    raw = database.engine.raw_connection()  # the same pooled connection, SQLAlchemy not watching
    cur = raw.cursor()
    cur.execute("BEGIN")
    cur.execute("INSERT INTO notes (text) VALUES ('left open')")
    cur.close()
    raw.close()  # back to the pool with the INSERT uncommitted: the reset must roll it back
    with database.engine.connect() as conn:
        assert conn.execute(text("SELECT @@in_transaction")).scalar_one() == 0
        left = conn.execute(text("SELECT COUNT(*) FROM notes WHERE text = 'left open'"))
        assert left.scalar_one() == 0
    database.engine.dispose()
