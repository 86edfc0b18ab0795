"""The engine plugin (``?plugin=idleproof``) against a real MariaDB (wait_timeout=2) and real
Gunicorn: an application's own ``sqlalchemy.create_engine`` gets the kit's protection.

Side by side with the same engine built without the plugin (``pool_recycle`` only, as many
applications have it): the plain engine must fail where the plugin engine does not, so
each test can fail.
"""

from __future__ import annotations

import logging
import socket
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymysql
import pytest
import requests
import sqlalchemy
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.engine import url as sa_url
from sqlalchemy.exc import OperationalError

from harness.faults import vanish
from harness.gunicorn import GunicornServer
from harness.mariadb import LocalMariaDB
from idleproof import plugin
from idleproof.engine import guard_of, is_protected
from idleproof.settings import SETTINGS, SettingsError
from tests.helpers import WAIT_TIMEOUT, report

pytestmark = pytest.mark.slow

NET_TIMEOUT = 2
# MySQL client errors of a connection the server closed: lost mid-query, gone away.
SERVER_CLOSED = (2013, 2006)

SetEnv = Callable[..., None]


@pytest.fixture
def kit_env(monkeypatch: pytest.MonkeyPatch) -> SetEnv:
    """Set the kit's DB_* environment for the plugin, nothing inherited from outside."""

    def set_env(**env: str) -> None:
        for setting in SETTINGS:
            monkeypatch.delenv(setting.env, raising=False)
        monkeypatch.delenv(plugin.SWITCH, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)

    return set_env


@pytest.fixture
def engines() -> Iterator[list[Engine]]:
    """Engines a test made; disposed afterwards, whatever happened."""
    made: list[Engine] = []
    yield made
    for engine in made:
        engine.dispose()


def with_plugin(url: str) -> str:
    return f"{url}?plugin={plugin.NAME}"


