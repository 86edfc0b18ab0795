# Gunicorn configuration that keeps any Flask/SQLAlchemy app's database connections alive.
#
#   gunicorn --config python:idleproof.gunicorn_conf APP_MODULE:CALLABLE
#
# or, from a config file of your own:  from idleproof.gunicorn_conf import *
#
# Laid out like Gunicorn's examples/example_config.py. Every value can be overridden
# from the environment (GUNICORN_<NAME>); the database settings (DB_*) are read by
# idleproof.settings from the same environment, so one EnvironmentFile configures both.
# The hooks need nothing from the application: post_fork disposes every engine that
# carries the kit's protection, however the application made it.

import atexit
import glob
import logging
import multiprocessing
import os
import shutil
import tempfile
from typing import Any

from idleproof.settings import SettingsError

__all__ = [
    "access_log_format", "accesslog", "backlog", "bind", "child_exit",
    "control_socket_disable", "errorlog", "forwarded_allow_ips", "graceful_timeout",
    "keepalive", "loglevel", "max_requests", "max_requests_jitter", "on_starting",
    "post_fork", "post_worker_init", "preload_app", "proc_name", "threads", "timeout",
    "when_ready", "worker_class", "worker_tmp_dir", "workers",
]  # fmt: skip


def _env(name: str, default: str) -> str:
    return os.environ.get(f"GUNICORN_{name}", default)


def _int(name: str, default: int) -> int:
    raw = _env(name, str(default))
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(
            f"GUNICORN_{name}={raw!r} is not a whole number: set a whole number"
        ) from None


def _bool(name: str, default: bool) -> bool:
    raw = _env(name, "true" if default else "false").lower()
    if raw not in ("true", "false", "1", "0", "yes", "no"):
        raise SystemExit(f"GUNICORN_{name}={raw!r} is not a boolean: set true or false")
    return raw in ("true", "1", "yes")


#
# Server socket
#
#   bind - Where to listen: 'HOST:PORT' or 'unix:PATH'. Under systemd socket activation
#          (LISTEN_FDS set by the .socket unit) Gunicorn uses the inherited socket and
#          this is ignored.
#
#   backlog - Connections the kernel queues while every worker is busy. 64-2048.
#

bind = _env("BIND", "127.0.0.1:8000")
backlog = _int("BACKLOG", 2048)

#
# Worker processes
#
#   workers - Processes handling requests. 2-4 per core is the usual range; each holds
#             its own pool of DB_POOL_SIZE + DB_MAX_OVERFLOW connections, so
#             MariaDB's max_connections must cover hosts x workers x that sum.
#
#   worker_class - 'sync' suits a proxy-buffered app like this one (nginx in front).
#                  'gthread' adds threads per worker; the session is thread-scoped.
#
#   threads - Threads per worker for 'gthread'. 1-8.
#
#   timeout - A worker silent for this many seconds is killed and restarted. 10-120.
#             Must exceed DB_READ_TIMEOUT so a slow query is never cut mid-flight.
#
#   graceful_timeout - Seconds a worker gets to finish in-flight requests on restart.
#                      Keep it below systemd's TimeoutStopSec. 10-60.
#
#   keepalive - Seconds to hold an idle keep-alive connection. Behind nginx 2-5.
#
#   max_requests, max_requests_jitter - Recycle a worker after this many requests
#                                       (plus up to jitter), so slow leaks cannot
#                                       grow forever; jitter keeps workers from
#                                       restarting together. 1000-10000 / 10 %.
#

workers = _int("WORKERS", min(multiprocessing.cpu_count() * 2 + 1, 8))
worker_class = _env("WORKER_CLASS", "sync")
threads = _int("THREADS", 1)
timeout = _int("TIMEOUT", 60)
graceful_timeout = _int("GRACEFUL_TIMEOUT", 30)
keepalive = _int("KEEPALIVE", 5)
max_requests = _int("MAX_REQUESTS", 5000)
max_requests_jitter = _int("MAX_REQUESTS_JITTER", 500)

