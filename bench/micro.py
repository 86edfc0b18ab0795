"""Where the kit's time goes: one request in process, the kit beside the ORM floor, and the
kit with one of its pieces taken out at a time (measurement only, never a setting).

    DATABASE_URL=... python -m bench.micro [ITERATIONS]

Runs in a process of its own (:func:`kit_pieces` starts it) with
``PROMETHEUS_MULTIPROC_DIR`` set, so the metrics write to files as under Gunicorn. Each
case is one WSGI call of the app (``GET /`` or ``POST /notes``), timed in interleaved
slices; the fastest slice counts (timeit's rule: what the code costs when nothing else got
in the way). Two clocks: this thread's CPU time (the Python work) and the wall clock (that
plus the round trips' wait). Prints JSON.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.configs import THROUGHPUT_WAIT_TIMEOUT
from harness import ROOT
from harness.mariadb import LocalMariaDB

MICRO_SLICES = 15
WSGIApp = Callable[[dict[str, Any], Any], Any]

# What each case takes out of the kit (one piece at a time).
PIECES = {
    "kit": "the kit as shipped",
    "no-metrics": "without the Prometheus counters, gauges and checkout histogram",
    "no-guard": "without the guard's checkout/checkin checks (fork, generation, poll, ping)",
    "no-retry": "without the retry wrapper around each view",
    "no-begin": "without the BEGIN before the first write (the write then autocommits)",
    "session-kept": "without removing the session after the request",
    "floor-orm": "the plain autocommit engine running the same views (harness.variants)",
}


def build(case: str) -> WSGIApp:
    """The Flask app for ``case``; pieces are taken out after ``create_app()`` built them."""
    from sqlalchemy import event

    from app import create_app, metrics
    from app.connection import begin_before_writes
    from app.db import get_db
    from app.guard import Observer

    if case == "floor-orm":
        from harness.variants import app as floor  # KIT_VARIANT=floor-orm: built at import

        return floor.wsgi_app
    if case == "no-metrics":
        kept = metrics.PrometheusObserver, metrics.instrument
        metrics.PrometheusObserver, metrics.instrument = Observer, lambda engine: None  # type: ignore[assignment,misc]
        try:
            app = create_app()
        finally:
            metrics.PrometheusObserver, metrics.instrument = kept  # type: ignore[misc]
        return app.wsgi_app
    app = create_app()
    db = get_db(app)
    if case == "no-guard":
        event.remove(db.engine, "checkout", db.guard.on_checkout)
        event.remove(db.engine, "checkin", db.guard.on_checkin)
    elif case == "no-retry":
        app.dispatch_request = type(app).dispatch_request.__get__(app)  # type: ignore[method-assign]
    elif case == "no-begin":
        event.remove(db.engine, "before_cursor_execute", begin_before_writes)
    elif case == "session-kept":
        app.teardown_appcontext_funcs.remove(db.remove_session)
    return app.wsgi_app


def wsgi_call(app: WSGIApp, method: str, path: str, body: bytes = b"") -> Callable[[], None]:
    """One request through the app's WSGI interface, without a server or a test client."""
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1",
        "CONTENT_TYPE": "application/json" if body else "",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
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


def per_call(fn: Callable[[], None], n: int) -> tuple[float, float]:
    """(thread CPU µs, wall µs) per call of ``fn``, over ``n`` calls."""
    cpu, wall = time.thread_time(), time.perf_counter()
    for _ in range(n):
        fn()
    return (time.thread_time() - cpu) / n * 1e6, (time.perf_counter() - wall) / n * 1e6


def measure(iterations: int) -> dict[str, Any]:
    calls = {}
    for case in PIECES:
        app = build(case)
        calls[(case, "GET /")] = wsgi_call(app, "GET", "/")
        calls[(case, "POST /notes")] = wsgi_call(app, "POST", "/notes", b'{"text": "bench"}')
    for fn in calls.values():
        per_call(fn, 30)  # warm-up: connections, compiled statements
    samples: dict[tuple[str, str], list[tuple[float, float]]] = {key: [] for key in calls}
    for _ in range(MICRO_SLICES):  # interleaved: a busy neighbour hits every case alike
        for key, fn in calls.items():
            samples[key].append(per_call(fn, max(1, iterations // MICRO_SLICES)))
    out: dict[str, Any] = {"iterations": iterations, "slices": MICRO_SLICES, "cases": {}}
    for (case, endpoint), values in samples.items():
        out["cases"].setdefault(case, {})[endpoint] = {
            "cpu_us": min(v[0] for v in values),
            "wall_us": min(v[1] for v in values),
        }
    return out


def kit_pieces(db: LocalMariaDB, iterations: int) -> dict[str, Any]:
    """:func:`measure` in a fresh process, metrics in a directory of their own."""
    with tempfile.TemporaryDirectory(prefix="bench-metrics-") as metrics_dir:
        env = {
            **os.environ,
            "DATABASE_URL": db.url,
            "DB_IDLE_TIMEOUT": str(THROUGHPUT_WAIT_TIMEOUT),
            "PROMETHEUS_MULTIPROC_DIR": metrics_dir,
            "KIT_VARIANT": "floor-orm",
        }
        proc = subprocess.run(
            [sys.executable, "-m", "bench.micro", str(iterations)],
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
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        sys.exit("PROMETHEUS_MULTIPROC_DIR is not set: run it through bench.micro.kit_pieces")
    Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(exist_ok=True)
    print(json.dumps(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 1500)))