def connection_id(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT CONNECTION_ID()")).scalar_one())


def test_the_plugin_protects_the_apps_engine_and_says_what_it_overrides(
    mariadb: LocalMariaDB,
    kit_env: SetEnv,
    engines: list[Engine],
    caplog: pytest.LogCaptureFixture,
) -> None:
    kit_env(DB_IDLE_TIMEOUT=str(WAIT_TIMEOUT))
    caplog.set_level(logging.INFO, logger="idleproof.plugin")
    engine = sqlalchemy.create_engine(
        with_plugin(mariadb.url),
        pool_pre_ping=True,
        pool_recycle=3600,
        pool_size=20,
        connect_args={"connect_timeout": 30},
    )
    engines.append(engine)

    assert is_protected(engine)
    settings = guard_of(engine).settings
    recycle = min(settings.pool_recycle, settings.max_connection_age)
    pool: Any = engine.pool
    assert pool._pre_ping is False
    assert pool._recycle == recycle < WAIT_TIMEOUT  # below DB_IDLE_TIMEOUT from the env
    assert pool.size() == settings.pool_size != 20
    # The driver never sees plugin=; the engine works.
    assert "plugin" not in engine.url.query
    assert connection_id(engine) > 0

    lines = [r.getMessage() for r in caplog.records if r.name == "idleproof.plugin"]
    assert len(lines) == 1, lines
    line = lines[0]
    assert "\n" not in line
    for override in (
        "pool_pre_ping=True -> False",
        f"pool_recycle=3600 -> {recycle!r}",
        f"pool_size=20 -> {settings.pool_size!r}",
        f"connect_args connect_timeout=30 -> {settings.connect_timeout!r}",
    ):
        assert override in line, line
    assert mariadb.password not in line
    report_line = line.split(": ", 1)[1]
    assert report_line.count("->") == 4, line  # nothing else claimed


def kill(mariadb: LocalMariaDB, thread_ids: list[int]) -> None:
    for thread_id in thread_ids:
        mariadb.execute(f"KILL {thread_id}")
    time.sleep(0.1)


def idle_past_wait_timeout(mariadb: LocalMariaDB, thread_ids: list[int]) -> None:
    time.sleep(WAIT_TIMEOUT + 1)


FAULTS = {"killed": kill, "idle_past_wait_timeout": idle_past_wait_timeout}


@pytest.mark.parametrize(
    ("fault", "idle_timeout"),
    [
        # An operator's DB_IDLE_TIMEOUT above the server's: the guard sees the closed socket.
        ("killed", "60"),
        ("idle_past_wait_timeout", "60"),
        # DB_IDLE_TIMEOUT as it should be (the server's wait_timeout): replaced by age.
        ("idle_past_wait_timeout", str(WAIT_TIMEOUT)),
    ],
)
def test_a_dead_pooled_connection_fails_the_plain_engine_not_the_plugin_one(
    fault: str,
    idle_timeout: str,
    mariadb: LocalMariaDB,
    kit_env: SetEnv,
    engines: list[Engine],
    caplog: pytest.LogCaptureFixture,
    request: pytest.FixtureRequest,
) -> None:
    kit_env(DB_IDLE_TIMEOUT=idle_timeout)
    caplog.set_level(logging.INFO, logger="idleproof.guard")
    # The same application engine twice: recycle only, as many apps have it; and with the
    # plugin switched on in its URL.
    plain = sqlalchemy.create_engine(mariadb.url, pool_recycle=3600)
    kit = sqlalchemy.create_engine(with_plugin(mariadb.url), pool_recycle=3600)
    engines.extend([plain, kit])
    before = {"plain": connection_id(plain), "kit": connection_id(kit)}

    FAULTS[fault](mariadb, list(before.values()))

    with pytest.raises(OperationalError) as naive:
        connection_id(plain)
    code = naive.value.orig.args[0]  # type: ignore[union-attr]
    assert code in SERVER_CLOSED, naive.value
    started = time.monotonic()
    after = connection_id(kit)  # no error: the dead connection was replaced first
    took = time.monotonic() - started
    assert after != before["kit"]

    replaced = [r.getMessage().strip() for r in caplog.records if r.name == "idleproof.guard"]
    if idle_timeout == str(WAIT_TIMEOUT):
        assert replaced == []  # pool_recycle below the idle limit retired it by age
    else:
        assert replaced == ["replacing pooled connection: closed_by_server"], replaced
    report(
        request,
        "plugin",
        f"{fault} (DB_IDLE_TIMEOUT={idle_timeout}): plain engine failed with {code}; "
        f"plugin engine answered in {took * 1000:.0f} ms on a new connection",
    )


@dataclass
class VanishedPeer:
    took: float  # until the protected connection's statement raised
    plain_waiting: bool  # the plain one's statement still waiting NET_TIMEOUT + 3 s in
    waited: float  # how long the plain one was watched
    plain_outcome: list[BaseException | None]  # what ended it, if anything did


def statement_to_a_vanished_peer(
    mariadb: LocalMariaDB, protected: Connection, plain: Connection
) -> VanishedPeer:
    """A statement on each connection after every packet of both was dropped: the protected
    one's must raise (it is timed); the plain one's runs in a thread and is watched for
    NET_TIMEOUT + 3 s, then ended by shutting its socket down (TCP's retransmissions would
    take minutes)."""
    for conn in (plain, protected):
        conn.execute(text("SELECT 1"))
    plain_socket: socket.socket = plain.connection.dbapi_connection._sock  # type: ignore[union-attr]
    plain_outcome: list[BaseException | None] = []

    def plain_statement() -> None:
        try:
            plain.execute(text("SELECT 1"))
            plain_outcome.append(None)
        except Exception as exc:  # reported by the caller
            plain_outcome.append(exc)

    plain_thread = threading.Thread(target=plain_statement, daemon=True)
    try:
        with vanish(mariadb.port) as gone:
            assert gone >= 2
            plain_thread.start()
            started = time.monotonic()
            with pytest.raises(OperationalError):
                protected.execute(text("SELECT 1"))
            took = time.monotonic() - started
            plain_thread.join(timeout=max(0.0, NET_TIMEOUT + 3 - took))
            plain_waiting = plain_thread.is_alive()
            waited = time.monotonic() - started
    finally:
        if plain_thread.is_alive():
            plain_socket.shutdown(socket.SHUT_RDWR)
            plain_thread.join(timeout=10)
    return VanishedPeer(took, plain_waiting, waited, plain_outcome)


def test_a_query_to_a_vanished_peer_is_bounded_by_net_timeout(
    mariadb: LocalMariaDB,
    kit_env: SetEnv,
    engines: list[Engine],
    caplog: pytest.LogCaptureFixture,
    request: pytest.FixtureRequest,
) -> None:
    kit_env(
        DB_IDLE_TIMEOUT="60",
        DB_NET_TIMEOUT=str(NET_TIMEOUT),
        DB_READ_TIMEOUT="15",  # far above: only the kernel's verdict can end it in time
        DB_PING_AFTER_IDLE="60",
    )
    caplog.set_level(logging.INFO, logger="idleproof.guard")
    plain = sqlalchemy.create_engine(mariadb.url, pool_recycle=3600)
    kit = sqlalchemy.create_engine(with_plugin(mariadb.url), pool_recycle=3600)
    engines.extend([plain, kit])
    plain_conn, kit_conn = plain.connect(), kit.connect()
    try:
        vanished = statement_to_a_vanished_peer(mariadb, kit_conn, plain_conn)
    finally:
        kit_conn.close()
        plain_conn.close()
    took, plain_waiting, waited = vanished.took, vanished.plain_waiting, vanished.waited
    plain_outcome = vanished.plain_outcome

    assert took < NET_TIMEOUT + 2, took
    lost = [r.getMessage() for r in caplog.records if r.name == "idleproof.guard"]
    assert "connection lost under a statement: network" in lost, lost
    assert plain_waiting, f"the plain engine's query ended by itself: {plain_outcome}"
    # Afterwards the plugin engine works again, on a new connection.
    assert connection_id(kit) > 0
    report(
        request,
        "plugin",
        f"vanished peer: plugin engine raised after {took:.1f} s (DB_NET_TIMEOUT={NET_TIMEOUT}); "
        f"plain engine still waiting after {waited:.1f} s",
    )


def keepalive(conn: Any) -> tuple[int, int, int]:
    """SO_KEEPALIVE, the idle seconds before the first probe, and TCP_USER_TIMEOUT (ms) on
    a SQLAlchemy connection's socket."""
    sock: socket.socket = conn.connection.dbapi_connection._sock
    return (
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
    )


def test_the_migration_plugin_cuts_no_statement_the_web_plugin_would(
    mariadb: LocalMariaDB,
    kit_env: SetEnv,
    engines: list[Engine],
    caplog: pytest.LogCaptureFixture,
    request: pytest.FixtureRequest,
) -> None:
    """A statement longer than DB_READ_TIMEOUT (an ALTER TABLE on a big table): the web
    plugin cuts it, the migration plugin lets it run, with the same keepalives."""
    kit_env(DB_IDLE_TIMEOUT="60", DB_NET_TIMEOUT=str(NET_TIMEOUT), DB_READ_TIMEOUT="3")
    caplog.set_level(logging.INFO, logger="idleproof.plugin")
    web = sqlalchemy.create_engine(with_plugin(mariadb.url), pool_pre_ping=True)
    migration = sqlalchemy.create_engine(
        f"{mariadb.url}?plugin={plugin.MIGRATION}", pool_pre_ping=True
    )
    plain = sqlalchemy.create_engine(mariadb.url)
    engines.extend([web, migration, plain])
    long_statement = text("SELECT SLEEP(5)")
    with web.connect() as conn:
        web_socket = keepalive(conn)
        started = time.monotonic()
        with pytest.raises(OperationalError):
            conn.execute(long_statement)
        web_took = time.monotonic() - started
    with migration.connect() as conn:
        migration_socket = keepalive(conn)
        started = time.monotonic()
        assert conn.execute(long_statement).scalar_one() == 0
        migration_took = time.monotonic() - started
    with plain.connect() as conn:
        plain_socket = keepalive(conn)

    assert web_took < 4.5, web_took
    assert migration_socket == web_socket == (1, 1, NET_TIMEOUT * 1000), migration_socket
    # PyMySQL's own keepalive waits the kernel's default (two hours) before its first
    # probe: long after any firewall forgot the flow.
    assert plain_socket[1] > 600 and plain_socket[2] == 0, plain_socket
    assert not is_protected(migration)  # no guard: nothing ends its statements
    assert migration.pool._pre_ping is True  # the app's own
    lines = [r.getMessage() for r in caplog.records if plugin.MIGRATION in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0] and mariadb.password not in lines[0], lines
    report(
        request,
        "plugin",
        f"a 5 s statement, DB_READ_TIMEOUT=3: web plugin cut it after {web_took:.1f} s, "
        f"migration plugin let it end after {migration_took:.1f} s; keepalives on both",
    )


def test_a_migrations_connection_to_a_vanished_peer_fails_within_net_timeout(
    mariadb: LocalMariaDB,
    kit_env: SetEnv,
    engines: list[Engine],
    request: pytest.FixtureRequest,
) -> None:
    """The migration plugin sets no read timeout, yet a statement sent to a host that
    vanished fails after DB_NET_TIMEOUT; the same migration engine without it hangs."""
    kit_env(DB_IDLE_TIMEOUT="60", DB_NET_TIMEOUT=str(NET_TIMEOUT), DB_READ_TIMEOUT="15")
    migration = sqlalchemy.create_engine(f"{mariadb.url}?plugin={plugin.MIGRATION}")
    plain = sqlalchemy.create_engine(mariadb.url)
    engines.extend([migration, plain])
    migration_conn, plain_conn = migration.connect(), plain.connect()
    try:
        vanished = statement_to_a_vanished_peer(mariadb, migration_conn, plain_conn)
    finally:
        migration_conn.invalidate()
        plain_conn.invalidate()
    took, plain_waiting, waited = vanished.took, vanished.plain_waiting, vanished.waited

    assert took < NET_TIMEOUT + 2, took
    assert plain_waiting, "the plain engine's statement ended by itself"
    report(
        request,
        "plugin",
        f"vanished peer: migration plugin raised after {took:.1f} s "
        f"(DB_NET_TIMEOUT={NET_TIMEOUT}); plain engine still waiting after {waited:.1f} s",
    )


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///x.db?plugin=idleproof",
        "postgresql+psycopg2://app:s3cret@db.example/app?plugin=idleproof",
    ],
)
def test_a_url_of_another_driver_is_refused_with_one_line(url: str, kit_env: SetEnv) -> None:
    kit_env()
    with pytest.raises(SettingsError) as refused:
        sqlalchemy.create_engine(url)
    message = str(refused.value)
    assert "\n" not in message
    assert "mysql+pymysql engines only" in message and "drop plugin=idleproof" in message
    assert "s3cret" not in message