#
# Server mechanics
#
#   preload_app - Import the app in the master before forking: faster start and shared
#                 memory. It is also why post_fork below must dispose the engine: any
#                 connection the master opened would otherwise be shared by every
#                 worker ("Command Out of Sync", error 2014).
#
#   forwarded_allow_ips - Proxies whose X-Forwarded-* headers are trusted. nginx on the
#                         same host: '127.0.0.1' (a unix socket peer is always trusted).
#                         Never '*' on a reachable port. post_worker_init below takes
#                         the client's address from a trusted peer's X-Forwarded-For.
#
#   worker_tmp_dir - Heartbeat files; /dev/shm keeps a slow disk from looking like a
#                    hung worker.
#

preload_app = _bool("PRELOAD_APP", True)
forwarded_allow_ips = _env("FORWARDED_ALLOW_IPS", "127.0.0.1")
worker_tmp_dir = _env("WORKER_TMP_DIR", "/dev/shm" if os.path.isdir("/dev/shm") else "/tmp")
proc_name = _env("PROC_NAME", "") or None  # empty: Gunicorn's default

#
# Control
#
#   control_socket_disable - Gunicorn 25+ opens a management socket in $HOME or
#                            $XDG_RUNTIME_DIR. Off by default: systemd and signals
#                            manage this service, a hardened unit has no writable
#                            home, and two instances on one host would share the path.
#

control_socket_disable = _bool("CONTROL_SOCKET_DISABLE", True)

#
# Logging
#
#   errorlog - "-" is stderr: journald or the container runtime keep it; no log files
#              to rotate. The app's own lines (a database unavailable, a retried
#              request) go here too, with the request id and the client's address.
#
#   accesslog - Off by default. nginx in front already writes one line per request
#               with the client's address, nginx's request id, the status and the
#               upstream's response time (nginx/idle-proof.conf); Gunicorn's line
#               repeats it, at a cost in worker CPU that `make bench` measures (the
#               kit-accesslog row of bench/results/results.md). Under systemd every
#               line also costs the journal, whose default rate limit (10000 lines per
#               30 s per service) a busy app would exhaust, suppressing the app's own.
#               GUNICORN_ACCESSLOG=- writes it to stdout (the journal), e.g. without
#               nginx in front or while debugging; with Ansible, put it in
#               app_extra_environment.
#
#   loglevel - 'debug', 'info', 'warning', 'error' or 'critical'.
#
#   access_log_format - The client's address (from nginx's X-Forwarded-For, see
#                       forwarded_allow_ips) and nginx's request id (X-Request-Id; one
#                       the app made up when there is none), so a line of nginx's log
#                       leads to this one and to the app's own lines for that request.
#

accesslog = _env("ACCESSLOG", "") or None  # empty (the default): no access log
errorlog = _env("ERRORLOG", "-")
loglevel = _env("LOGLEVEL", "info")
if loglevel.lower() not in ("debug", "info", "warning", "error", "critical"):
    raise SystemExit(
        f"GUNICORN_LOGLEVEL={loglevel!r} is not a level: "
        "set debug, info, warning, error or critical"
    )
# Python's logging goes to the error log too, so the kit's lines ("replacing pooled
# connection", what the engine plugin overrode) land in the journal beside Gunicorn's. Set
# here, not in a hook: with preload_app the app and its engines load before any hook runs.
logging.basicConfig(level=loglevel.upper(), format="%(levelname)s %(name)s: %(message)s")
access_log_format = '%(h)s request_id=%({idle_proof.request_id}e)s "%(r)s" %(s)s %(b)s %(M)sms'

#
# Metrics
#
#   PROMETHEUS_MULTIPROC_DIR - Where each worker writes its /metrics counters, so the
#                              worker answering a scrape reports the sum over all of
#                              them (prometheus_client's multiprocess mode). Set it in
#                              the EnvironmentFile to choose the place; its *.db files
#                              are wiped when the master starts. Unset, this master uses
#                              a directory of its own in $TMPDIR (private to the service
#                              under systemd's PrivateTmp), removed when it exits. It must
#                              be set here, before preload_app imports the app.
#

_default_metrics_dir = os.path.join(tempfile.gettempdir(), f"idle-proof-metrics-{os.getpid()}")
metrics_dir = os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", _default_metrics_dir)


def _remove_default_metrics_dir(master_pid: int = os.getpid()) -> None:
    # atexit rather than on_exit: a start that fails (a refused setting, a failing
    # when_ready) never reaches on_exit. Workers inherit the handler: only the master acts.
    if os.getpid() == master_pid and metrics_dir == _default_metrics_dir:
        shutil.rmtree(metrics_dir, ignore_errors=True)


