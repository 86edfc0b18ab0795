"""The PyMySQL and SQLAlchemy internals app/db.py relies on, pinned.

Neither library promises these; an upgrade that changes one fails here, with a message that
says which piece of app/db.py to revisit, instead of quietly turning a guard off.
"""

from __future__ import annotations

import inspect
import time
from typing import Any

import pymysql
import pytest
import sqlalchemy
from sqlalchemy import event, text
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.pool import PoolResetState

from harness.mariadb import LocalMariaDB
from idleproof.connection import KitConnection

PYMYSQL = f"PyMySQL {pymysql.__version__}"
SQLALCHEMY = f"SQLAlchemy {sqlalchemy.__version__}"


def test_sqlalchemy_dispose_can_leave_the_parents_connections_open() -> None:
    assert "close" in inspect.signature(sqlalchemy.Engine.dispose).parameters, (
        f"{SQLALCHEMY}: Engine.dispose() lost close=False: revisit app/db.py "
        "Database.dispose_after_fork() (the post_fork hook)"
    )


@pytest.mark.slow
def test_pymysql_socket_and_timeouts_on_a_live_connection(mariadb: LocalMariaDB) -> None:
    conn = pymysql.connect(unix_socket=str(mariadb.socket_path), user="root", read_timeout=30)
    try:
        sock = getattr(conn, "_sock", None)
        assert sock is not None and sock.fileno() >= 0, (
            f"{PYMYSQL}: Connection._sock is not the live socket: revisit "
            "app/connection.py idle_socket_fault() (the zero-round-trip check on checkout) "
            "and watch_for_dead_peer()"
        )
        conn._read_timeout = 0.3  # type: ignore[attr-defined]
        started = time.monotonic()
        with pytest.raises(pymysql.err.OperationalError), conn.cursor() as cur:
            cur.execute("SELECT SLEEP(3)")
        took = time.monotonic() - started
        assert took < 2, (
            f"{PYMYSQL}: changing Connection._read_timeout after connect did not bound the "
            f"next read ({took:.1f} s): revisit app/connection.py socket_timeouts()"
        )
    finally:
        conn.close()


@pytest.mark.slow
def test_pymysql_reports_an_open_transaction_in_every_reply(mariadb: LocalMariaDB) -> None:
    conn = KitConnection(unix_socket=str(mariadb.socket_path), user="root", autocommit=True)
    try:
        message = (
            f"{PYMYSQL}: Connection.server_status no longer follows the server's transaction "
            "flags: revisit app/connection.py KitConnection.in_transaction (a read would pay "
            "a ROLLBACK, or a write's transaction would never end)"
        )
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            assert not conn.in_transaction, message
            conn.begin()
            assert conn.in_transaction, message
            cur.execute("SELECT 1")
            assert conn.in_transaction, message
            conn.commit()
            assert not conn.in_transaction, message
    finally:
        conn.close()


@pytest.mark.slow
def test_sqlalchemy_hooks_the_engine_uses(mariadb: LocalMariaDB) -> None:
    engine = sqlalchemy.create_engine(mariadb.url, pool_size=1, connect_args={"autocommit": True})
    made: list[KitConnection] = []
    cursors: list[object] = []
    rollbacks: list[bool] = []
    refused: list[int] = []

    @event.listens_for(engine, "do_connect")
    def connect(dialect: object, record: object, cargs: Any, cparams: Any) -> KitConnection:
        made.append(KitConnection(*cargs, **cparams))
        return made[-1]

    @event.listens_for(engine, "before_cursor_execute")
    def before(conn: object, cursor: Any, *args: object) -> None:
        cursors.append(cursor.connection)

    @event.listens_for(engine, "reset")
    def on_reset(dbapi_connection: object, record: object, state: PoolResetState) -> None:
        rollbacks.append(True)

    @event.listens_for(engine, "checkout")
    def on_checkout(dbapi_connection: object, record: Any, proxy: object) -> None:
        if len(refused) == 1 and not record.info.get("refused"):
            refused.append(2)
            record.info["refused"] = True
            raise DisconnectionError("pinned: refuse once")

    try:
        with engine.connect() as conn:
            first = conn.execute(text("SELECT CONNECTION_ID()")).scalar_one()
        assert made and cursors[-1] is made[-1], (
            f"{SQLALCHEMY}: the connection a 'do_connect' listener returns is no longer the "
            "one cursors run on: revisit app/db.py create_engine() and app/connection.py"
        )
        assert rollbacks, (
            f"{SQLALCHEMY}: the pool no longer resets (rolls back) a returned connection: "
            "revisit app/connection.py (a transaction left open would stay open)"
        )
        refused.append(1)
        with engine.connect() as conn:
            second = conn.execute(text("SELECT CONNECTION_ID()")).scalar_one()
        assert refused == [1, 2] and second != first, (
            f"{SQLALCHEMY}: raising DisconnectionError in a checkout listener no longer "
            "makes the pool connect anew: revisit app/guard.py ConnectionGuard.on_checkout"
        )
    finally:
        engine.dispose()
