"""Applications no one here wrote, installed unmodified from the package index, run two ways.

* ``naive``: as the application's own documentation deploys it: its defaults, its
  recommended settings, plain Gunicorn;
* ``kit``: the same installation with the engine plugin named in its database URL and
  Gunicorn started with the kit's config module (``python:idleproof.gunicorn_conf``).

Nothing of the applications is copied here: each is a pinned spec from the index, installed
into a virtualenv of its own (with the idleproof wheel and its gunicorn extra), kept between
runs outside the repository. The same specs and settings are what
ansible/inventories/mlflow and the fleet test deploy with ``site.yml``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from harness import ROOT
from harness.fleet import Fleet
from harness.gunicorn import GunicornServer
from harness.traffic import Load
from idleproof.ops.environment import read_env_file

CACHE = Path(os.environ.get("IDLE_PROOF_CACHE", "/var/cache/idle-proof-kit")) / "apps"
KIT_WHEELS = ROOT / "ansible" / "roles" / "app" / "files"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    json: dict[str, object] | None = None
    # HTTP Basic credentials, "user:password".
    auth: str = ""


@dataclass(frozen=True)
class App:
    name: str
    # pip specs from the index; wheels built from a source-only dependency (pure Python).
    packages: tuple[str, ...]
    source_only: tuple[str, ...]
    wsgi: str
    # The environment variable the application reads its database URL from.
    url_variable: str
    # The application's own settings, as its documentation sets them.
    env: dict[str, str] = field(default_factory=dict)
    # A configuration file of its own (name, content), if it reads one.
    config_file: tuple[str, str] | None = None
    # Schema set-up: a command that reads the migration URL on stdin.
    migrate: tuple[str, ...] = ()
    # The busiest read, a write, and what must exist before the first read.
    read: Request = Request("GET", "/")
    write: Request = Request("GET", "/")
    setup: tuple[Request, ...] = ()
    health: str = "/"


MLFLOW = App(
    name="mlflow",
    packages=("mlflow==3.17.2",),
    source_only=(),
    wsgi="mlflow.server:app",
    # What `mlflow server --backend-store-uri URL` sets for the Gunicorn it starts.
    url_variable="_MLFLOW_SERVER_FILE_STORE",
    env={
        "_MLFLOW_SERVER_ARTIFACT_ROOT": "{state}/artifacts",
        "_MLFLOW_SGI_NAME": "gunicorn",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_SERVER_ALLOWED_HOSTS": "*",
    },
    # `mlflow db upgrade URL`, with the URL read from stdin instead of the command line.
    migrate=(
        "python",
        "-c",
        "import sys; from mlflow.db import upgrade; upgrade.callback(sys.stdin.readline().strip())",
    ),
    read=Request("GET", "/api/2.0/mlflow/experiments/search?max_results=10"),
    write=Request("POST", "/api/2.0/mlflow/experiments/create", {"name": "{unique}"}),
    health="/health",
)

IHATEMONEY = App(
    name="ihatemoney",
    packages=("ihatemoney[database]==7.2.1",),
    # Published as source only; built into a wheel once (pure Python).
    source_only=("debts==0.5",),
    wsgi="ihatemoney.wsgi:application",
    url_variable="IHATEMONEY_DATABASE_URI",
    env={"IHATEMONEY_SETTINGS_FILE_PATH": "{config}/ihatemoney.cfg"},
    # Its documented settings file, reading the URL and the key from the environment.
    config_file=(
        "ihatemoney.cfg",
        "import os\n"
        'SQLALCHEMY_DATABASE_URI = os.environ["IHATEMONEY_DATABASE_URI"]\n'
        "SQLALCHEMY_TRACK_MODIFICATIONS = False\n"
        'SECRET_KEY = os.environ.get("IHATEMONEY_SECRET_KEY", "a test key, not a secret")\n'
        "SESSION_COOKIE_SECURE = False\n"
        "ACTIVATE_DEMO_PROJECT = False\n",
    ),
    # Its schema is brought up to date by create_app(), as its own start-up does.
    migrate=(
        "python",
        "-c",
        "import os, sys; os.environ['IHATEMONEY_DATABASE_URI'] = sys.stdin.readline().strip(); "
        "from ihatemoney.run import create_app; create_app()",
    ),
    read=Request("GET", "/api/projects/demo", auth="demo:demo-password"),
    write=Request(
        "POST", "/api/projects/demo/members", {"name": "{unique}"}, auth="demo:demo-password"
    ),
    setup=(
        Request(
            "POST",
            "/api/projects",
            {
                "name": "demo",
                "id": "demo",
                "password": "demo-password",
                "contact_email": "demo@example.com",
                "default_currency": "XXX",
            },
        ),
    ),
    health="/healthcheck",
)

APPS = {app.name: app for app in (MLFLOW, IHATEMONEY)}


def quiet(argv: list[str]) -> None:
    """A pip run: its output only when it fails (pip's configuration warns on every
    package otherwise). pip keeps the system's CA bundle: the tests' own clients trust a
    fleet's CA (tests/helpers.trusting), which the package index's certificate is not from,
    and which does not exist yet before the fleet's first converge."""
    env = {k: v for k, v in os.environ.items() if k != "REQUESTS_CA_BUNDLE"}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=1800, check=False, env=env)
    if done.returncode:
        raise RuntimeError(f"{' '.join(argv[:4])} failed: {done.stderr[-3000:]}")


