"""A database host that dies or is cut off, against a real MariaDB and real iptables.

Engine-level: what the kernel's verdict on a dead peer (``DB_NET_TIMEOUT``) buys, connection
by connection. The same faults under real Gunicorn and load are in test_hot_faults.py.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import pymysql
import pytest
import sqlalchemy
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from harness.faults import vanish
from harness.gunicorn import migrate
from harness.mariadb import LocalMariaDB, start_mariadb
from idleproof.connection import CommitOutcomeUnknown
from idleproof.guard import CAUSE_GENERATION, CAUSE_NETWORK, Observer
from idleproof.settings import Settings
from tests.helpers import Protected, protected

pytestmark = pytest.mark.slow

NET_TIMEOUT = 2


class Recorder(Observer):
    def __init__(self) -> None:
        self.replaced_causes: list[str] = []
        self.replaced_at = 0.0
        self.lost_causes: list[str] = []
        self.zombies = 0

    def replaced(self, cause: str) -> None:
        self.replaced_causes.append(cause)
        self.replaced_at = time.monotonic()

    def lost(self, cause: str) -> None:
        self.lost_causes.append(cause)

    def zombie_ended(self) -> None:
        self.zombies += 1


def make_db(url: str, **env: str) -> tuple[Protected, Recorder]:
    recorder = Recorder()
    settings = Settings.from_env(
        {
            "DATABASE_URL": url,
            "DB_IDLE_TIMEOUT": "600",
            "DB_NET_TIMEOUT": str(NET_TIMEOUT),
            # Never ping: every death here must be found by the kernel's verdict.
            "DB_PING_AFTER_IDLE": "60",
            **env,
        }
    )
    return protected(settings, recorder), recorder


@pytest.fixture(scope="module")
def mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMariaDB]:
    """A server of its own with MariaDB's idle limits: the session's wait_timeout=2 server
    would end an idle connection itself, and hide what the network does."""
    server = start_mariadb(tmp_path_factory.mktemp("mariadb-dead-peers"))
    try:
        migrate(server.url)
        yield server
    finally:
        server.stop()


@pytest.fixture
def db(mariadb: LocalMariaDB) -> Iterator[tuple[Protected, Recorder]]:
    database, recorder = make_db(mariadb.url, DB_READ_TIMEOUT="15")
    yield database, recorder
    database.engine.dispose()


def thread_id(database: Protected) -> int:
    with database.engine.connect() as conn:
        return int(conn.execute(text("SELECT CONNECTION_ID()")).scalar_one())


def test_every_pooled_socket_watches_for_a_dead_peer(db: tuple[Protected, Recorder]) -> None:
    database, _ = db
    with database.engine.connect() as conn:
        sock = conn.connection.dbapi_connection._sock  # type: ignore[union-attr]
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == NET_TIMEOUT * 1000
        idle = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)
        probes = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT)
        assert idle + probes * sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) <= 2


def test_a_long_query_on_a_live_server_is_never_cut(db: tuple[Protected, Recorder]) -> None:
    database, recorder = db
    started = time.monotonic()
    with database.engine.connect() as conn:
        assert conn.execute(text("SELECT SLEEP(10)")).scalar_one() == 0
    assert 10 <= time.monotonic() - started < 12
    assert recorder.lost_causes == []


def test_an_idle_connection_to_a_vanished_peer_is_replaced_without_a_ping(
    db: tuple[Protected, Recorder], mariadb: LocalMariaDB
) -> None:
    database, recorder = db
    first = thread_id(database)
    with vanish(mariadb.port) as gone:
        assert gone == 1
        time.sleep(NET_TIMEOUT + 1)  # keepalive gives up on the peer meanwhile
        started = time.monotonic()
        assert thread_id(database) != first
        # Found dead at checkout, without a wait; the new connection after it is a
        # connect's, which a loaded machine can stretch past a second.
        assert recorder.replaced_at - started < 1
    assert recorder.replaced_causes == [CAUSE_NETWORK] and database.guard.pings == 0
    # The server never saw the connection go: the replacement ended its thread.
    assert recorder.zombies == 1
    assert not mariadb.execute(f"SELECT ID FROM information_schema.PROCESSLIST WHERE ID={first}")


def test_one_death_replaces_the_rest_of_its_generation(
    db: tuple[Protected, Recorder], mariadb: LocalMariaDB
) -> None:
    database, recorder = db
    with database.engine.connect() as a, database.engine.connect() as b:  # two pooled
        pooled = {
            a.execute(text("SELECT CONNECTION_ID()")).scalar_one(),
            b.execute(text("SELECT CONNECTION_ID()")).scalar_one(),
        }
    with vanish(mariadb.port) as gone:
        assert gone == 2
        started = time.monotonic()
        with pytest.raises(OperationalError), database.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        assert NET_TIMEOUT <= time.monotonic() - started < NET_TIMEOUT + 1
        started = time.monotonic()
        replacement = thread_id(database)  # the other one: replaced, not waited on
        # Condemned at checkout; the new connection after it is a connect's, which a
        # loaded machine can stretch past a second.
        assert recorder.replaced_at - started < 1
    assert replacement not in pooled
    assert recorder.lost_causes == ["network"]  # one wait for the kernel, not two
    assert recorder.replaced_causes == [CAUSE_GENERATION]


def lock_row(database: Protected, row: int) -> sqlalchemy.Connection:
    """A connection holding a transaction with the row's lock, left open."""
    conn = database.engine.connect()
    conn.execute(text("UPDATE notes SET text = 'locked' WHERE id = :id"), {"id": row})
    return conn