@pytest.mark.parametrize("argument", ["creator", "pool"])
def test_an_engine_whose_pool_is_not_its_own_is_refused_with_one_line(
    argument: str, mariadb: LocalMariaDB, kit_env: SetEnv
) -> None:
    kit_env()

    def connect() -> Any:
        return pymysql.connect(host="127.0.0.1", port=mariadb.port, user=mariadb.user)

    given = {
        "creator": connect,
        "pool": sqlalchemy.pool.QueuePool(connect),
    }[argument]
    with pytest.raises(SettingsError) as refused:
        sqlalchemy.create_engine(with_plugin(mariadb.url), **{argument: given})
    message = str(refused.value)
    assert "\n" not in message
    assert f"passes {argument}=" in message and "drop plugin=idleproof" in message
    assert mariadb.password not in message


@pytest.fixture
def restore_sqlalchemy(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """enable_for_all_engines wraps URL._instantiate_plugins: put SQLAlchemy's back after."""
    monkeypatch.setattr(sa_url.URL, "_instantiate_plugins", sa_url.URL._instantiate_plugins)
    return monkeypatch


def test_the_switch_protects_every_pymysql_engine_and_no_other(
    mariadb: LocalMariaDB,
    kit_env: SetEnv,
    restore_sqlalchemy: pytest.MonkeyPatch,
    engines: list[Engine],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="idleproof.plugin")
    original = sa_url.URL._instantiate_plugins
    kit_env(DB_IDLE_TIMEOUT=str(WAIT_TIMEOUT))
    before = sqlalchemy.create_engine(mariadb.url, pool_pre_ping=True)
    engines.append(before)
    assert not is_protected(before)

    restore_sqlalchemy.setenv(plugin.SWITCH, "1")
    assert plugin.enable_for_all_engines() is True
    wrapped = sa_url.URL._instantiate_plugins
    assert wrapped is not original
    assert plugin.enable_for_all_engines() is True  # a second call wraps nothing more
    assert sa_url.URL._instantiate_plugins is wrapped

    mysql = sqlalchemy.create_engine(mariadb.url, pool_pre_ping=True)
    named = sqlalchemy.create_engine(with_plugin(mariadb.url))  # named too: loaded once
    sqlite = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    engines.extend([mysql, named, sqlite])
    assert is_protected(mysql) and is_protected(named)
    said = [r.getMessage() for r in caplog.records if r.name == "idleproof.plugin"]
    assert len([line for line in said if line.startswith("idleproof plugin on")]) == 2, said
    assert mysql.pool._pre_ping is False
    assert connection_id(mysql) > 0
    assert not is_protected(sqlite)
    with sqlite.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar_one() == 1

    restore_sqlalchemy.undo()
    assert sa_url.URL._instantiate_plugins is original
    after = sqlalchemy.create_engine(mariadb.url)
    engines.append(after)
    assert not is_protected(after)


@pytest.mark.parametrize("value", ["maybe", "2", "enabled"])
def test_a_bad_switch_is_one_line(
    value: str, kit_env: SetEnv, restore_sqlalchemy: pytest.MonkeyPatch
) -> None:
    original = sa_url.URL._instantiate_plugins
    kit_env(**{plugin.SWITCH: value})
    with pytest.raises(SettingsError) as refused:
        plugin.enable_for_all_engines()
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"{plugin.SWITCH}={value!r} is not a switch")
    assert sa_url.URL._instantiate_plugins is original  # nothing switched on


