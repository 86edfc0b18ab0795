"""``kit doctor``: does the server, the app's pool, Gunicorn, nginx and systemd agree?

Each check is one row: PASS, WARN or FAIL, what was found, and the fix. Any FAIL makes
the exit status 1. The server is asked with the app's own URL and connect timeout, so a
SESSION value is exactly what the app's connections get.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import runpy
import sys
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from types import CodeType
from typing import Any
from urllib.parse import unquote, urlsplit

import pymysql

from app.settings import Settings

PASS, WARN, FAIL = "PASS", "WARN", "FAIL"


@dataclass
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""


def _s(value: float) -> str:
    return f"{value:g}"


# --- the database server ------------------------------------------------------------------


def connect(
    settings: Settings, read_timeout: float | None = None
) -> pymysql.connections.Connection[pymysql.cursors.Cursor]:
    """A plain PyMySQL connection with the app's URL and connect timeout."""
    io_timeout = read_timeout or max(settings.ping_timeout, 5.0)
    parts = urlsplit(settings.database_url)
    return pymysql.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        database=parts.path.lstrip("/") or None,
        connect_timeout=settings.connect_timeout,
        read_timeout=io_timeout,
        write_timeout=io_timeout,
        charset="utf8mb4",
        autocommit=True,
    )


@dataclass
class ServerFacts:
    global_vars: dict[str, str]
    session_vars: dict[str, str]
    status: dict[str, str]


def read_server(settings: Settings) -> ServerFacts:
    conn = connect(settings)
    try:
        with conn.cursor() as cur:
            names = "('wait_timeout', 'interactive_timeout', 'max_connections')"
            cur.execute(f"SHOW GLOBAL VARIABLES WHERE Variable_name IN {names}")
            global_vars = {str(k): str(v) for k, v in cur.fetchall()}
            cur.execute(f"SHOW SESSION VARIABLES WHERE Variable_name IN {names}")
            session_vars = {str(k): str(v) for k, v in cur.fetchall()}
            cur.execute(
                "SHOW GLOBAL STATUS WHERE Variable_name IN ('Threads_connected', "
                "'Aborted_clients', 'Aborted_connects', 'Max_used_connections', 'Uptime')"
            )
            status = {str(k): str(v) for k, v in cur.fetchall()}
    finally:
        conn.close()
    return ServerFacts(global_vars, session_vars, status)


def server_checks(settings: Settings, facts: ServerFacts, workers: int | None) -> list[Check]:
    checks = []
    wait = float(facts.session_vars["wait_timeout"])
    gwait = float(facts.global_vars["wait_timeout"])
    ginteractive = float(facts.global_vars["interactive_timeout"])
    found = (
        f"server wait_timeout: SESSION {_s(wait)} s (what the app's connections get), "
        f"GLOBAL {_s(gwait)} s; interactive_timeout {_s(ginteractive)} s (CLI clients only)"
    )
    if settings.pool_recycle >= wait:
        checks.append(
            Check(
                "wait_timeout vs DB_POOL_RECYCLE",
                FAIL,
                f"{found}; DB_POOL_RECYCLE={_s(settings.pool_recycle)} is not below "
                f"wait_timeout={_s(wait)}: the server drops pooled connections before the "
                "pool recycles them",
                f"set DB_IDLE_TIMEOUT={_s(wait)} (DB_POOL_RECYCLE then defaults below it) "
                f"or raise the server's wait_timeout above {_s(settings.pool_recycle)}",
            )
        )
    elif settings.idle_timeout > wait:
        checks.append(
            Check(
                "wait_timeout vs DB_IDLE_TIMEOUT",
                WARN,
                f"{found}; DB_IDLE_TIMEOUT={_s(settings.idle_timeout)} is above it "
                f"(DB_POOL_RECYCLE={_s(settings.pool_recycle)} is still below)",
                f"set DB_IDLE_TIMEOUT={_s(wait)} so the configuration says what is in force",
            )
        )
    else:
        checks.append(
            Check(
                "wait_timeout vs DB_POOL_RECYCLE",
                PASS,
                f"{found}; DB_POOL_RECYCLE={_s(settings.pool_recycle)} is below it",
            )
        )

    max_conn = int(facts.global_vars["max_connections"])
    connected = int(facts.status.get("Threads_connected", "0"))
    per_worker = settings.pool_size + settings.max_overflow
    if workers is None:
        checks.append(
            Check(
                "max_connections",
                WARN,
                f"max_connections={max_conn}, Threads_connected={connected}; Gunicorn's "
                "worker count is unknown",
                "pass --gunicorn-config so the worker count can be checked",
            )
        )
    else:
        demand = workers * per_worker
        detail = (
            f"{workers} workers x (DB_POOL_SIZE {settings.pool_size} + DB_MAX_OVERFLOW "
            f"{settings.max_overflow}) = {demand} connections per app host at most; "
            f"max_connections={max_conn}, Threads_connected={connected} now"
        )
        if demand > max_conn:
            checks.append(
                Check(
                    "max_connections",
                    FAIL,
                    detail,
                    f"raise max_connections above {demand} (x app hosts) or lower "
                    "GUNICORN_WORKERS, DB_POOL_SIZE or DB_MAX_OVERFLOW",
                )
            )
        elif demand * 2 > max_conn:
            checks.append(
                Check(
                    "max_connections",
                    WARN,
                    detail + "; two app hosts would not fit",
                    f"raise max_connections to at least hosts x {demand} plus admin headroom",
                )
            )
        else:
            checks.append(Check("max_connections", PASS, detail))

    aborted_clients = int(facts.status.get("Aborted_clients", "0"))
    aborted_connects = int(facts.status.get("Aborted_connects", "0"))
    uptime = int(facts.status.get("Uptime", "0"))
    # Aborted_clients also counts every idle connection the server closed at wait_timeout,
    # which the kit survives by design: it is context for the runbook, not a failure.
    checks.append(
        Check(
            "Aborted_clients",
            PASS,
            f"{aborted_clients} connections dropped by the server (wait_timeout, KILL, or "
            f"clients that vanished) in {uptime} s of uptime; a rise overnight is the "
            "incident's server-side trace, and the kit replaces such connections",
        )
    )
    if aborted_connects:
        checks.append(
            Check(
                "Aborted_connects",
                WARN,
                f"{aborted_connects} failed connection attempts in {uptime} s of uptime "
                "(bad password, handshake over connect_timeout, or max_connections reached)",
                "look for 'Access denied' or 'Too many connections' in the server's error log",
            )
        )
    else:
        checks.append(Check("Aborted_connects", PASS, "no failed connection attempts"))
    return checks


