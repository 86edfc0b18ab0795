"""Fixtures that start real servers: a MariaDB with wait_timeout=2 and Gunicorn apps.
What the test modules share besides fixtures is in tests/helpers.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.faults import StallProxy
from harness.gunicorn import GunicornServer, migrate
from harness.mariadb import LocalMariaDB, start_mariadb
from tests.helpers import WAIT_TIMEOUT, AppFactory


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
