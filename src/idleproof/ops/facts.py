"""What ``idleproof doctor`` reads from a host: the server's variables, Gunicorn's config as it
loads, and the nginx and systemd timeouts. Reading only; judging is in :mod:`.checks`."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import runpy
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from idleproof.ops.database import connect
from idleproof.ops.errors import UsageError
from idleproof.settings import Settings

# What nginx and systemd assume when the file does not say.
NGINX_DEFAULT_PROXY_READ_TIMEOUT = 60.0
SYSTEMD_DEFAULT_TIMEOUT_STOP_SEC = 90.0


@dataclass
class ServerFacts:
    global_vars: dict[str, str]
    session_vars: dict[str, str]
    status: dict[str, str]
    # The app user's MAX_USER_CONNECTIONS: its account's, else the server's; 0: none.
    user_connection_limit: int = 0
    # This connection's TLS version and cipher; "" in plaintext.
    tls: str = ""


def read_server(settings: Settings) -> ServerFacts:
    """The server's timeouts and counters, asked over a connection like the app's own, so a
    SESSION value is exactly what the app's connections get."""
    conn = connect(settings)
    try:
        with conn.cursor() as cur:
            names = "('wait_timeout', 'interactive_timeout', 'max_connections')"
            replication = "('read_only', 'rpl_semi_sync_master_enabled')"
            cur.execute(
                f"SHOW GLOBAL VARIABLES WHERE Variable_name IN {names} "
                f"OR Variable_name IN {replication}"
            )
            global_vars = {str(k): str(v) for k, v in cur.fetchall()}
            cur.execute(f"SHOW SESSION VARIABLES WHERE Variable_name IN {names}")
            session_vars = {str(k): str(v) for k, v in cur.fetchall()}
            cur.execute(
                "SHOW GLOBAL STATUS WHERE Variable_name IN ('Threads_connected', "
                "'Aborted_clients', 'Aborted_connects', 'Max_used_connections', 'Uptime', "
                "'Rpl_semi_sync_master_clients')"
            )
            status = {str(k): str(v) for k, v in cur.fetchall()}
            cur.execute("SHOW GRANTS")
            grants = " ".join(str(row[0]) for row in cur.fetchall())
            cur.execute("SELECT @@GLOBAL.max_user_connections")
            row = cur.fetchone()
            cur.execute("SHOW SESSION STATUS WHERE Variable_name IN ('Ssl_version', 'Ssl_cipher')")
            tls = " ".join(str(v) for _, v in sorted(cur.fetchall(), reverse=True) if v)
    finally:
        conn.close()
    account = re.search(r"MAX_USER_CONNECTIONS\s+(\d+)", grants)
    limit = (
        int(account.group(1)) if account and int(account.group(1)) else int(row[0] if row else 0)
    )
    return ServerFacts(global_vars, session_vars, status, limit, tls)


@dataclass
class AppFacts:
    """What the imported app holds and what ``post_fork`` did to it (:mod:`.hooks`)."""

    DISPOSED: ClassVar[str] = "disposed"
    NO_ENGINE: ClassVar[str] = "no engine"

    # DISPOSED, NO_ENGINE, what the hook did instead, or "" when it was not run.
    post_fork: str = ""
    # The MySQL engines without the kit's protection (URLs without passwords).
    unprotected: list[str] = field(default_factory=list)
    engines: int = 0
    # The import failed or hung: why.
    error: str = ""


@dataclass
class GunicornFacts:
    workers: int
    preload_app: bool
    timeout: int
    graceful_timeout: int
    post_fork: Any
    # The app Gunicorn loads (APP_MODULE), and the directory it imports it from.
    app_uri: str = "app.wsgi:app"
    chdir: str = "."
    # The app as Gunicorn would load it (.hooks); None when it was not looked at.
    app: AppFacts | None = None


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


def load_config(config: str) -> dict[str, Any]:
    """A Gunicorn config's names, as Gunicorn reads them: a file, or ``python:MODULE``.
    The logging it sets up for Gunicorn (the kit's does) is undone: this is not Gunicorn."""
    handlers, level = logging.root.handlers[:], logging.root.level
    try:
        if config.startswith("python:"):
            return runpy.run_module(config.removeprefix("python:"))
        return runpy.run_path(config)
    finally:
        logging.root.handlers[:] = handlers
        logging.root.setLevel(level)


