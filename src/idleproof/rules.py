"""The rules that tie the kit's settings to each other and to Gunicorn, nginx, systemd and the
database server: each rule is one function, written once.

The app calls the settings rules at start-up (:mod:`idleproof.settings`), the Gunicorn config
the Gunicorn one, ``idleproof doctor`` the ones it can observe on a host, and the Ansible
preflight all of them for a whole inventory (the collection's ``check_inventory``). Callers
pass each number as a :class:`Value` that carries the name to show, so one rule speaks the
caller's vocabulary: ``DB_POOL_RECYCLE`` to the app and doctor, ``app_db_pool_recycle`` to
an inventory.

A rule returns ``None`` when it holds, or a :class:`Problem`: what was found and the fix,
one line together. Pure functions of numbers: no I/O, nothing else from the app.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

# Recycle this share of the idle timeout early so clock skew and a slow request never hand
# out a connection the server is about to drop (PythonAnywhere: 300 s -> 270 s).
RECYCLE_SHARE = 0.9
# Seconds nginx and systemd must wait beyond what Gunicorn itself allows: a request parked
# in the socket during a restart, the master's own exit after its workers.
MARGIN = 5


def fmt(value: float) -> str:
    """Whole numbers without a fraction: 300, not 300.0."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


@dataclass(frozen=True)
class Value:
    """A number and the name it goes by where the reader would change it."""

    name: str
    value: float

    def __str__(self) -> str:
        return f"{self.name}={fmt(self.value)}"


@dataclass(frozen=True)
class Problem:
    found: str
    fix: str

    def __str__(self) -> str:
        return f"{self.found}: {self.fix}"


def default_recycle(idle_timeout: float) -> float:
    """The pool recycle age when none is set: 90 % of the idle timeout."""
    recycle = idle_timeout * RECYCLE_SHARE
    # Whole seconds read better in logs; keep fractions only for tiny test timeouts.
    return float(math.floor(recycle)) if recycle >= 10 else round(recycle, 3)


def recycle_below_idle(recycle: Value, idle: Value) -> Problem | None:
    """A pooled connection must be replaced before the path's idle limit drops it."""
    if recycle.value < idle.value:
        return None
    return Problem(
        f"{recycle} must be below {idle}",
        f"lower {recycle.name} or unset it to use {fmt(default_recycle(idle.value))}",
    )


def ping_within_read(ping: Value, read: Value) -> Problem | None:
    """A health ping may not be allowed longer than a query."""
    if ping.value <= read.value:
        return None
    return Problem(f"{ping} must not exceed {read}", f"lower {ping.name}")


def net_below_read(net: Value, read: Value) -> Problem | None:
    """A dead peer must be declared dead before a slow query would time out."""
    if net.value < read.value:
        return None
    return Problem(f"{net} must be below {read}", f"lower {net.name} or raise {read.name}")


@dataclass(frozen=True)
class Waits:
    """Every bound on how long one request can wait for the database."""

    pool: Value  # a free pooled connection
    connect: Value  # a new connection: TCP connect and handshake
    ping: Value  # the ping of a connection that sat idle
    net: Value  # a peer that died under a query
    read: Value  # a query's answer
    write: Value  # sending a query

    @property
    def longest(self) -> float:
        """The worst path: wait for a connection, its ping fails, connect anew, the peer
        dies under the query; the one retry waits for a connection, connects, and runs
        the query to its bound."""
        p, c = self.pool.value, self.connect.value
        return 2 * p + self.ping.value + 2 * c + self.net.value + self.query.value

    @property
    def query(self) -> Value:
        """The longer of the two query bounds."""
        return max(self.read, self.write, key=lambda v: v.value)

    def __str__(self) -> str:
        parts = f"2 x {self.pool} + {self.ping} + 2 x {self.connect} + {self.net}"
        return f"{parts} + {self.query}"


def gunicorn_outlasts_database(timeout: Value, waits: Waits) -> Problem | None:
    """A worker killed while it waits on the database loses the request without an answer:
    every database bound must run out first, so the app answers (503) instead."""
    if timeout.value > waits.longest:
        return None
    return Problem(
        f"{timeout} must exceed the longest a request can wait on the database, "
        f"{fmt(waits.longest)} s ({waits})",
        f"raise {timeout.name} to {fmt(math.floor(waits.longest) + 1)} or lower {waits.query.name}",
    )


def server_outlasts_recycle(wait_timeout: Value, recycle: Value, idle: Value) -> Problem | None:
    """The server must keep an idle connection longer than the pool keeps it."""
    if recycle.value < wait_timeout.value:
        return None
    return Problem(
        f"{recycle} is not below the server's {wait_timeout}: the server drops pooled "
        "connections before the pool recycles them",
        f"set {idle.name}={fmt(wait_timeout.value)} ({recycle.name} then defaults below it) "
        f"or raise the server's {wait_timeout.name} above {fmt(recycle.value)}",
    )


@dataclass(frozen=True)
class Pools:
    """What one app host can open: workers x (pool size + overflow)."""

    workers: Value
    size: Value
    overflow: Value

    @property
    def connections(self) -> int:
        return int(self.workers.value * (self.size.value + self.overflow.value))


def enough_connections(
    max_connections: Value, hosts: Sequence[Pools], headroom: int
) -> Problem | None:
    """The server must accept every connection every app host may open, plus headroom."""
    needed = sum(h.connections for h in hosts) + headroom
    if max_connections.value >= needed:
        return None
    some = hosts[0]
    return Problem(
        f"{max_connections} is below what the app hosts can open: {len(hosts)} app host(s) "
        f"x workers x (pool size + overflow) + {headroom} headroom = {needed}",
        f"raise {max_connections.name} to at least {needed} or lower {some.workers.name}, "
        f"{some.size.name} or {some.overflow.name}",
    )


def proxy_outlasts_gunicorn(proxy_read: Value, timeout: Value, graceful: Value) -> Problem | None:
    """nginx must wait for a slow request (Gunicorn's timeout) and for a request parked in
    the socket while Gunicorn restarts (its graceful timeout), or it answers 504 first."""
    if proxy_read.value > max(timeout.value, graceful.value):
        return None
    return Problem(
        f"{proxy_read} must exceed {timeout} and {graceful}: nginx would answer 504 for "
        "requests Gunicorn still lets run",
        f"raise {proxy_read.name} to {fmt(max(timeout.value, graceful.value) + MARGIN)}",
    )


def stop_outlasts_graceful(stop: Value, graceful: Value) -> Problem | None:
    """systemd must not kill Gunicorn while its workers finish in-flight requests."""
    if stop.value > graceful.value:
        return None
    return Problem(
        f"{stop} is not above {graceful}: a stop kills in-flight requests",
        f"set {stop.name} to {fmt(graceful.value + MARGIN)}",
    )