@pytest.mark.parametrize("value", ["", "0", "off"])
def test_the_switch_off_changes_nothing(
    value: str, kit_env: SetEnv, restore_sqlalchemy: pytest.MonkeyPatch
) -> None:
    original = sa_url.URL._instantiate_plugins
    kit_env(**{plugin.SWITCH: value})
    assert plugin.enable_for_all_engines() is False
    assert sa_url.URL._instantiate_plugins is original


# An application Gunicorn preloads: its engine is built at import with ?plugin=idleproof
# and used there once, as apps that create tables at import do, so the master holds a
# pooled connection when it forks.
APP_MODULE = """\
    import json
    import os

    import sqlalchemy
    from sqlalchemy import text

    engine = sqlalchemy.create_engine(
        os.environ["APP_DATABASE_URL"], pool_pre_ping=True, pool_recycle=3600
    )
    with engine.connect() as conn:
        MASTER_CONNECTION_ID = conn.execute(text("SELECT CONNECTION_ID()")).scalar_one()
    MASTER_PID = os.getpid()


    def app(environ, start_response):
        if environ["PATH_INFO"] == "/healthz":
            body = b"ok"
        else:
            with engine.connect() as conn:
                row = conn.execute(text("SELECT CONNECTION_ID(), SLEEP(0.3)")).one()
            body = json.dumps(
                {
                    "pid": os.getpid(),
                    "connection_id": row[0],
                    "master_pid": MASTER_PID,
                    "master_connection_id": MASTER_CONNECTION_ID,
                }
            ).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
"""