def read_gunicorn(
    config: str,
    env: Mapping[str, str],
    argv: list[str] | None = None,
    workdir: str | None = None,
) -> GunicornFacts:
    """Gunicorn's settings as Gunicorn itself would load them: the config (a file or
    ``python:MODULE``), then ``GUNICORN_CMD_ARGS``, then the command line (``argv``: the
    unit's ExecStart arguments). ``workdir``: where Gunicorn runs and imports the app from
    (the unit's WorkingDirectory=); default: this process's own, as for Gunicorn."""
    from gunicorn.config import Config

    with environment(env):
        cfg = Config()  # keeps the environment it was made in, for GUNICORN_CMD_ARGS
        namespace = load_config(config)
    parser = cfg.parser()
    try:
        args = parser.parse_args(argv or [])
        env_args = parser.parse_args(cfg.get_cmd_args_from_env())
    except SystemExit:
        raise ValueError("GUNICORN_CMD_ARGS or ExecStart has an option Gunicorn refuses") from None
    for key, value in namespace.items():
        if key in cfg.settings and value is not None:
            cfg.set(key, value)
    for parsed in (env_args, args):
        for key, value in vars(parsed).items():
            if value is not None and key not in ("args", "config"):
                cfg.set(key, value)
    apps = args.args or env_args.args
    hook = cfg.settings["post_fork"]
    return GunicornFacts(
        workers=int(cfg.workers),
        preload_app=bool(cfg.preload_app),
        timeout=int(cfg.timeout),
        graceful_timeout=int(cfg.graceful_timeout),
        post_fork=None if hook.value is hook.default else hook.value,
        app_uri=apps[0] if apps else (cfg.wsgi_app or "app.wsgi:app"),
        chdir=str(cfg.chdir if namespace.get("chdir") else workdir or os.getcwd()),
    )


def config_in_argv(argv: list[str] | None) -> str | None:
    """The ``--config``/``-c`` that ExecStart gives Gunicorn, if any."""
    words = argv or []
    for i, word in enumerate(words):
        if word in ("-c", "--config") and i + 1 < len(words):
            return words[i + 1]
        if word.startswith("--config="):
            return word.partition("=")[2]
    return None


def read_text(path: Path, flag: str) -> str:
    """A configuration file's text, or one line that says what is wrong with it."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{flag} {path}: {exc.strerror or exc}: pass the file in force") from None
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"{flag} {path}: not UTF-8 text (byte {exc.start}): pass the file in force"
        ) from None


# nginx and systemd duration units, in seconds.
_UNITS = {
    "": 1, "ms": 0.001, "s": 1, "sec": 1, "second": 1, "seconds": 1, "m": 60, "min": 60,
    "minute": 60, "minutes": 60, "h": 3600, "hr": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400, "w": 604800, "us": 0.000001, "usec": 0.000001,
    "msec": 0.001,
}  # fmt: skip


def seconds(value: str) -> float | None:
    """nginx/systemd durations: '65s', '1m', '90', '500ms', '1min 30s'; None when unreadable."""
    text = value.strip().lower()
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", text)
    if not parts or re.sub(r"(\d+(?:\.\d+)?)\s*([a-z]*)", "", text).strip():
        return None
    total = 0.0
    for number, unit in parts:
        if unit not in _UNITS:
            return None
        total += float(number) * _UNITS[unit]
    return total


def read_proxy_read_timeout(path: Path) -> float | None:
    """nginx's ``proxy_read_timeout`` in the site include (nginx's default when absent)."""
    text = read_text(path, "--nginx-conf")
    match = re.search(r"^\s*proxy_read_timeout\s+([^;]+);", text, re.M)
    return seconds(match.group(1)) if match else NGINX_DEFAULT_PROXY_READ_TIMEOUT


def read_unit(path: Path) -> dict[str, str]:
    """The ``[Service]`` settings in force: the unit file, then its drop-ins in order
    (``<unit>.d/*.conf`` beside it), later ones winning; an empty value resets."""
    files = [path, *sorted((path.parent / f"{path.name}.d").glob("*.conf"))]
    found: dict[str, str] = {}
    for file in files:
        section = ""
        for line in read_text(file, "--systemd-unit").splitlines():
            line = line.strip()
            if line.startswith("[") and line.endswith("]"):
                section = line
            elif section == "[Service]" and "=" in line and not line.startswith(("#", ";")):
                key, _, value = line.partition("=")
                found[key.strip()] = value.strip()
    return found


def read_timeout_stop_sec(unit: Mapping[str, str]) -> float | None:
    """The unit's ``TimeoutStopSec=`` (systemd's default when absent)."""
    value = unit.get("TimeoutStopSec", "")
    return seconds(value) if value else SYSTEMD_DEFAULT_TIMEOUT_STOP_SEC


def gunicorn_argv(unit: Mapping[str, str]) -> list[str] | None:
    """The arguments ``ExecStart=`` gives Gunicorn, or None when it does not run Gunicorn."""
    try:
        words = shlex.split(unit.get("ExecStart", "").lstrip("-@:+!"))
    except ValueError:
        return None
    if not words or "gunicorn" not in Path(words[0]).name:
        return None
    return words[1:]
