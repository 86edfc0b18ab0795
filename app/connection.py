"""The DBAPI connection the engine hands out: PyMySQL in autocommit, with a transaction only
when a request writes, and a socket that notices a dead peer.

Why autocommit. A request that only reads needs no transaction: in autocommit each SELECT is
its own, so no snapshot and no metadata lock outlive the statement, and nothing has to be
ended afterwards. The transactional alternative pays a second round trip (``ROLLBACK``) on
every read, and skipping that round trip would leave the snapshot and the metadata lock
held while the connection idles in the pool (stale reads, blocked migrations). This is the
model Django uses by default.

Writes stay transactional: :func:`begin_before_writes` sends ``BEGIN`` before the first
statement that is not a plain read (INSERT, UPDATE, DELETE, DDL, ``SELECT ... FOR UPDATE``),
so everything from the first write to ``session.commit()`` is one transaction, as the ORM
expects. Reads before the first write each see the latest committed data, as in Django.
A view that needs several reads from one snapshot calls ``Database.start_transaction()``.

``commit()`` and ``rollback()`` cost a round trip only when a transaction is open, which the
server reports in every reply (the protocol's status flags): ending a read-only request,
or returning a connection to the pool, is free.
"""

from __future__ import annotations

import re
import socket
from typing import Any

import pymysql
from pymysql.constants import SERVER_STATUS

# Statements that read without locking: they run outside a transaction.
_PLAIN_READ = re.compile(
    r"\s*(?:/\*.*?\*/\s*)*(SELECT|SHOW|DESCRIBE|DESC|EXPLAIN|SET)\b", re.I | re.S
)
_LOCKING_READ = re.compile(r"\bFOR\s+(UPDATE|SHARE)\b|\bLOCK\s+IN\s+SHARE\s+MODE\b", re.I)


def is_plain_read(statement: str) -> bool:
    """True for a statement that may run outside a transaction (a non-locking read)."""
    return bool(_PLAIN_READ.match(statement)) and not _LOCKING_READ.search(statement)


class KitConnection(pymysql.connections.Connection):
    """A PyMySQL connection that ends a transaction only when one is open."""

    # Set by PyMySQL from every reply (not in its type stubs).
    server_status: int | None

    @property
    def in_transaction(self) -> bool:
        """Whether the server may hold a transaction for us, from the last reply's status.

        Outside autocommit (someone ran ``SET autocommit=0``) MariaDB does not flag the
        implicit transaction a SELECT opens, so then the answer is always yes.
        """
        status = self.server_status or 0
        autocommit = status & SERVER_STATUS.SERVER_STATUS_AUTOCOMMIT
        return not autocommit or bool(status & SERVER_STATUS.SERVER_STATUS_IN_TRANS)

    def commit(self) -> None:
        if self.in_transaction:
            super().commit()

    def rollback(self) -> None:
        if self.in_transaction:
            super().rollback()


def begin_before_writes(
    conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
) -> None:
    """``before_cursor_execute``: open the transaction right before the first write."""
    dbapi_connection = cursor.connection
    if not dbapi_connection.in_transaction and not is_plain_read(statement):
        dbapi_connection.begin()


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
