"""Where the kit's time goes: one request in process, the kit beside the ORM floor.

    DATABASE_URL=... python -m bench.micro [ITERATIONS]

Runs in a process of its own (:func:`where_time_goes` starts it) with
``PROMETHEUS_MULTIPROC_DIR`` set, so the metrics write to files as under Gunicorn. Each
case is one WSGI call of the app (``GET /`` or ``POST /notes``), no server, no HTTP:

* timings: the kit, the kit with one piece taken out (measurement only, never a setting)
  and ``floor-orm``, in interleaved slices; the fastest slice counts (timeit's rule: what
  the code costs when nothing else got in the way). Two clocks: this thread's CPU time
  (the Python work) and the wall clock (that plus the wait for MariaDB);
* a profile of the kit and of ``floor-orm`` by area (:mod:`bench.profile`);
* Gunicorn's access line: ``Logger.access()`` with the kit's ``access_log_format`` for one
  request, written to a file.

Prints JSON.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import runpy
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bench.configs import THROUGHPUT_WAIT_TIMEOUT
from bench.profile import profile_by_area
from harness import ROOT
from harness.mariadb import LocalMariaDB

MICRO_SLICES = 15
WSGIApp = Callable[[dict[str, Any], Any], Any]

CASES = {
    "kit": "the kit as shipped",
    "session-kept": "the kit, its session not removed after the request (no pool "
    "checkin/checkout, no new `Session`)",
    "no-begin": "the kit without the `BEGIN` before the first write (the write autocommits, "
    "so no `COMMIT` is sent either)",
    "floor-orm": "the plain autocommit engine running the same views",
}
PROFILED = ("kit", "floor-orm")


def build(case: str) -> WSGIApp:
    """The Flask app for ``case``; a piece is taken out after ``create_app()`` built it."""
    from sqlalchemy import event

    from app import create_app
    from idleproof.flask import get_db

    if case == "floor-orm":
        from harness.variants import app as floor  # KIT_VARIANT=floor-orm: built at import

        return floor.wsgi_app
    app = create_app()
    db = get_db(app)
    if case == "no-begin":
        assert db.engine is not None
        event.listen(
            db.engine, "connect", lambda conn, record: setattr(conn, "opens_transactions", False)
        )
        db.engine.dispose()
    elif case == "session-kept":
        app.teardown_appcontext_funcs.remove(db.remove_session)
    return app.wsgi_app


def environ_for(method: str, path: str, body: bytes) -> dict[str, Any]:
    """A WSGI environ like the one Gunicorn's sync worker builds behind nginx."""
    return {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "RAW_URI": path,
        "QUERY_STRING": "",
        "SCRIPT_NAME": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.0",
        "SERVER_SOFTWARE": "gunicorn",
        "REMOTE_ADDR": "203.0.113.9",
        "REMOTE_PORT": "50000",
        "HTTP_HOST": "127.0.0.1",
        "HTTP_X_FORWARDED_FOR": "203.0.113.9",
        "HTTP_X_REQUEST_ID": "0123456789abcdef0123456789abcdef",
        "HTTP_CONNECTION": "close",
        "CONTENT_TYPE": "application/json" if body else "",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
        "idle_proof.request_id": "0123456789abcdef0123456789abcdef",
    }


def wsgi_call(app: WSGIApp, method: str, path: str, body: bytes = b"") -> Callable[[], None]:
    """One request through the app's WSGI interface, without a server or a test client."""
    environ = environ_for(method, path, body)
    statuses: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        statuses.append(status)

    def call() -> None:
        statuses.clear()
        result = app({**environ, "wsgi.input": io.BytesIO(body)}, start_response)
        b"".join(result)
        if hasattr(result, "close"):
            result.close()
        if not statuses[0].startswith("2"):
            raise SystemExit(f"{method} {path} answered {statuses[0]}")

    return call


