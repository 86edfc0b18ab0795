"""Faults that strike under load, for real: the kit beside the naive setup.

Real MariaDB, real Gunicorn (2 workers, preload_app) and real iptables; the connections are
busy (used a moment before, so no ping guards them) when the database host dies or is cut
off, stalls or fails over (harness/hot.py). The kit must answer within its bounds; the
naive configuration must fail, so each test can fail.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from harness.faults import StallProxy
from harness.gunicorn import GunicornServer, migrate
from harness.hot import CONNECT_TIMEOUT, HOT_ENV, NET_TIMEOUT, READ_TIMEOUT, HotContext, run_hot
from harness.mariadb import LocalMariaDB, start_mariadb
from harness.scenarios import warm
from idleproof.breaker import PROBE_INTERVAL, PROBE_TIMEOUT
from tests.helpers import report

pytestmark = pytest.mark.slow

# The time a saturated machine (the test fleets beside this module) may add to a request
# that the kit answers from its own state.
HEAL_SLACK = 0.75


def server(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[LocalMariaDB]:
    # MariaDB's own idle limits: a server that closed idle connections itself would hide
    # what the network does to them.
    db = start_mariadb(tmp_path_factory.mktemp(name))
    try:
        migrate(db.url)
        yield db
    finally:
        db.stop()


@pytest.fixture(scope="module")
def primary(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMariaDB]:
    yield from server(tmp_path_factory, "primary")


@pytest.fixture(scope="module")
def standby(
    tmp_path_factory: pytest.TempPathFactory, primary: LocalMariaDB
) -> Iterator[LocalMariaDB]:
    for db in server(tmp_path_factory, "standby"):
        # A replica knows the primary's users: the same credentials work after a failover.
        db.execute(f"ALTER USER '{db.user}'@'127.0.0.1' IDENTIFIED BY '{primary.password}'")
        yield db


Starter = Callable[..., HotContext]


@pytest.fixture
def start(primary: LocalMariaDB, standby: LocalMariaDB, tmp_path: Path) -> Iterator[Starter]:
    """The kit or a variant under Gunicorn, through a proxy when the scenario needs one."""
    started: list[GunicornServer] = []
    proxies: list[StallProxy] = []

    def start_app(variant: str, scenario: str, **extra: str) -> HotContext:
        proxy = StallProxy(primary.port) if scenario in ("stall_busy", "failover") else None
        port = proxy.port if proxy else primary.port
        url = primary.url.replace(f":{primary.port}/", f":{port}/")
        env = {"DATABASE_URL": url, "DB_IDLE_TIMEOUT": "600", **HOT_ENV, **extra}
        app = "app.wsgi:app"
        if variant != "kit":
            env["KIT_VARIANT"], app = variant, "harness.variants:app"
        gunicorn = GunicornServer(env, tmp_path / f"gunicorn-{len(started)}.log", app=app)
        started.append(gunicorn)
        if proxy:
            proxies.append(proxy)
        gunicorn.start()
        return HotContext(primary, gunicorn.url, 600, proxy, standby=standby)

    yield start_app
    for gunicorn in started:
        gunicorn.stop()
    for proxy in proxies:
        proxy.close()


def duplicated_notes(db: LocalMariaDB) -> list[tuple[object, ...]]:
    return db.execute(
        f"SELECT text, COUNT(*) FROM `{db.database}`.notes WHERE text LIKE 'note %' "
        "GROUP BY text HAVING COUNT(*) > 1"
    )


def test_vanish_under_load(start: Starter, primary: LocalMariaDB) -> None:
    result = run_hot("vanish_busy", start("kit", "vanish_busy"))
    assert result.during.failures == 0, result.during.statuses  # GET and POST
    assert result.during.slowest <= NET_TIMEOUT + 1, result.during.durations
    assert result.after.failures == 0
    assert duplicated_notes(primary) == []  # a retried POST is stored once


def test_partition_answers_503_in_bounds_and_heals(
    start: Starter, request: pytest.FixtureRequest
) -> None:
    """The first request finds the host gone (its busy connection, then a new one, time out);
    every request after it, in every worker, is answered at once while a probe looks for
    the way back; the first request after the network heals that the probe let through is
    served."""
    result = run_hot("partition", start("kit", "partition"), count=6)
    later = result.during.durations[1:] + result.burst.durations
    report(
        request,
        "hot",
        f"partition: first 503 after {result.during.durations[0]:.2f} s; the next "
        f"{len(later)} (4 clients) 503 in median {statistics.median(later) * 1000:.0f} ms, "
        f"slowest {max(later) * 1000:.0f} ms; first 2xx {result.first_2xx_after or 0:.2f} s after "
        "healing",
    )
    assert result.during.statuses == [503] * 6, result.during.statuses
    assert result.burst.statuses == [503] * 16, result.burst.statuses
    # The busy statement ended on the kernel's verdict (NET_TIMEOUT), not on the query bound
    # (READ_TIMEOUT), then one connect timed out: both waits happened (timers never fire
    # early), and the upper bound is halfway between the two sums.
    first_by = NET_TIMEOUT + CONNECT_TIMEOUT + (READ_TIMEOUT - NET_TIMEOUT) / 2
    first = result.during.durations[0]
    assert NET_TIMEOUT + CONNECT_TIMEOUT - 0.1 <= first < first_by, result.during.durations
    # Answered without waiting on the network: a request that tried a connection itself
    # would take CONNECT_TIMEOUT, one that waited for the probe PROBE_TIMEOUT. How fast they
    # are (milliseconds on an idle machine) is the bench's to report: this machine may be
    # saturated by the tests beside this one.
    assert statistics.median(later) < PROBE_TIMEOUT / 2 and max(later) < CONNECT_TIMEOUT, later
    assert result.healthz and set(result.healthz) == {200}, result.healthz
    # Healed within one probe that was under way when the network came back, the interval
    # after it and the next probe: the breaker's design, plus the same scheduling slack.
    healed_by = PROBE_TIMEOUT + PROBE_INTERVAL + HEAL_SLACK
    assert result.first_2xx_after is not None and result.first_2xx_after <= healed_by, result.after


def test_a_stalled_server_is_bounded_by_the_read_timeout(start: Starter) -> None:
    """The one fault only a query timeout bounds: TCP is alive, the kernel sees no death."""
    result = run_hot("stall_busy", start("kit", "stall_busy"))
    stalled = [
        d for s, d in zip(result.during.statuses, result.during.durations, strict=True) if s == 503
    ]
    assert 0 < len(stalled) <= 2, result.during.statuses  # one per worker's busy connection
    assert all(READ_TIMEOUT - 0.5 <= d <= READ_TIMEOUT + 1 for d in stalled), stalled
    assert result.during.failures == len(stalled)  # everything else answered
    assert result.after.failures == 0


def test_failover_to_a_new_primary(start: Starter, standby: LocalMariaDB) -> None:
    result = run_hot("failover", start("kit", "failover"))
    assert result.during.failures == 0, result.during.statuses  # writes retried on the standby
    assert result.during.slowest < 2, result.during.durations
    landed = standby.execute(f"SELECT COUNT(*) FROM `{standby.database}`.notes")
    assert int(str(landed[0][0])) > 0


def test_a_moved_database_name_is_followed_within_the_connection_age(
    start: Starter, standby: LocalMariaDB
) -> None:
    """No error tells the app the name now points elsewhere: the age bound does."""
    ctx = start("kit", "failover", DB_MAX_CONNECTION_AGE="3")
    marker = "only on the standby"
    standby.execute(f"INSERT INTO `{standby.database}`.notes (text) VALUES ('{marker}')")
    warm(ctx, 5)
    assert ctx.proxy is not None
    ctx.proxy.retarget(standby.port)
    seen_at = None
    started = time.monotonic()
    while seen_at is None and time.monotonic() - started < 10:
        texts = [n["text"] for n in requests.get(f"{ctx.app_url}/", timeout=5).json()["notes"]]
        if marker in texts:
            seen_at = time.monotonic() - started
        time.sleep(0.2)
    assert seen_at is not None and seen_at <= 3 + 1, seen_at


@pytest.mark.parametrize("scenario", ["vanish_busy", "partition", "stall_busy", "failover"])
def test_naive_configuration_fails(start: Starter, scenario: str) -> None:
    result = run_hot(scenario, start("naive", scenario), count=4, give_up_after=1)
    assert result.during.failures > 0, f"the naive setup survived {scenario}: {result.during}"