atexit.register(_remove_default_metrics_dir)

#
#   IDLEPROOF_METRICS_PORT - Serve that sum on http://IDLEPROOF_METRICS_BIND:PORT/metrics
#                            from the master, for an application that has no /metrics of
#                            its own. Empty (the default): not served. 1024-65535.
#
#   IDLEPROOF_METRICS_BIND - The address it listens on. Default 127.0.0.1 (a scraper on
#                            this host); never a public address.
#

metrics_port = os.environ.get("IDLEPROOF_METRICS_PORT", "").strip()
metrics_bind = os.environ.get("IDLEPROOF_METRICS_BIND", "127.0.0.1").strip()
if metrics_port and not (metrics_port.isdigit() and 1024 <= int(metrics_port) <= 65535):
    raise SystemExit(
        f"IDLEPROOF_METRICS_PORT={metrics_port!r} is not a port: set 1024-65535 or leave it empty"
    )

#
# The engine plugin
#
#   IDLEPROOF_PLUGIN - 1: every mysql+pymysql engine the application creates gets the
#                      kit's protection (idleproof.plugin), for an application whose
#                      database URL cannot carry ?plugin=idleproof. Must be switched on
#                      here, before preload_app imports the application. Default: off
#                      (the URL's ?plugin=idleproof works without it).
#

# Only now: the plugin imports idleproof.metrics, which picks its storage from
# PROMETHEUS_MULTIPROC_DIR when imported (set above).
from idleproof import plugin as _plugin  # noqa: E402

try:
    _plugin.enable_for_all_engines()
except SettingsError as _exc:
    raise SystemExit(str(_exc)) from None

#
# Server hooks
#
#   when_ready - Called in the master once the listening socket is ready.
#
#   post_fork - Called in each worker right after the fork, before it serves.
#
#   post_worker_init - Called in each worker once it has loaded the app.
#
#   child_exit - Called in the master when a worker exits: prometheus_client's
#                bookkeeping for a dead process (its counters stay in the sum).


def when_ready(server: Any) -> None:
    from idleproof.rules import Value, gunicorn_outlasts_database
    from idleproof.settings import SETTINGS, Settings

    # DATABASE_URL is the reference app's; another application keeps its URL elsewhere.
    s = Settings.from_env(url=os.environ.get("DATABASE_URL") or "")
    problem = gunicorn_outlasts_database(Value("GUNICORN_TIMEOUT", server.cfg.timeout), s.waits())
    if problem:
        raise SystemExit(str(problem))
    # Every setting in force, so the journal shows what this master runs with.
    in_force = " ".join(f"{row.env}={s.shown(row)}" for row in SETTINGS)
    server.log.info("database settings: %s; %s workers", in_force, server.cfg.workers)
    # What preload_app's import opened belongs to no worker: closed before any is forked, so
    # no socket of the master's is ever inherited (post_fork disposes again, to be sure).
    from idleproof.engine import protected_engines

    for engine in protected_engines():
        engine.dispose()
    if metrics_port:
        from idleproof.metrics import serve

        serve(metrics_bind, int(metrics_port))
        server.log.info("metrics on http://%s:%s/metrics", metrics_bind, metrics_port)


def post_fork(server: Any, worker: Any) -> None:
    from idleproof.engine import dispose_after_fork

    disposed = dispose_after_fork()
    worker.log.debug("post_fork: disposed %s engine(s) inherited from the master", disposed)


def post_worker_init(worker: Any) -> None:
    # The peer is nginx (or, on a unix socket, no address at all): take the client's
    # address from X-Forwarded-For when the peer is in forwarded_allow_ips.
    from idleproof.proxy import ProxyHeaders

    worker.wsgi = ProxyHeaders(worker.wsgi, worker.cfg.forwarded_allow_ips)


def on_starting(server: Any) -> None:
    # A previous master's counts would otherwise be added to this one's. Only *.db
    # files: the directory is the operator's choice and may hold other things.
    os.makedirs(metrics_dir, mode=0o700, exist_ok=True)
    for path in glob.glob(os.path.join(metrics_dir, "*.db")):
        os.remove(path)


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, metrics_dir)  # type: ignore[no-untyped-call]