def kit_wheel() -> Path:
    wheels = sorted(KIT_WHEELS.glob("idleproof-*.whl"))
    if not wheels:
        raise RuntimeError(f"no idleproof wheel in {KIT_WHEELS}: run `make wheel`")
    return wheels[-1]


def built_wheels(app: App) -> Path:
    """Wheels of the application's source-only dependencies, built once."""
    key = hashlib.sha256("\n".join(app.source_only).encode()).hexdigest()[:12]
    out = CACHE / f"{app.name}-built-{key}"
    if app.source_only and not (out / ".complete").exists():
        out.mkdir(parents=True, exist_ok=True)
        pip = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out)]
        quiet([*pip, *app.source_only])
        (out / ".complete").touch()
    return out


def local_wheels(app: App) -> list[str]:
    return sorted(str(p) for p in built_wheels(app).glob("*.whl")) if app.source_only else []


def install(app: App) -> Path:
    """The application's virtualenv (with idleproof[gunicorn]): its bin/ directory. Built
    once per application spec; the idleproof wheel is put in again whenever it changed."""
    spec = [*app.packages, *local_wheels(app)]
    key = hashlib.sha256("\n".join(spec).encode()).hexdigest()[:12]
    venv = CACHE / f"{app.name}-{key}"
    pip = [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check"]
    wheel = kit_wheel()
    if not (venv / ".complete").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        quiet([*pip, *spec, f"{wheel}[gunicorn]"])
        (venv / ".complete").touch()
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    marker = venv / ".idleproof-wheel"
    if not marker.exists() or marker.read_text() != digest:
        quiet([*pip, "--no-deps", "--force-reinstall", str(wheel)])
        marker.write_text(digest)
    return venv / "bin"


def environment(app: App, url: str, state: Path, kit: bool) -> dict[str, str]:
    """What the application runs with: its own settings, its URL (with the plugin for the
    kit), and HOME in a directory of its own."""
    state.mkdir(parents=True, exist_ok=True)
    if app.config_file:
        (state / app.config_file[0]).write_text(app.config_file[1])
    env = {key: value.format(state=state, config=state) for key, value in app.env.items()}
    separator = "&" if "?" in url else "?"
    env[app.url_variable] = f"{url}{separator}plugin=idleproof" if kit else url
    return {**env, "HOME": str(state)}


def migrate(app: App, bin_dir: Path, url: str, state: Path) -> None:
    """The application's schema, as the migration user would bring it up (URL on stdin)."""
    env = {**os.environ, **environment(app, url, state, kit=False)}
    env["PATH"] = f"{bin_dir}:{env.get('PATH', '')}"
    argv = [str(bin_dir / app.migrate[0]), *app.migrate[1:]]
    done = subprocess.run(
        argv, input=url + "\n", text=True, env=env, cwd=state, capture_output=True, timeout=300,
        check=False,
    )  # fmt: skip
    if done.returncode:
        raise RuntimeError(f"{app.name}'s migration failed: {done.stderr[-3000:]}")


def server(
    app: App, bin_dir: Path, url: str, state: Path, log: Path, *, kit: bool, workers: int = 2
) -> GunicornServer:
    """The application under Gunicorn: the kit's config module for ``kit``, else Gunicorn's
    own defaults with the workers and timeout its documentation shows."""
    env = environment(app, url, state, kit)
    config = "python:idleproof.gunicorn_conf" if kit else None
    return GunicornServer(
        env, log, app=app.wsgi, workers=workers, bin_dir=bin_dir, config=config, cwd=state,
        health=app.health,
    )  # fmt: skip


def body(r: Request, unique: str) -> dict[str, str] | None:
    return {k: str(v).format(unique=unique) for k, v in r.json.items()} if r.json else None


def credentials(r: Request) -> tuple[str, str] | None:
    user, _, password = r.auth.partition(":")
    return (user, password) if r.auth else None


def send(url: str, r: Request, timeout: float) -> int | str:
    """One request; its status, or the exception's name when it got none (a hang)."""
    try:
        answer = requests.request(
            r.method, url + r.path, json=body(r, str(time.monotonic_ns())),
            auth=credentials(r), timeout=timeout,
        )  # fmt: skip
    except requests.RequestException as exc:
        return type(exc).__name__
    return answer.status_code


class AppLoad(Load):
    """harness.traffic's steady load, sending the application's read and write."""

    def __init__(self, url: str, app: App, **options: Any) -> None:
        super().__init__(url, **options)
        self.app = app

    def _send(self, session: requests.Session, n: int, text: str) -> requests.Response:
        r = self.app.write if n % 2 else self.app.read
        return session.request(
            r.method, self.url + r.path, json=body(r, text), auth=credentials(r),
            timeout=self.timeout,
        )  # fmt: skip


def inventory_vars(app: App) -> dict[str, Any]:
    """The app role's variables that deploy ``app`` with site.yml (its packages from the
    index, its WSGI callable, its settings, the plugin in its URL variable)."""
    state, config = f"/var/lib/{app.name}", f"/etc/{app.name}"
    read_needs_auth = bool(app.read.auth)
    return {
        "app_name": app.name,
        "app_source_dir": "",
        "app_source_paths": [],
        "app_requirements": "",
        "app_python_packages": [*app.packages, *local_wheels(app)],
        "app_wsgi": app.wsgi,
        "app_database_url_variables": [app.url_variable],
        "app_extra_environment": {
            key: value.format(state=state, config=config) for key, value in app.env.items()
        },
        "app_config_files": dict([app.config_file]) if app.config_file else {},
        "app_migrate_command": list(app.migrate),
        # The gate asks the read when it needs no account, else the health check.
        "app_readiness_path": app.health if read_needs_auth else app.read.path,
        "nginx_proxy_pass_headers": ["Authorization", "Accept"],
        "nginx_content_security_policy": "",
        "db_name": app.name,
    }


# One request made inside a fleet host (its loopback is its own): status and seconds.
_HOST_SEND = """\
import base64, json, sys, time, urllib.error, urllib.request
url, method, body, auth, timeout = sys.argv[1:6]
request = urllib.request.Request(url, method=method, data=body.encode() or None)
if body:
    request.add_header("Content-Type", "application/json")
if auth:
    request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
started = time.monotonic()
try:
    status = urllib.request.urlopen(request, timeout=float(timeout)).status
except urllib.error.HTTPError as exc:
    status = exc.code
except Exception as exc:  # a hang shows as the client's timeout
    status = type(exc).__name__
print(json.dumps([status, time.monotonic() - started]))
"""


def host_send(
    fleet: Fleet, host: str, url: str, r: Request, timeout: float
) -> tuple[int | str, float]:
    data = body(r, str(time.monotonic_ns()))
    argv = (url + r.path, r.method, json.dumps(data) if data else "", r.auth, str(timeout))
    out = fleet.run(host, "python3", "-c", _HOST_SEND, *argv).stdout
    status, seconds = json.loads(out)
    return status, float(seconds)


NAIVE_PORT = 8001


def start_naive(fleet: Fleet, host: str, app: App) -> str:
    """``app`` as its documentation deploys it, beside the kit on ``host``: the same
    installation (the kit's release), plain Gunicorn with 2 workers on the host's loopback,
    its URL without the plugin (with the kit's CA: the database requires TLS). A transient
    unit, stopped by :func:`stop_naive`; its URL there."""
    release = f"/opt/{app.name}/current"
    env = read_env_file(fleet.root(host) / "etc" / app.name / "app.env")
    own = {key: env[key] for key in [*app.env, app.url_variable] if key in env}
    own[app.url_variable] = f"{env['DATABASE_URL']}?ssl_ca={env['DB_TLS_CA']}"
    unit = f"{app.name}-naive"
    fleet.run(
        host, "systemd-run", f"--unit={unit}", f"--working-directory={release}",
        f"--setenv=HOME=/var/lib/{app.name}", *(f"--setenv={k}={v}" for k, v in own.items()),
        f"{release}/venv/bin/gunicorn", "--bind", f"127.0.0.1:{NAIVE_PORT}", "--workers", "2",
        "--timeout", "60", app.wsgi,
    )  # fmt: skip
    url = f"http://127.0.0.1:{NAIVE_PORT}"
    for _ in range(120):
        if host_send(fleet, host, url, Request("GET", app.health), 5)[0] == 200:
            return url
        time.sleep(0.5)
    log = fleet.run(host, "journalctl", "-u", unit, "--no-pager", "-n", "30", check=False)
    raise RuntimeError(f"{app.name} as documented did not start on {host}: {log.stdout[-2000:]}")


def stop_naive(fleet: Fleet, host: str, app: App) -> None:
    fleet.run(host, "systemctl", "stop", f"{app.name}-naive", check=False)