def access_line(log_path: Path) -> Callable[[], None]:
    """Gunicorn's ``Logger.access()`` for one ``GET /``, as gunicorn.conf.py formats it."""
    from gunicorn.config import Config
    from gunicorn.glogging import Logger

    cfg = Config()
    cfg.set("accesslog", str(log_path))
    cfg.set(
        "access_log_format", runpy.run_path(str(ROOT / "gunicorn.conf.py"))["access_log_format"]
    )
    logger = Logger(cfg)
    environ = environ_for("GET", "/", b"")
    headers = [("HOST", "127.0.0.1"), ("X-FORWARDED-FOR", "203.0.113.9"), ("CONNECTION", "close")]
    request = SimpleNamespace(headers=headers)
    response = SimpleNamespace(
        status="200 OK", headers=[("Content-Type", "application/json")], sent=2345
    )
    took = datetime.timedelta(microseconds=4500)
    return lambda: logger.access(response, request, environ, took)


def per_call(fn: Callable[[], None], n: int) -> tuple[float, float]:
    """(thread CPU µs, wall µs) per call of ``fn``, over ``n`` calls."""
    cpu, wall = time.thread_time(), time.perf_counter()
    for _ in range(n):
        fn()
    return (time.thread_time() - cpu) / n * 1e6, (time.perf_counter() - wall) / n * 1e6


def fastest(calls: dict[Any, Callable[[], None]], iterations: int) -> dict[Any, dict[str, float]]:
    """Each call's fastest slice of ``iterations / MICRO_SLICES`` calls, interleaved."""
    for fn in calls.values():
        per_call(fn, 30)  # warm-up: connections, compiled statements
    samples: dict[Any, list[tuple[float, float]]] = {key: [] for key in calls}
    for _ in range(MICRO_SLICES):  # interleaved: a busy neighbour hits every case alike
        for key, fn in calls.items():
            samples[key].append(per_call(fn, max(1, iterations // MICRO_SLICES)))
    return {
        key: {"cpu_us": min(v[0] for v in values), "wall_us": min(v[1] for v in values)}
        for key, values in samples.items()
    }


def measure(iterations: int, log_dir: Path) -> dict[str, Any]:
    calls: dict[Any, Callable[[], None]] = {}
    for case in CASES:
        app = build(case)
        calls[(case, "GET /")] = wsgi_call(app, "GET", "/")
        calls[(case, "POST /notes")] = wsgi_call(app, "POST", "/notes", b'{"text": "bench"}')
    calls["access line"] = access_line(log_dir / "access.log")
    timed = fastest(calls, iterations)
    out: dict[str, Any] = {
        "iterations": iterations,
        "slices": MICRO_SLICES,
        "access_line": timed.pop("access line"),
        "cases": {},
        "profile": {},
    }
    for (case, endpoint), figures in timed.items():
        out["cases"].setdefault(case, {})[endpoint] = figures
    profiled = {key: calls[key] for key in calls if isinstance(key, tuple) and key[0] in PROFILED}
    for (case, endpoint), areas in profile_by_area(profiled, iterations).items():
        out["profile"].setdefault(case, {})[endpoint] = areas
    return out


def where_time_goes(db: LocalMariaDB, iterations: int) -> dict[str, Any]:
    """:func:`measure` in a fresh process, metrics and the access log in a directory of
    their own."""
    with tempfile.TemporaryDirectory(prefix="bench-micro-") as scratch:
        env = {
            **os.environ,
            "DATABASE_URL": db.url,
            "DB_IDLE_TIMEOUT": str(THROUGHPUT_WAIT_TIMEOUT),
            "PROMETHEUS_MULTIPROC_DIR": str(Path(scratch) / "metrics"),
            "KIT_VARIANT": "floor-orm",
        }
        proc = subprocess.run(
            [sys.executable, "-m", "bench.micro", str(iterations), scratch],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"bench.micro failed: {proc.stderr.strip()[-1000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


if __name__ == "__main__":
    if len(sys.argv) != 3 or not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        sys.exit("run it through bench.micro.where_time_goes (ITERATIONS, a scratch directory)")
    Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(exist_ok=True)
    print(json.dumps(measure(int(sys.argv[1]), Path(sys.argv[2]))))