def test_a_lost_connections_row_lock_is_released(
    db: tuple[Protected, Recorder], mariadb: LocalMariaDB
) -> None:
    database, recorder = db
    mariadb.execute(f"INSERT INTO `{mariadb.database}`.notes (id, text) VALUES (900001, 'row')")
    holder = lock_row(database, 900001)
    # The network stays cut for the lost connection throughout (new ones get through), as
    # after a crash or a forgotten flow: no retransmitted FIN ever tells the server.
    with vanish(mariadb.port):
        with pytest.raises(OperationalError) as lost:
            holder.commit()  # the COMMIT dies with the network: its outcome is unknown
        assert isinstance(lost.value.orig, CommitOutcomeUnknown)
        holder.close()
        started = time.monotonic()
        with database.engine.begin() as conn:  # a new connection: it ends the zombie first
            conn.execute(text("SET SESSION innodb_lock_wait_timeout = 5"))
            conn.execute(text("UPDATE notes SET text = 'next' WHERE id = 900001"))
        assert time.monotonic() - started < 2
    assert recorder.zombies == 1


def test_without_the_kill_the_lock_waits(mariadb: LocalMariaDB) -> None:
    """The demonstration that the test above can fail: a plain engine waits for the lock."""
    # Its own query bound stands in for the kernel's verdict; longer than the lock wait below.
    engine = sqlalchemy.create_engine(mariadb.url, connect_args={"read_timeout": 4})
    mariadb.execute(f"INSERT INTO `{mariadb.database}`.notes (id, text) VALUES (900002, 'row')")
    holder = engine.connect()
    zombie = holder.execute(text("SELECT CONNECTION_ID()")).scalar_one()
    holder.execute(text("UPDATE notes SET text = 'locked' WHERE id = 900002"))
    try:
        with vanish(mariadb.port):
            with pytest.raises(OperationalError):
                holder.commit()
            holder.close()
            with pytest.raises(OperationalError) as waited, engine.begin() as conn:
                conn.execute(text("SET SESSION innodb_lock_wait_timeout = 2"))
                conn.execute(text("UPDATE notes SET text = 'next' WHERE id = 900002"))
        assert waited.value.orig.args[0] == 1205  # type: ignore[union-attr]  # lock wait
    finally:
        with contextlib.suppress(pymysql.err.OperationalError):  # the test's own cleanup
            mariadb.execute(f"KILL {int(zombie)}")
        engine.dispose()
