"""Faults that strike under load, shared by tests/test_hot_faults.py and the bench's matrix.

The connections are busy (used a moment ago, so no ping guards them) when the database
host dies or is cut off, stalls, or fails over to a new primary:

* ``vanish_busy`` - the established flows are dropped (a crashed host, a firewall or NAT
  that failed over and forgot them), new connections get through;
* ``partition`` - every packet to the database port is dropped, new connections too; the
  network heals afterwards;
* ``stall_busy`` - the server's TCP stays alive but nothing answers (through StallProxy);
* ``failover`` - the primary turns read-only and new connections reach a standby (through
  StallProxy acting as the virtual IP that moved).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import requests

from harness.faults import partition, vanish
from harness.mariadb import LocalMariaDB
from harness.scenarios import FaultContext as _Context
from harness.scenarios import Tally, hit, warm

HOT_SCENARIOS = ("vanish_busy", "partition", "stall_busy", "failover")
# The app's settings for these scenarios: the kernel's verdict in 2 s, a query bound of 5 s,
# and pings never, so every death must be found under a statement, as under real load.
NET_TIMEOUT, CONNECT_TIMEOUT, READ_TIMEOUT = 2.0, 2.0, 5.0
HOT_ENV = {
    "DB_NET_TIMEOUT": str(NET_TIMEOUT),
    "DB_CONNECT_TIMEOUT": str(CONNECT_TIMEOUT),
    "DB_READ_TIMEOUT": str(READ_TIMEOUT),
    "DB_WRITE_TIMEOUT": str(READ_TIMEOUT),
    "DB_PING_AFTER_IDLE": "60",
}
# Long enough for any answer the kit gives; a configuration that hangs shows as "timeout".
CLIENT_TIMEOUT = 12.0


@dataclass
class HotContext(_Context):
    """Also, for ``failover``: the standby that the proxy switches new connections to."""

    standby: LocalMariaDB | None = None


@dataclass
class HotResult:
    scenario: str
    during: Tally  # requests while the fault is in force
    after: Tally  # requests once it is over (healed, or failed over)
    healthz: list[int | str] = field(default_factory=list)  # /healthz during a partition
    # partition: requests from several clients at once once the first 503 was answered,
    # and the seconds from the network healing to the first 2xx.
    burst: Tally = field(default_factory=Tally)
    first_2xx_after: float | None = None


def _healthz_while(url: str, stop: threading.Event, statuses: list[int | str]) -> None:
    while not stop.is_set():
        try:
            statuses.append(requests.get(f"{url}/healthz", timeout=CLIENT_TIMEOUT).status_code)
        except requests.RequestException:
            statuses.append("error")
        stop.wait(0.5)


def _vanish_busy(ctx: HotContext, count: int, give_up: int | None) -> HotResult:
    with vanish(ctx.proxy.port if ctx.proxy else ctx.db.port) as gone:
        assert gone > 0, "no app connection to make vanish"
        during = hit(ctx.app_url, count, CLIENT_TIMEOUT, give_up)
    return HotResult("vanish_busy", during, hit(ctx.app_url, 2, CLIENT_TIMEOUT))


def _partition(ctx: HotContext, count: int, give_up: int | None) -> HotResult:
    stop = threading.Event()
    healthz: list[int | str] = []
    prober = threading.Thread(target=_healthz_while, args=(ctx.app_url, stop, healthz))
    with partition(ctx.db.port):
        prober.start()
        try:
            during = hit(ctx.app_url, count, CLIENT_TIMEOUT, give_up)
            burst = Tally()
            if during.statuses and during.statuses[0] == 503:
                # Four clients at once, spread over both workers.
                with ThreadPoolExecutor(4) as pool:
                    for out in pool.map(lambda _: hit(ctx.app_url, 4, CLIENT_TIMEOUT), range(4)):
                        burst.statuses += out.statuses
                        burst.durations += out.durations
        finally:
            stop.set()
            prober.join()
    healed = time.monotonic()
    after = Tally()
    while time.monotonic() - healed < CLIENT_TIMEOUT:
        one = hit(ctx.app_url, 1, CLIENT_TIMEOUT)
        after.statuses += one.statuses
        after.durations += one.durations
        if one.failures == 0:
            break
        time.sleep(0.02)
    first = time.monotonic() - healed if after.failures < len(after.statuses) else None
    return HotResult("partition", during, after, healthz, burst, first)


def _stall_busy(ctx: HotContext, count: int, give_up: int | None) -> HotResult:
    assert ctx.proxy is not None, "stall_busy needs the app connected through StallProxy"
    assert ctx.proxy.stall() > 0, "no app connection to stall"
    during = hit(ctx.app_url, count, CLIENT_TIMEOUT, give_up)
    return HotResult("stall_busy", during, hit(ctx.app_url, 2, CLIENT_TIMEOUT))


def _failover(ctx: HotContext, count: int, give_up: int | None) -> HotResult:
    assert ctx.proxy is not None and ctx.standby is not None, "failover needs a standby"
    ctx.db.execute("SET GLOBAL read_only = 1")
    ctx.proxy.retarget(ctx.standby.port)
    try:
        during = hit(ctx.app_url, count, CLIENT_TIMEOUT, give_up)
    finally:
        ctx.db.execute("SET GLOBAL read_only = 0")
    return HotResult("failover", during, hit(ctx.app_url, 2, CLIENT_TIMEOUT))


_RUN = {
    "vanish_busy": _vanish_busy,
    "partition": _partition,
    "stall_busy": _stall_busy,
    "failover": _failover,
}


def run_hot(
    name: str, ctx: HotContext, count: int = 8, give_up_after: int | None = None
) -> HotResult:
    """Warm both workers' pools, then strike at once: the connections are busy."""
    warm(ctx, CLIENT_TIMEOUT)
    return _RUN[name](ctx, count, give_up_after)
