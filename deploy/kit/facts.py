"""What ``kit doctor`` reads from a host: the server's variables, Gunicorn's config as it
loads, and the nginx and systemd timeouts. Reading only; judging is in :mod:`kit.checks`."""

from __future__ import annotations

import contextlib
import os
import re
import runpy
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.settings import Settings
from kit.database import connect

# What nginx and systemd assume when the file does not say.
NGINX_DEFAULT_PROXY_READ_TIMEOUT = 60.0
SYSTEMD_DEFAULT_TIMEOUT_STOP_SEC = 90.0


@dataclass
class ServerFacts:
    global_vars: dict[str, str]
    session_vars: dict[str, str]
    status: dict[str, str]


def read_server(settings: Settings) -> ServerFacts:
    """The server's timeouts and counters, asked over a connection like the app's own, so a
    SESSION value is exactly what the app's connections get."""
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


@dataclass
class GunicornFacts:
    workers: int
    preload_app: bool
    timeout: int
    graceful_timeout: int
    post_fork: Any


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


def seconds(value: str) -> float | None:
    """nginx/systemd durations: '65s', '1m', '90', '1min 30s'; None when unreadable."""
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


def read_proxy_read_timeout(path: Path) -> float | None:
    """nginx's ``proxy_read_timeout`` in the site include (nginx's default when absent)."""
    match = re.search(r"^\s*proxy_read_timeout\s+([^;]+);", path.read_text(), re.M)
    return seconds(match.group(1)) if match else NGINX_DEFAULT_PROXY_READ_TIMEOUT


def read_timeout_stop_sec(path: Path) -> float | None:
    """The unit's ``TimeoutStopSec=`` (systemd's default when absent)."""
    match = re.search(r"^\s*TimeoutStopSec\s*=\s*(.+)$", path.read_text(), re.M)
    return seconds(match.group(1)) if match else SYSTEMD_DEFAULT_TIMEOUT_STOP_SEC
