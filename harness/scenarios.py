"""The fault scenarios, shared by the fault tests and the benchmark's fault matrix.

Each scenario warms the pool (both workers hold connections), breaks those connections
the way production does, then sends requests and records every status and duration.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import requests

from harness.faults import StallProxy, vanish
from harness.mariadb import LocalMariaDB

SCENARIOS = ("idle", "kill", "restart", "vanish", "stall", "down")
# Longer than ping_after_idle (1 s) and shorter than pool_recycle (0.9 x 2 s): the pool
# must find out with a bounded ping, not by age, that the peer is gone.
QUIET_AFTER_FAULT = 1.3


@dataclass
class Tally:
    """What a run of requests got: each one's status and seconds."""

    statuses: list[int | str] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)

    @property
    def failures(self) -> int:
        return sum(1 for s in self.statuses if not (isinstance(s, int) and 200 <= s < 300))

    @property
    def slowest(self) -> float:
        return max(self.durations, default=0.0)

    def add(self, other: Tally) -> None:
        self.statuses += other.statuses
        self.durations += other.durations


@dataclass
class Result:
    scenario: str
    after: Tally  # requests once the database is reachable again
    during: Tally = field(default_factory=Tally)  # requests while it is down ("down")


_counter = itertools.count()


def hit(base_url: str, count: int, timeout: float = 3.0, give_up_after: int | None = None) -> Tally:
    """``count`` requests alternating GET / and POST /notes, each on a new connection."""
    out = Tally()
    for i in range(count):
        started = time.monotonic()
        try:
            if i % 2:
                r = requests.post(
                    f"{base_url}/notes", json={"text": f"note {next(_counter)}"}, timeout=timeout
                )
            else:
                r = requests.get(f"{base_url}/", timeout=timeout)
            status: int | str = r.status_code
        except requests.Timeout:
            status = "timeout"
        except requests.ConnectionError:
            status = "connection_error"
        out.statuses.append(status)
        out.durations.append(time.monotonic() - started)
        if give_up_after is not None and out.failures >= give_up_after:
            break
    return out


@dataclass
class FaultContext:
    """What a scenario needs: the server, the app's URL and, for ``stall``, the proxy."""

    db: LocalMariaDB
    app_url: str
    wait_timeout: float
    proxy: StallProxy | None = None


def _idle(ctx: FaultContext) -> Iterator[None]:
    time.sleep(ctx.wait_timeout + 1)
    yield


def _kill(ctx: FaultContext) -> Iterator[None]:
    assert ctx.db.kill_app_connections() > 0, "no app connection to KILL"
    time.sleep(0.2)
    yield


def _restart(ctx: FaultContext) -> Iterator[None]:
    ctx.db.restart()
    yield


def _vanish(ctx: FaultContext) -> Iterator[None]:
    # Through a proxy, the app's connections are the ones to the proxy's port.
    with vanish(ctx.proxy.port if ctx.proxy else ctx.db.port) as gone:
        assert gone > 0, "no app connection to make vanish"
        time.sleep(QUIET_AFTER_FAULT)
        yield


def _stall(ctx: FaultContext) -> Iterator[None]:
    assert ctx.proxy is not None, "the stall scenario needs the app connected through StallProxy"
    assert ctx.proxy.stall() > 0, "no app connection to stall"
    time.sleep(QUIET_AFTER_FAULT)
    yield


FAULTS: dict[str, Callable[[FaultContext], Iterator[None]]] = {
    "idle": _idle,
    "kill": _kill,
    "restart": _restart,
    "vanish": _vanish,
    "stall": _stall,
}


def warm(ctx: FaultContext, timeout: float, workers: int = 2, most: int = 40) -> None:
    """Sequential requests until every Gunicorn worker holds a pooled connection.

    Which worker accepts a request is the kernel's choice, so a fixed number of requests
    may leave one worker without a connection for the fault to break. Sequential, not
    concurrent: the naive setup's workers share one socket and would break on concurrency
    alone (2014), before any fault. It never gets past one connection; the loop is bounded.
    Only connections opened from here on count: a fault before (a partition) leaves the
    server holding connections whose client is long gone.
    """
    since = ctx.db.newest_connection_id()
    sent = 0
    while sent < most:
        hit(ctx.app_url, 4, timeout=timeout)
        sent += 4
        if sent >= 8 and ctx.db.app_connection_count(since) >= workers:
            return


def run_scenario(
    name: str,
    ctx: FaultContext,
    requests_after: int = 6,
    timeout: float = 3.0,
    give_up_after: int | None = None,
) -> Result:
    warm(ctx, timeout)
    if name == "down":
        ctx.db.stop()
        try:
            during = hit(ctx.app_url, 4, timeout=timeout)
        finally:
            ctx.db.start_server()
        return Result(name, hit(ctx.app_url, requests_after, timeout, give_up_after), during)
    with contextlib.contextmanager(FAULTS[name])(ctx):
        after = hit(ctx.app_url, requests_after, timeout, give_up_after)
    return Result(name, after)
