"""The DBAPI connection the engine hands out: PyMySQL in autocommit, with a transaction only
when a request writes, and a socket that notices a dead peer.

Why autocommit. A request that only reads needs no transaction: in autocommit each SELECT is
its own, so no snapshot and no metadata lock outlive the statement, and nothing has to be
ended afterwards. The transactional alternative pays a second round trip (``ROLLBACK``) on
every read, and skipping that round trip would leave the snapshot and the metadata lock
held while the connection idles in the pool (stale reads, blocked migrations). This is the
model Django uses by default.

Writes stay transactional: in autocommit mode :class:`KitConnection` opens a transaction
with the first statement that is not a plain read (INSERT, UPDATE, DELETE, DDL,
``SELECT ... FOR UPDATE``), so everything from the first write to ``session.commit()`` is one
transaction, as the ORM expects. Its ``BEGIN`` costs no round trip of its own: it goes out
in the same write as that statement, and both answers are read after. Reads before the
first write each see the latest committed data, as in Django. A view that needs several
reads from one snapshot calls ``IdleProof.start_transaction()``.

``commit()`` and ``rollback()`` cost a round trip only when a transaction is open, which the
server reports in every reply (the protocol's status flags): ending a read-only request,
or returning a connection to the pool, is free.
"""

from __future__ import annotations

import errno
import re
import select
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import pymysql
from pymysql.constants import COMMAND, SERVER_STATUS

# Statements that read without locking: they run outside a transaction.
_PLAIN_READ = re.compile(
    r"\s*(?:/\*.*?\*/\s*)*(SELECT|SHOW|DESCRIBE|DESC|EXPLAIN|SET)\b", re.I | re.S
)
_LOCKING_READ = re.compile(r"\bFOR\s+(UPDATE|SHARE)\b|\bLOCK\s+IN\s+SHARE\s+MODE\b", re.I)

# Whether a COMMIT was sent in this context (a request: idleproof.flask resets it): from
# then on the request may have changed the database, and must not run again.
COMMITTED: ContextVar[bool] = ContextVar("idleproof_committed", default=False)


def is_plain_read(statement: str) -> bool:
    """True for a statement that may run outside a transaction (a non-locking read)."""
    return bool(_PLAIN_READ.match(statement)) and not _LOCKING_READ.search(statement)


class CommitOutcomeUnknown(pymysql.err.OperationalError):
    """The connection died while COMMIT was on its way: the transaction may or may not have
    committed, so the request must not be retried (it could run twice)."""


class KitConnection(pymysql.connections.Connection):
    """A PyMySQL connection that ends a transaction only when one is open, and remembers
    who it is on the server (to end its thread there if it is lost)."""

    # Set by PyMySQL from every reply (not in its type stubs).
    server_status: int | None
    # From the server's greeting: our thread on the server (not in PyMySQL's type stubs).
    server_thread_id: tuple[int]
    # "ip:port" of our end, as the server's processlist shows it; "" over a unix socket.
    client_address: str = ""
    # In autocommit mode, open a transaction with the first write (off: writes autocommit,
    # for a measurement of what the transaction costs).
    opens_transactions: bool = True

    if TYPE_CHECKING:  # PyMySQL's own, not in its type stubs

        def _execute_command(self, command: int, sql: bytes) -> None: ...
        def _read_query_result(self, unbuffered: bool = False) -> int: ...
        def _force_close(self) -> None: ...

        _next_seq_id: int
        _affected_rows: int

    def remember_address(self) -> None:
        sock = getattr(self, "_sock", None)
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            host, port = sock.getsockname()[:2]
            self.client_address = f"{host}:{port}"

    @property
    def in_transaction(self) -> bool:
        """Whether the server may hold a transaction for us, from the last reply's status.

        Outside autocommit (someone ran ``SET autocommit=0``) MariaDB does not flag the
        implicit transaction a SELECT opens, so then the answer is always yes.
        """
        status = self.server_status or 0
        autocommit = status & SERVER_STATUS.SERVER_STATUS_AUTOCOMMIT
        return not autocommit or bool(status & SERVER_STATUS.SERVER_STATUS_IN_TRANS)

    def query(self, sql: str | bytes, unbuffered: bool = False) -> int:
        """PyMySQL's, with the ``BEGIN`` of a write pipelined in front of it (autocommit mode:
        the first statement that is not a plain read opens the transaction)."""
        if not self._opens_transaction(sql):
            return int(super().query(sql, unbuffered))
        if isinstance(sql, str):
            sql = sql.encode(self.encoding)
        # Both commands go out before either answer is read: one round trip for two.
        self._execute_command(COMMAND.COM_QUERY, b"BEGIN")
        self._execute_command(COMMAND.COM_QUERY, sql)
        try:
            self._read_query_result()  # BEGIN's OK
        except pymysql.err.MySQLError:
            # The statement's answer is still on the wire: this connection cannot go on.
            self._force_close()
            raise
        self._next_seq_id = 1  # the statement's answer numbers its packets from 1 again
        self._affected_rows = self._read_query_result(unbuffered=unbuffered)
        return int(self._affected_rows)

    def _opens_transaction(self, sql: str | bytes) -> bool:
        status = self.server_status or 0
        if not (self.opens_transactions and status & SERVER_STATUS.SERVER_STATUS_AUTOCOMMIT):
            return False
        if self.in_transaction:
            return False
        return not is_plain_read(sql if isinstance(sql, str) else sql.decode(errors="replace"))

    def commit(self) -> None:
        if not self.in_transaction:
            return
        COMMITTED.set(True)
        try:
            super().commit()
        except (pymysql.err.OperationalError, pymysql.err.InterfaceError) as exc:
            if exc.args and exc.args[0] not in LOST:
                raise  # the server answered: it did not commit
            raise CommitOutcomeUnknown(
                2013,  # CR_SERVER_LOST: SQLAlchemy invalidates the connection
                f"lost the connection during COMMIT, which may or may not have committed ({exc})",
            ) from exc

    def rollback(self) -> None:
        if self.in_transaction:
            super().rollback()