# The kit's configuration with its post_fork hook left out: the control.
NO_POST_FORK = """\
    from idleproof.gunicorn_conf import *  # noqa: F403


    # Neither hook that closes the master's connections: when_ready's before the fork,
    # post_fork's after it.
    def when_ready(server):
        pass


    def post_fork(server, worker):
        pass
"""


def serve_concurrently(server: GunicornServer) -> list[dict[str, int]]:
    """Concurrent requests until both workers answered (each holds one for 0.3 s)."""
    answers: list[dict[str, int]] = []
    with ThreadPoolExecutor(4) as pool:
        for _ in range(10):
            responses = list(
                pool.map(lambda _: requests.get(f"{server.url}/", timeout=30), range(4))
            )
            for response in responses:
                assert response.status_code == 200, response.text
                answers.append(response.json())
            if len({a["pid"] for a in answers}) >= 2:
                break
    return answers


def run_preloaded_app(
    mariadb: LocalMariaDB, tmp_path: Path, name: str, config: str
) -> tuple[list[dict[str, int]], str]:
    (tmp_path / "plugin_app.py").write_text(textwrap.dedent(APP_MODULE))
    (tmp_path / "no_post_fork.py").write_text(textwrap.dedent(NO_POST_FORK))
    env = {
        "APP_DATABASE_URL": with_plugin(mariadb.url),
        # Above the server's wait_timeout on purpose: the master's connection must not be
        # retired by age before a worker's first checkout sees where it came from.
        "DB_IDLE_TIMEOUT": "60",
        "GUNICORN_LOGLEVEL": "debug",
        "GUNICORN_PRELOAD_APP": "true",
    }
    log_path = tmp_path / f"{name}.log"
    server = GunicornServer(env, log_path, "plugin_app:app", config=config, cwd=tmp_path)
    try:
        server.start()
        answers = serve_concurrently(server)
    finally:
        server.stop()
    return answers, log_path.read_text(errors="replace")


