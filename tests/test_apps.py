"""Applications no one here wrote, unmodified, on one host: their own setup fails, the kit's
plugin and Gunicorn config keep every request 2xx.

Each application (harness/apps.py: the MLflow tracking server, ihatemoney on
Flask-SQLAlchemy) is installed from the index into a virtualenv of its own and run twice
against the test MariaDB (``wait_timeout`` set to ``APP_WAIT_TIMEOUT``), both under real
Gunicorn with 2 workers: as its documentation deploys it, and with ``?plugin=idleproof`` in
its URL and ``--config python:idleproof.gunicorn_conf``. Then its busiest read is sent after each
fault: idle past ``wait_timeout``, every connection KILLed, MariaDB restarted, and the
pooled connections' packets dropped (a peer that vanished: an expired NAT entry).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness import apps
from harness.faults import vanish
from harness.gunicorn import GunicornServer
from harness.mariadb import LocalMariaDB
from tests.helpers import report

pytestmark = pytest.mark.slow

# A request that outlives this is a hang: Gunicorn's own timeout is 30 s.
CLIENT_TIMEOUT = 12
REQUESTS = 6
# The server's idle limit while these apps run, above the fixture's 2 s: one request of
# theirs sends several statements, and on a busy machine a worker can stall for seconds
# between two of them. A server that ends a connection in the middle of a request is not
# the idle fault this module shows (nor one a pool can see at checkout).
APP_WAIT_TIMEOUT = 5


@pytest.fixture(scope="module", autouse=True)
def app_wait_timeout(mariadb: LocalMariaDB) -> Iterator[None]:
    with mariadb.wait_timeout(APP_WAIT_TIMEOUT):
        yield


def send(server: GunicornServer, r: apps.Request) -> int | str:
    return apps.send(server.url, r, CLIENT_TIMEOUT)


@dataclass
class Running:
    app: apps.App
    server: GunicornServer
    kit: bool


@pytest.fixture(scope="module", params=sorted(apps.APPS))
def app(request: pytest.FixtureRequest) -> apps.App:
    return apps.APPS[request.param]


@pytest.fixture(scope="module")
def installed(app: apps.App) -> Path:
    return apps.install(app)


@pytest.fixture(scope="module")
def database(
    app: apps.App, installed: Path, mariadb: LocalMariaDB, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """A database of the application's own, migrated; its URL for the app user."""
    mariadb.execute(
        f"DROP DATABASE IF EXISTS `{app.name}`",
        f"CREATE DATABASE `{app.name}` CHARACTER SET utf8mb4",
        f"GRANT ALL PRIVILEGES ON `{app.name}`.* TO '{mariadb.user}'@'127.0.0.1'",
    )
    url = mariadb.url.rsplit("/", 1)[0] + f"/{app.name}"
    # A migration holds one connection longer than the test server's wait_timeout.
    with mariadb.wait_timeout(3600):
        apps.migrate(app, installed, url, tmp_path_factory.mktemp(f"{app.name}-migrate"))
    return url


@pytest.fixture(params=["naive", "kit"])
def running(
    request: pytest.FixtureRequest, app: apps.App, installed: Path, database: str, tmp_path: Path
) -> Iterator[Running]:
    kit = request.param == "kit"
    server = apps.server(
        app, installed, database, tmp_path / "state", tmp_path / "gunicorn.log", kit=kit
    )
    server.env.update({"DB_IDLE_TIMEOUT": str(APP_WAIT_TIMEOUT)})
    server.start(timeout=90)
    try:
        for setup in app.setup:
            accept(server, setup)
        yield Running(app, server, kit)
    finally:
        server.stop()


def accept(server: GunicornServer, setup: apps.Request) -> None:
    """The app's own data for the reads, sent until the app takes it: scaffolding, not under
    test. The documented setup's first request may meet a connection the server closed
    while the worker booted (a 5xx; the pool then drops it); a 4xx is data already there
    from the run before."""
    for _ in range(5):
        status = send(server, setup)
        if isinstance(status, int) and status < 500:
            return
    raise AssertionError(f"{setup.method} {setup.path} answered {status} five times")


def warm(run: Running) -> None:
    """Every worker holds pooled connections, as after a day's traffic: requests from
    several clients at once, so that no worker serves them all."""
    for _ in range(4):  # the documented setup may still hold connections of the last fault
        with ThreadPoolExecutor(4) as pool:
            statuses = list(pool.map(lambda _: send(run.server, run.app.read), range(16)))
        if set(statuses) == {200}:
            return
        assert not run.kit, statuses
    raise AssertionError(f"{run.app.name} never answered 16 reads in a row: {statuses}")


Fault = Callable[[LocalMariaDB], AbstractContextManager[object]]


def idle(db: LocalMariaDB) -> AbstractContextManager[object]:
    time.sleep(APP_WAIT_TIMEOUT + 1.5)
    return nullcontext()


def kill(db: LocalMariaDB) -> AbstractContextManager[object]:
    assert db.kill_app_connections() > 0
    time.sleep(0.2)
    return nullcontext()


def restart(db: LocalMariaDB) -> AbstractContextManager[object]:
    db.restart()
    # A restarted server reads its config's 2 s again.
    db.execute(f"SET GLOBAL wait_timeout = {APP_WAIT_TIMEOUT}")
    return nullcontext()


@contextmanager
def vanished(db: LocalMariaDB) -> Iterator[None]:
    """The pooled connections' packets dropped, then a quiet moment: an idle connection to a
    peer that vanished (a busy one is the hot-fault tests' case, not this)."""
    with vanish(db.port):
        time.sleep(1.5)  # past DB_PING_AFTER_IDLE (1 s): each is pinged before use
        yield


FAULTS: dict[str, Fault] = {"idle": idle, "kill": kill, "restart": restart, "vanish": vanished}


def outcome(run: Running, mariadb: LocalMariaDB, fault: str) -> tuple[list[int | str], float]:
    warm(run)
    with FAULTS[fault](mariadb):
        started = time.monotonic()
        statuses = []
        for _ in range(REQUESTS):
            statuses.append(send(run.server, run.app.read))
            if statuses[-1] != 200 and not run.kit:
                break  # its first failure is the finding; a hang is not worth waiting out 6 times
        slowest = time.monotonic() - started
    return statuses, slowest


def test_the_apps_own_setup_fails_and_the_kit_does_not(
    running: Running, mariadb: LocalMariaDB, request: pytest.FixtureRequest
) -> None:
    found = {fault: outcome(running, mariadb, fault) for fault in FAULTS}
    tag = "kit" if running.kit else "as documented"
    report(
        request,
        "apps",
        f"{running.app.name} {tag}: "
        + "; ".join(
            f"{fault} {sum(s != 200 for s in statuses)}/{len(statuses)} non-2xx "
            f"{sorted({str(s) for s in statuses})} in {slowest:.1f} s"
            for fault, (statuses, slowest) in found.items()
        ),
    )
    failed = {fault: statuses for fault, (statuses, _) in found.items() if set(statuses) != {200}}
    if running.kit:
        assert failed == {}, failed
        # Writes too, after all that.
        assert send(running.server, running.app.write) in (200, 201)
    else:
        assert failed, f"{running.app.name} as documented survived every fault"