def tls_args(ca: str) -> dict[str, Any]:
    """PyMySQL's arguments for TLS that verifies the server's certificate and its name.

    PyMySQL refuses a server that offers no TLS when these are set, rather than going on in
    plaintext: a test pins that.
    """
    return {"ssl_ca": ca, "ssl_verify_cert": True, "ssl_verify_identity": True} if ca else {}


def watch_for_dead_peer(sock: socket.socket | None, net_timeout: float) -> None:
    """Let the kernel declare the peer dead after ``net_timeout`` seconds of silence.

    ``TCP_USER_TIMEOUT``: data we sent stays unacknowledged that long (a host that crashed,
    a firewall or NAT that forgot the flow). Keepalive probes: while we wait for a reply, the
    peer's kernel must answer a probe every second after ``net_timeout / 2`` of silence. A
    live server that is merely slow keeps acknowledging both, so a long query is never cut;
    only ``DB_READ_TIMEOUT`` bounds that. Unix sockets have no peer to lose.
    """
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    idle = max(1, int(net_timeout / 2))
    probes = max(1, int(net_timeout - idle))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, probes)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(net_timeout * 1000))


_POLL_EVENTS = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP


def idle_socket_fault(dbapi_connection: Any) -> str | None:
    """What happened to an idle connection's socket: None when nothing did.

    Between requests the server has nothing to say; readable data, EOF or an error means it
    closed the connection (MariaDB sends a FIN, MySQL 8 first sends error 4031): CLOSED. An
    ETIMEDOUT pending on the socket means the kernel's keepalive gave up on the peer:
    NETWORK. A zero-timeout poll sees either locally, without a round trip, for plain and
    TLS sockets.
    """
    sock = getattr(dbapi_connection, "_sock", None)
    if sock is None:
        return CLOSED
    try:
        poller = select.poll()
        poller.register(sock.fileno(), _POLL_EVENTS)
        if not poller.poll(0):
            return None
        pending = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    except (OSError, ValueError):
        return CLOSED
    return NETWORK if pending in _NETWORK_ERRNOS else CLOSED


@contextmanager
def socket_timeouts(dbapi_connection: Any, seconds: float) -> Iterator[None]:
    """Temporarily bound PyMySQL's socket reads and writes to ``seconds``."""
    saved = dbapi_connection._read_timeout, dbapi_connection._write_timeout
    dbapi_connection._read_timeout = dbapi_connection._write_timeout = seconds
    try:
        yield
    finally:
        dbapi_connection._read_timeout, dbapi_connection._write_timeout = saved


# How a connection died under a statement, read from the error PyMySQL raised.
CLOSED = "closed_by_server"  # EOF or reset: wait_timeout, KILL, a restart
NETWORK = "network"  # the kernel gave up on the peer: crashed host, forgotten flow
QUERY_TIMEOUT = "query_timeout"  # DB_READ/WRITE_TIMEOUT ran out: a slow query, a stalled peer
FAILOVER = "failover"  # the server turned read-only or is shutting down
# MySQL client errors that mean the connection is gone (CR_SERVER_GONE_ERROR, _LOST, ...);
# 0 is PyMySQL's "(0, '')" on a socket it already closed.
LOST = {0, 2006, 2013, 2014, 2045, 2055, 4031}
# Read-only after a switchover (ER_OPTION_PREVENTS_STATEMENT with --read-only,
# ER_READ_ONLY_MODE) and ER_SERVER_SHUTDOWN: this server will not take our writes.
FAILOVER_CODES = {1290, 1836, 1053}
_NETWORK_ERRNOS = {errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN}


def death_cause(error: BaseException, disconnect: bool) -> str | None:
    """Why a statement's connection is no longer usable; None when it still is.

    ``disconnect`` is SQLAlchemy's verdict on the error. PyMySQL raises its error while
    handling the socket's own, which stays attached as ``__context__``: a timeout with no
    errno is our own query bound, ETIMEDOUT and the unreachables are the kernel's verdict
    on the peer.
    """
    code = error.args[0] if error.args else None
    if code in FAILOVER_CODES:
        return FAILOVER
    if not disconnect:
        return None
    socket_error = error.__context__
    while socket_error is not None and not isinstance(socket_error, OSError):
        socket_error = socket_error.__context__  # through CommitOutcomeUnknown
    if isinstance(socket_error, TimeoutError) and socket_error.errno is None:
        return QUERY_TIMEOUT
    if isinstance(socket_error, OSError) and socket_error.errno in _NETWORK_ERRNOS:
        return NETWORK
    return CLOSED
