"""Fixtures that start real servers: a MariaDB with wait_timeout=2 and Gunicorn apps;
the test fleets' common boot and teardown."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from harness import ROOT
from harness.faults import StallProxy
from harness.fleet import Fleet
from harness.gunicorn import GunicornServer, migrate
from harness.mariadb import LocalMariaDB, start_mariadb
from harness.testhost import snapshot_release

# Short enough that "a quiet night" fits in a test, long enough to warm a pool.
WAIT_TIMEOUT = 2


@pytest.fixture(scope="session")
def mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMariaDB]:
    db = start_mariadb(
        tmp_path_factory.mktemp("mariadb"),
        options={
            "wait_timeout": WAIT_TIMEOUT,
            "interactive_timeout": WAIT_TIMEOUT,
        },
    )
    try:
        migrate(db.url)
        yield db
    finally:
        db.stop()


@pytest.fixture
def stall_proxy(mariadb: LocalMariaDB) -> Iterator[StallProxy]:
    proxy = StallProxy(mariadb.port)
    yield proxy
    proxy.close()


AppFactory = Callable[..., GunicornServer]


@pytest.fixture
def start_app(tmp_path: Path, mariadb: LocalMariaDB) -> Iterator[AppFactory]:
    """Start the kit (or a variant) under real Gunicorn; everything is stopped afterwards."""
    started: list[GunicornServer] = []

    def start(variant: str = "kit", port: int | None = None, **env: str) -> GunicornServer:
        url = mariadb.url.replace(f":{mariadb.port}/", f":{port or mariadb.port}/")
        settings = {"DATABASE_URL": url, "DB_IDLE_TIMEOUT": str(WAIT_TIMEOUT), **env}
        app = "app.wsgi:app"
        if variant != "kit":
            settings["KIT_VARIANT"] = variant
            app = "harness.variants:app"
        server = GunicornServer(settings, tmp_path / f"gunicorn-{len(started)}.log", app=app)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def kit_server(
    mariadb: LocalMariaDB, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GunicornServer]:
    """The kit under real Gunicorn, shared by the tests of one module."""
    log = tmp_path_factory.mktemp("kit") / "gunicorn.log"
    env = {"DATABASE_URL": mariadb.url, "DB_IDLE_TIMEOUT": str(WAIT_TIMEOUT)}
    server = GunicornServer(env, log).start()
    try:
        yield server
    finally:
        server.stop()


def report(request: pytest.FixtureRequest, tag: str, line: str) -> None:
    """Measured numbers go to the terminal even when the test passes: ``[tag] line``."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"[{tag}] {line}")


@contextmanager
def own_fleet(tmp_path_factory: pytest.TempPathFactory, **options: Any) -> Iterator[Fleet]:
    """A fleet of its own for one test module (Fleet.for_test options), with a snapshot
    of this checkout's release as its source; the caller boots it (fleet.up()) and may
    prepare its inventory first. Removed even when a test fails, and checked to leave
    nothing behind: no bridge, no host's link."""
    if os.geteuid() != 0:
        pytest.fail("the fleet tests boot systemd-nspawn hosts: run them as root (sudo make test)")
    subprocess.run([sys.executable, ROOT / "scripts" / "install-collections"], check=True)
    source = snapshot_release(tmp_path_factory.mktemp("release") / "v1")
    fleet = Fleet.for_test(tmp_path_factory.mktemp("fleet"), source_dir=source, **options)
    try:
        yield fleet
    finally:
        links = fleet.links()
        fleet.down()
    assert not Path(f"/sys/class/net/{fleet.bridge}").exists()
    assert links and not [n for n in links if Path(f"/sys/class/net/{n}").exists()], links
