"""How the kit scales: worker counts and classes, a real nginx in front, memory per worker.

* workers: ``GET /`` at ``--scaling-connections`` for 1, 2 and 4 sync workers and for
  ``gthread`` (1 and 2 workers of 4 threads), interleaved rounds;
* nginx: 64 connections straight to Gunicorn and through a real nginx serving the
  canonical site (``harness/nginx.py``; Gunicorn on a unix socket, as deployed; the site's
  per-address limits exempt loopback), interleaved rounds, both endpoints' latencies;
* memory: resident (RSS), proportional (PSS) and private (USS) memory of the master and
  each worker after a short load, with ``preload_app`` on (the shipped default) and off.
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.configs import ENDPOINTS, THROUGHPUT_WAIT_TIMEOUT, app_env, start_app
from bench.load import Served, WrkLoad, interleaved, medians, run_wrk, start_all, stop_all
from bench.progress import Progress
from harness.gunicorn import GunicornServer
from harness.mariadb import LocalMariaDB
from harness.nginx import NginxServer

GET = {"GET /": ("/", "get")}
# label -> (workers, extra environment)
WORKER_SETUPS: dict[str, tuple[int, dict[str, str]]] = {
    "1 sync": (1, {}),
    "2 sync": (2, {}),
    "4 sync": (4, {}),
    "gthread 1x4": (1, {"GUNICORN_WORKER_CLASS": "gthread", "GUNICORN_THREADS": "4"}),
    "gthread 2x4": (2, {"GUNICORN_WORKER_CLASS": "gthread", "GUNICORN_THREADS": "4"}),
}
NGINX_CONNECTIONS = 64


def worker_scaling(
    db: LocalMariaDB, load: WrkLoad, rounds: int, raw: Path, progress: Progress, warm_up: int
) -> dict[str, Any]:
    def starter(label: str) -> Callable[[], Served]:
        workers, extra = WORKER_SETUPS[label]
        tag = "scaling-" + label.replace(" ", "-")
        return lambda: start_app(
            db, "kit", raw, workers, THROUGHPUT_WAIT_TIMEOUT, extra=extra, label=tag
        )

    starters = {s: starter(s) for s in WORKER_SETUPS}
    runs = interleaved(db, starters, GET, load, rounds, progress, warm_up)
    return {label: medians(by_endpoint["GET /"]) for label, by_endpoint in runs.items()}


@dataclass
class BehindNginx:
    """The kit on a unix socket with nginx in front: what ``make deploy`` runs."""

    gunicorn: GunicornServer
    nginx: NginxServer

    @property
    def url(self) -> str:
        return self.nginx.url

    @property
    def master_pid(self) -> int | None:
        return self.gunicorn.master_pid

    def stop(self) -> None:
        self.gunicorn.stop()
        self.nginx.stop()


def start_behind_nginx(db: LocalMariaDB, workers: int, directory: Path, raw: Path) -> BehindNginx:
    env = {
        **app_env(db, "kit", THROUGHPUT_WAIT_TIMEOUT),
        "GUNICORN_BIND": f"unix:{directory / 'gunicorn.sock'}",
    }
    gunicorn = GunicornServer(env, raw / "gunicorn-behind-nginx.log", workers=workers)
    nginx = NginxServer(directory / "nginx", env["GUNICORN_BIND"]).start()
    gunicorn.url = nginx.url  # it is ready when nginx gets an answer from it
    try:
        gunicorn.start()
    except BaseException:
        nginx.stop()
        raise
    return BehindNginx(gunicorn, nginx)


def through_nginx(
    db: LocalMariaDB,
    workers: int,
    rounds: int,
    duration: int,
    raw: Path,
    progress: Progress,
    warm_up: int,
) -> dict[str, Any]:
    """64 connections on both endpoints, straight to Gunicorn and through nginx."""
    load = WrkLoad(threads=1, connections=NGINX_CONNECTIONS, duration=duration)
    with tempfile.TemporaryDirectory(prefix="bench-nginx-", dir=raw) as tmp:
        starters: dict[str, Callable[[], Served]] = {
            "direct": lambda: start_app(db, "kit", raw, workers, THROUGHPUT_WAIT_TIMEOUT),
            "nginx": lambda: start_behind_nginx(db, workers, Path(tmp), raw),
        }
        runs = interleaved(db, starters, ENDPOINTS, load, rounds, progress, warm_up)
    out = {
        label: {endpoint: medians(rs) for endpoint, rs in by_endpoint.items()}
        for label, by_endpoint in runs.items()
    }
    return {
        "connections": NGINX_CONNECTIONS,
        "threads": load.threads,
        "workers": workers,
        "runs": out,
    }


def _memory_kib(pid: int) -> dict[str, int]:
    """RSS, PSS and USS (private clean + dirty) of ``pid``, in KiB, from smaps_rollup."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, rest = line.partition(":")
        fields[name] = int(rest.split()[0])
    return {
        "rss_kib": fields["Rss"],
        "pss_kib": fields["Pss"],
        "uss_kib": fields["Private_Clean"] + fields["Private_Dirty"],
    }


def _children(parent: int) -> list[int]:
    text = Path(f"/proc/{parent}/task/{parent}/children").read_text()
    return [int(pid) for pid in text.split()]


def memory_per_worker(db: LocalMariaDB, workers: int, duration: int, raw: Path) -> dict[str, Any]:
    """Memory of the master and each worker after load, ``preload_app`` on and off."""

    def starter(preload: bool) -> Callable[[], Served]:
        extra = {"GUNICORN_PRELOAD_APP": "true" if preload else "false"}
        label = "preload" if preload else "no-preload"
        return lambda: start_app(
            db, "kit", raw, workers, THROUGHPUT_WAIT_TIMEOUT, extra=extra, label=label
        )

    servers = start_all({"preload": starter(True), "no-preload": starter(False)})
    out = {}
    try:
        for label, server in servers.items():
            for path, mode in ("/", "get"), ("/notes", "post"):
                run_wrk(server.url + path, mode, WrkLoad(1, 4, duration))
            assert server.master_pid is not None
            per_worker = [_memory_kib(pid) for pid in _children(server.master_pid)]
            out[label] = {
                "master": _memory_kib(server.master_pid),
                "workers": per_worker,
                "worker_median": {
                    key: statistics.median(w[key] for w in per_worker) for key in per_worker[0]
                },
            }
    finally:
        stop_all(servers)
    return out


def scaling(
    db: LocalMariaDB,
    load: WrkLoad,
    rounds: int,
    workers: int,
    raw: Path,
    progress: Progress,
    warm_up: int,
) -> dict[str, Any]:
    result: dict[str, Any] = {"connections": load.connections}
    result["workers"] = worker_scaling(db, load, rounds, raw, progress, warm_up)
    result["nginx"] = through_nginx(db, workers, rounds, load.duration, raw, progress, warm_up)
    result["memory"] = memory_per_worker(db, workers, load.duration, raw)
    mem = result["memory"]["preload"]["worker_median"]
    progress(
        f"memory per worker with preload_app: RSS {mem['rss_kib'] / 1024:.1f} MiB, "
        f"USS {mem['uss_kib'] / 1024:.1f} MiB",
        count=False,
    )
    return result