def assert_each_worker_has_its_own_pool(answers: list[dict[str, int]]) -> None:
    by_worker: dict[int, set[int]] = {}
    for answer in answers:
        assert answer["pid"] != answer["master_pid"]
        assert answer["connection_id"] != answer["master_connection_id"]
        by_worker.setdefault(answer["pid"], set()).add(answer["connection_id"])
    assert len(by_worker) == 2, by_worker
    first, second = by_worker.values()
    assert not first & second, by_worker


def test_under_gunicorn_post_fork_gives_each_worker_a_pool_of_its_own(
    mariadb: LocalMariaDB, kit_env: SetEnv, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    kit_env()
    answers, log = run_preloaded_app(mariadb, tmp_path, "kit", "python:idleproof.gunicorn_conf")
    assert_each_worker_has_its_own_pool(answers)
    assert log.count("post_fork: disposed 1 engine(s) inherited from the master") == 2, log
    # The pool was emptied at the fork: the guard never met the master's connection.
    assert "inherited_across_fork" not in log
    assert "2014" not in log and "Out of sync" not in log
    # The plugin's line, said while the master preloaded the app (before logging was set
    # up), is in the log once, with what it overrode.
    said = [line for line in log.splitlines() if "idleproof plugin on mysql+pymysql://" in line]
    assert len(said) == 1, said
    assert "pool_pre_ping=True -> False" in said[0] and "pool_recycle=3600 -> " in said[0]
    report(
        request,
        "plugin",
        f"gunicorn, preload, 2 workers: {len(answers)} concurrent requests, "
        f"{len({a['connection_id'] for a in answers})} connections, none the master's",
    )


def test_without_post_fork_only_the_guard_keeps_the_masters_connection_out(
    mariadb: LocalMariaDB, kit_env: SetEnv, tmp_path: Path
) -> None:
    """The control: the same app without the hooks still works (the guard's fork check), and
    the log shows the difference the test above relies on."""
    kit_env()
    answers, log = run_preloaded_app(
        mariadb, tmp_path, "no-post-fork", str(tmp_path / "no_post_fork.py")
    )
    assert_each_worker_has_its_own_pool(answers)
    assert "post_fork: disposed" not in log
    assert "replacing pooled connection: inherited_across_fork" in log, log
