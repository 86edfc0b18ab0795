"""The PyMySQL and SQLAlchemy internals app/db.py relies on, pinned.

Neither library promises these; an upgrade that changes one fails here, with a message that
says which piece of app/db.py to revisit, instead of quietly turning a guard off.
"""

from __future__ import annotations

import inspect
import time

import pymysql
import pytest
import sqlalchemy
from sqlalchemy import event, text
from sqlalchemy.events import PoolEvents
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.pool import PoolResetState

from tests.support.servers import LocalMariaDB

PYMYSQL = f"PyMySQL {pymysql.__version__}"
SQLALCHEMY = f"SQLAlchemy {sqlalchemy.__version__}"


def test_pymysql_applies_the_timeout_attributes_at_each_read_and_write() -> None:
    connection = pymysql.connections.Connection
    read = inspect.getsource(connection._read_bytes)
    write = inspect.getsource(connection._write_bytes)
    assert "self._read_timeout" in read, (
        f"{PYMYSQL} no longer reads Connection._read_timeout in _read_bytes: revisit "
        "app/db.py socket_timeouts() and ConnectionGuard.on_connect (ping and query bounds)"
    )
    assert "self._write_timeout" in write, (
        f"{PYMYSQL} no longer reads Connection._write_timeout in _write_bytes: revisit "
        "app/db.py socket_timeouts() and ConnectionGuard.on_connect"
    )


def test_sqlalchemy_reset_event_tells_whether_the_transaction_was_reset() -> None:
    assert "transaction_was_reset" in dir(PoolResetState), (
        f"{SQLALCHEMY}: PoolResetState.transaction_was_reset is gone: revisit app/db.py "
        "end_transactions_once() (the pool may roll back twice, or never)"
    )
    params = list(inspect.signature(PoolEvents.reset).parameters)
    assert params[1:] == ["dbapi_connection", "connection_record", "reset_state"], (
        f"{SQLALCHEMY} changed the pool 'reset' event's arguments ({params}): revisit "
        "app/db.py end_transactions_once()"
    )


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
            f"{PYMYSQL}: Connection._sock is not the live socket: revisit app/db.py "
            "socket_is_quiet() (the zero-round-trip check on checkout)"
        )
        conn._read_timeout = 0.3  # type: ignore[attr-defined]
        started = time.monotonic()
        with pytest.raises(pymysql.err.OperationalError), conn.cursor() as cur:
            cur.execute("SELECT SLEEP(3)")
        took = time.monotonic() - started
        assert took < 2, (
            f"{PYMYSQL}: changing Connection._read_timeout after connect did not bound the "
            f"next read ({took:.1f} s): revisit app/db.py socket_timeouts()"
        )
    finally:
        conn.close()


@pytest.mark.slow
def test_sqlalchemy_pool_events_the_guard_uses(mariadb: LocalMariaDB) -> None:
    engine = sqlalchemy.create_engine(mariadb.url, pool_reset_on_return=None, pool_size=1)
    resets: list[bool] = []
    refused: list[int] = []

    @event.listens_for(engine, "reset")
    def on_reset(dbapi_connection: object, record: object, state: PoolResetState) -> None:
        resets.append(state.transaction_was_reset)

    @event.listens_for(engine, "checkout")
    def on_checkout(dbapi_connection: object, record: object, proxy: object) -> None:
        if len(refused) == 1 and not record.info.get("refused"):  # type: ignore[attr-defined]
            refused.append(2)
            record.info["refused"] = True  # type: ignore[attr-defined]
            raise DisconnectionError("pinned: refuse once")

    try:
        with engine.connect() as conn:
            first = conn.execute(text("SELECT CONNECTION_ID()")).scalar_one()
        assert resets, (
            f"{SQLALCHEMY}: the pool's 'reset' event no longer fires with "
            "pool_reset_on_return=None: revisit app/db.py end_transactions_once() (a "
            "transaction left open would stay open in the pool)"
        )
        refused.append(1)
        with engine.connect() as conn:
            second = conn.execute(text("SELECT CONNECTION_ID()")).scalar_one()
        assert refused == [1, 2] and second != first, (
            f"{SQLALCHEMY}: raising DisconnectionError in a checkout listener no longer "
            "makes the pool connect anew: revisit app/db.py ConnectionGuard.on_checkout"
        )
    finally:
        engine.dispose()
