"""The configurations the benchmark compares, the endpoints it loads, and how each is served.

Every configuration runs under the kit's own ``gunicorn.conf.py``; only the WSGI app (the
kit's, or one of :mod:`harness.variants`) and its environment differ.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from harness.gunicorn import GunicornServer
from harness.mariadb import LocalMariaDB

BENCH = Path(__file__).resolve().parent

# The kit as shipped writes no Gunicorn access log (gunicorn.conf.py explains why);
# GUNICORN_ACCESSLOG=- turns it on, as "kit-accesslog" runs it.
_VARIANT = "harness.variants:app"
# name -> (WSGI app, extra environment)
CONFIGS: dict[str, tuple[str, dict[str, str]]] = {
    "kit": ("app.wsgi:app", {"GUNICORN_ACCESSLOG": ""}),
    "kit-accesslog": ("app.wsgi:app", {"GUNICORN_ACCESSLOG": "-"}),
    "fsa-preping": (_VARIANT, {"KIT_VARIANT": "fsa-preping"}),
    "fsa-recycle": (_VARIANT, {"KIT_VARIANT": "fsa-recycle"}),
    "floor-orm": (_VARIANT, {"KIT_VARIANT": "floor-orm"}),
    "floor": (_VARIANT, {"KIT_VARIANT": "floor"}),
}
# What each configuration is, for the report.
DESCRIPTIONS = {
    "kit": "the kit as shipped (no Gunicorn access log)",
    "kit-accesslog": "the kit with Gunicorn's access log on (`GUNICORN_ACCESSLOG=-`)",
    "fsa-preping": "Flask-SQLAlchemy 3.1, `pool_pre_ping` + `pool_recycle` (the textbook fix)",
    "fsa-recycle": "Flask-SQLAlchemy 3.1, `pool_recycle` only (fast, not safe)",
    "floor-orm": "plain engine in autocommit running the kit's ORM views (the ORM floor)",
    "floor": "plain engine in autocommit, one statement per request, no ORM (round-trip floor)",
}
# The goals on GET / and POST /notes: kit throughput / theirs, at least this.
TARGETS = {"fsa-recycle": 1.0, "floor-orm": 0.95}
FAULT_CONFIGS = ("fsa-recycle", "fsa-preping", "kit")
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
    extra: Mapping[str, str] | None = None,
    label: str | None = None,
) -> GunicornServer:
    env = {**app_env(db, config, wait_timeout, port), **(extra or {})}
    log = raw / f"gunicorn-{label or config}.log"
    return GunicornServer(env, log, app=CONFIGS[config][0], workers=workers).start()