# --- Gunicorn -----------------------------------------------------------------------------


@contextlib.contextmanager
def environment(env: Mapping[str, str]) -> Iterator[None]:
    """Run a config file under ``env`` (it reads GUNICORN_* from os.environ)."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _names(code: CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, CodeType):
            names |= _names(const)
    return names


def hook_disposes(hook: Any) -> bool:
    """Does a ``post_fork`` hook dispose of the engine (``dispose`` / ``dispose_after_fork``)?"""
    code = getattr(hook, "__code__", None)
    return isinstance(code, CodeType) and any("dispose" in n for n in _names(code))


@dataclass
class GunicornFacts:
    workers: int
    preload_app: bool
    timeout: int
    graceful_timeout: int
    post_fork: Any


def read_gunicorn(path: Path, env: Mapping[str, str]) -> GunicornFacts:
    from gunicorn.config import Config

    cfg = Config()
    with environment(env):
        namespace = runpy.run_path(str(path))
    for key, value in namespace.items():
        if key in cfg.settings and value is not None:
            cfg.set(key, value)
    return GunicornFacts(
        workers=int(cfg.workers),
        preload_app=bool(cfg.preload_app),
        timeout=int(cfg.timeout),
        graceful_timeout=int(cfg.graceful_timeout),
        post_fork=namespace.get("post_fork"),
    )


def gunicorn_checks(settings: Settings, g: GunicornFacts, path: Path) -> list[Check]:
    checks = []
    if not g.preload_app:
        checks.append(
            Check(
                "preload_app + post_fork",
                PASS,
                f"{path}: preload_app is off: each worker opens its own connections",
            )
        )
    elif g.post_fork is None:
        checks.append(
            Check(
                "preload_app + post_fork",
                FAIL,
                f"{path}: preload_app = True but no post_fork hook: every worker shares the "
                "connections the master opened ('Command Out of Sync', 2014)",
                "add the kit's hook: def post_fork(server, worker): "
                "from app.db import dispose_after_fork; dispose_after_fork(server.app.wsgi())",
            )
        )
    elif not hook_disposes(g.post_fork):
        checks.append(
            Check(
                "preload_app + post_fork",
                FAIL,
                f"{path}: preload_app = True and post_fork does not dispose the engine",
                "call app.db.dispose_after_fork(server.app.wsgi()) (engine.dispose(close="
                "False)) in post_fork",
            )
        )
    else:
        checks.append(
            Check(
                "preload_app + post_fork",
                PASS,
                f"{path}: preload_app = True and post_fork disposes the inherited engine",
            )
        )
    if g.timeout <= settings.read_timeout:
        checks.append(
            Check(
                "Gunicorn timeout vs DB_READ_TIMEOUT",
                FAIL,
                f"timeout={g.timeout} s is not above DB_READ_TIMEOUT="
                f"{_s(settings.read_timeout)} s: a slow query gets its worker killed",
                "raise GUNICORN_TIMEOUT or lower DB_READ_TIMEOUT",
            )
        )
    else:
        checks.append(
            Check(
                "Gunicorn timeout vs DB_READ_TIMEOUT",
                PASS,
                f"timeout={g.timeout} s is above DB_READ_TIMEOUT={_s(settings.read_timeout)} s",
            )
        )
    return checks


# --- nginx and systemd, when they are on this host ---------------------------------------


def _seconds(value: str) -> float | None:
    """nginx/systemd durations: '65s', '1m', '90', '1min 30s'."""
    units = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    total = 0.0
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value.strip().lower())
    if not parts:
        return None
    for number, unit in parts:
        if unit not in units:
            return None
        total += float(number) * units[unit]
    return total


def nginx_check(path: Path, g: GunicornFacts) -> Check:
    match = re.search(r"^\s*proxy_read_timeout\s+([^;]+);", path.read_text(), re.M)
    read = _seconds(match.group(1)) if match else 60.0  # nginx's default
    if read is None or read <= g.timeout:
        return Check(
            "nginx proxy_read_timeout",
            WARN,
            f"{path}: proxy_read_timeout={read if read is not None else '?'} s is not above "
            f"Gunicorn's timeout={g.timeout} s: nginx answers 504 for requests Gunicorn "
            "still lets run",
            f"set proxy_read_timeout {g.timeout + 5}s;",
        )
    return Check(
        "nginx proxy_read_timeout",
        PASS,
        f"{path}: proxy_read_timeout={read:g} s is above Gunicorn's timeout={g.timeout} s",
    )


def systemd_check(path: Path, g: GunicornFacts) -> Check:
    match = re.search(r"^\s*TimeoutStopSec\s*=\s*(.+)$", path.read_text(), re.M)
    stop = _seconds(match.group(1)) if match else 90.0  # systemd's DefaultTimeoutStopSec
    if stop is None or stop <= g.graceful_timeout:
        return Check(
            "systemd TimeoutStopSec",
            WARN,
            f"{path}: TimeoutStopSec={stop if stop is not None else '?'} s is not above "
            f"Gunicorn's graceful_timeout={g.graceful_timeout} s: a stop kills in-flight "
            "requests",
            f"set TimeoutStopSec={g.graceful_timeout + 5} in a drop-in",
        )
    return Check(
        "systemd TimeoutStopSec",
        PASS,
        f"{path}: TimeoutStopSec={stop:g} s is above graceful_timeout={g.graceful_timeout} s",
    )


# --- the command --------------------------------------------------------------------------


def collect(
    settings: Settings,
    env: Mapping[str, str],
    gunicorn_config: Path,
    nginx_conf: Path,
    systemd_unit: Path,
) -> list[Check]:
    from kit.cli import UsageError

    checks = [
        Check(
            "settings",
            PASS,
            f"{settings.url_without_password}: DB_IDLE_TIMEOUT={_s(settings.idle_timeout)} "
            f"DB_POOL_RECYCLE={_s(settings.pool_recycle)} DB_PING_AFTER_IDLE="
            f"{_s(settings.ping_after_idle)} DB_PING_TIMEOUT={_s(settings.ping_timeout)}",
        )
    ]
    gunicorn: GunicornFacts | None = None
    if not gunicorn_config.is_file():
        raise UsageError(
            f"--gunicorn-config {gunicorn_config}: no such file: pass the service's "
            "gunicorn.conf.py (on a deployed host /opt/idle-proof/current/gunicorn.conf.py)"
        )
    try:
        gunicorn = read_gunicorn(gunicorn_config, env)
    except (Exception, SystemExit) as exc:
        checks.append(
            Check(
                "gunicorn config",
                FAIL,
                f"{gunicorn_config} does not load: {exc}",
                "fix the config file or the GUNICORN_* variable it names",
            )
        )
    if gunicorn is not None:
        checks += gunicorn_checks(settings, gunicorn, gunicorn_config)
        if nginx_conf.is_file():
            checks.append(nginx_check(nginx_conf, gunicorn))
        if systemd_unit.is_file():
            checks.append(systemd_check(systemd_unit, gunicorn))

    try:
        facts = read_server(settings)
    except pymysql.err.MySQLError as exc:
        checks.append(
            Check(
                "database connection",
                FAIL,
                f"cannot connect to {settings.url_without_password}: {exc}",
                "check DATABASE_URL, that the server runs and that this host may reach it "
                "(firewall, bind-address, the user's host part)",
            )
        )
        return checks
    checks.append(
        Check("database connection", PASS, f"connected to {settings.url_without_password}")
    )
    checks += server_checks(settings, facts, gunicorn.workers if gunicorn else None)
    return checks


def render(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = []
    for c in checks:
        lines.append(f"{c.status}  {c.name:<{width}}  {c.detail}")
        if c.fix:
            lines.append(f"{'':6}{'':<{width}}  fix: {c.fix}")
    failed = sum(c.status == FAIL for c in checks)
    warned = sum(c.status == WARN for c in checks)
    lines.append(f"\n{failed} FAIL, {warned} WARN, {len(checks) - failed - warned} PASS")
    return "\n".join(lines)


def run(
    settings: Settings,
    env: Mapping[str, str],
    *,
    gunicorn_config: Path,
    nginx_conf: Path,
    systemd_unit: Path,
    as_json: bool,
) -> int:
    checks = collect(settings, env, gunicorn_config, nginx_conf, systemd_unit)
    ok = not any(c.status == FAIL for c in checks)
    if as_json:
        print(json.dumps({"ok": ok, "checks": [asdict(c) for c in checks]}, indent=2))
    else:
        print(render(checks))
    sys.stdout.flush()
    return 0 if ok else 1
