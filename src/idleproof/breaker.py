"""Answer at once while the database host cannot be reached, instead of waiting again.

A host that is down, powered off or cut off (its packets dropped) costs a request
``DB_CONNECT_TIMEOUT`` for every new connection it tries. Once a connect has failed that
way (it timed out, or found no route to the host), the breaker is open: every checkout, in
every Gunicorn worker, fails at once with :class:`DatabaseUnreachable` (the Flask
integration answers 503 JSON with ``Retry-After``; an application's own handler sees a
SQLAlchemy ``OperationalError``), except one checkout at a time, every
:data:`PROBE_INTERVAL`, which tries a new connection: the probe. The first connection that
succeeds closes the breaker for every worker.

A refused connection (the host answers, MariaDB is stopped) fails fast by itself and does
not open the breaker; nor does a connection the network killed under a statement (the
request's retry finds out whether new connections still work).

The state lives in a small anonymous shared mapping made when this module is first
imported: in Gunicorn's master (the kit's config imports it), before any worker is
forked, so that the workers share it. Races between workers cost at most an extra probe.
"""

from __future__ import annotations

import errno
import mmap
import socket
import struct
import threading
import time

import pymysql

# While the breaker is open: a probe gives the host this long to answer a TCP connect (a
# database on the same network answers in milliseconds), and the next one comes this much
# later: the first request after the way is back waits at most about the sum.
PROBE_TIMEOUT = 0.5
PROBE_INTERVAL = 0.25
_NO_ROUTE = {errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN}

_STATE = struct.Struct("dd")  # (opened at, next probe at): monotonic seconds, 0: closed
_shared = mmap.mmap(-1, _STATE.size)


class DatabaseUnreachable(pymysql.err.OperationalError):
    """The database host could not be reached a moment ago: not tried again yet."""


def _read() -> tuple[float, float]:
    opened, probe_at = _STATE.unpack_from(_shared)
    return float(opened), float(probe_at)


def _write(opened: float, probe_at: float) -> None:
    _STATE.pack_into(_shared, 0, opened, probe_at)


def opened_at() -> float:
    """When the breaker opened (time.monotonic(), shared by every process); 0 when closed."""
    return _read()[0]


def check(address: tuple[str, int] | None) -> None:
    """Before a checkout: raise :class:`DatabaseUnreachable` while the breaker is open,
    starting a probe of ``address`` when one is due. Without a TCP address (a unix socket)
    the checkout itself is the probe."""
    opened, probe_at = _read()
    if not opened:
        return
    now = time.monotonic()
    if now >= probe_at:
        _write(opened, now + PROBE_TIMEOUT + PROBE_INTERVAL)  # the others wait for this one
        if address is None:
            return
        threading.Thread(target=_probe, args=(address,), daemon=True).start()
    raise DatabaseUnreachable(
        2003, f"the database host has not answered for {now - opened:.1f} s; probing it"
    )


def _probe(address: tuple[str, int]) -> None:
    try:
        socket.create_connection(address, timeout=PROBE_TIMEOUT).close()
    except OSError:
        opened = _read()[0]
        if opened:
            _write(opened, time.monotonic() + PROBE_INTERVAL)
        return
    connected()


def connect_failed(error: BaseException) -> None:
    """A new connection failed: open the breaker if the host could not be reached (it timed
    out, or there was no route to it); a refusal is fast already."""
    cause = error.__context__  # PyMySQL raises its error while handling the socket's
    if isinstance(cause, TimeoutError) or (isinstance(cause, OSError) and cause.errno in _NO_ROUTE):
        now = time.monotonic()
        _write(_read()[0] or now, now + PROBE_INTERVAL)


def connected() -> None:
    """A new connection succeeded: the way to the database is back."""
    if _read()[0]:
        _write(0.0, 0.0)
