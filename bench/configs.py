"""The configurations the benchmark compares, the endpoints it loads, and how each is served.

Every configuration runs under the kit's own ``gunicorn.conf.py``; only the WSGI app (the
kit's, or one of :mod:`harness.variants`) and its environment differ.
"""

from __future__ import annotations

from pathlib import Path

from harness.gunicorn import GunicornServer
from harness.mariadb import LocalMariaDB

BENCH = Path(__file__).resolve().parent

# name -> (WSGI app, extra environment)
CONFIGS: dict[str, tuple[str, dict[str, str]]] = {
    "bare": ("harness.variants:app", {"KIT_VARIANT": "bare"}),
    "textbook": ("harness.variants:app", {"KIT_VARIANT": "textbook"}),
    "kit": ("app.wsgi:app", {}),
    "kit-noremove": ("harness.variants:app", {"KIT_VARIANT": "kit-noremove"}),
    "kit-close": ("harness.variants:app", {"KIT_VARIANT": "kit-close"}),
}
FAULT_CONFIGS = ("bare", "textbook", "kit")
ENDPOINTS = {"GET /": ("/", "get"), "POST /notes": ("/notes", "post")}
# Throughput: a server that never drops a connection mid-run (the benchmark's own
# idle gaps between a configuration's turns stay far below it).
THROUGHPUT_WAIT_TIMEOUT = 600
# Faults: the fault tests' server (a quiet night that fits in seconds).
FAULT_WAIT_TIMEOUT = 2


def app_env(
    db: LocalMariaDB, config: str, wait_timeout: int, port: int | None = None
) -> dict[str, str]:
    """The app's environment for ``config``; ``port`` points it at a proxy instead."""
    url = db.url.replace(f":{db.port}/", f":{port or db.port}/")
    return {"DATABASE_URL": url, "DB_IDLE_TIMEOUT": str(wait_timeout), **CONFIGS[config][1]}


def start_app(
    db: LocalMariaDB,
    config: str,
    raw: Path,
    workers: int,
    wait_timeout: int,
    port: int | None = None,
) -> GunicornServer:
    env = app_env(db, config, wait_timeout, port)
    log = raw / f"gunicorn-{config}.log"
    return GunicornServer(env, log, app=CONFIGS[config][0], workers=workers).start()
