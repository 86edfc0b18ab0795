"""The incident on a converged fleet (harness/fleet.py): what tests/test_fleet_incident.py
and the bench's host-death figures share.

* :func:`load` - the traffic (harness/traffic.py) sent through web1 during the incident;
* :func:`start_naive` - the incident's naive app (harness/variants.py) beside the kit on an
  app host, on its loopback, with the kit's release and database settings;
* :func:`host_get` - one request made on a fleet host (loopback there), timed;
* :func:`dead_host_bound` - how long the kit may take to answer when the database host dies;
* :func:`host_death` - db1 powered off hard under load, then powered on again.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from dataclasses import dataclass, field

import requests

from harness import ROOT
from harness.fleet import Fleet
from harness.traffic import Answer, Load
from idleproof.ops.environment import read_env_file
from idleproof.settings import Settings

APP_ENV = "/etc/idle-proof/app.env"
RELEASE = "/opt/idle-proof/current"
NAIVE_UNIT = "ipk-naive"
NAIVE_PORT = 8001

_GET = """\
import json, sys, time, urllib.error, urllib.request
url, timeout = sys.argv[1], float(sys.argv[2])
started = time.monotonic()
try:
    status = urllib.request.urlopen(url, timeout=timeout).status
except urllib.error.HTTPError as exc:
    status = exc.code
except Exception as exc:  # a hang shows as the client's timeout
    status = type(exc).__name__
print(json.dumps([status, time.monotonic() - started]))
"""


def load(url: str, threads: int = 2) -> Load:
    """GET / and POST /notes at most 12 a second in all: nginx on web1 limits one client
    address to 20 a second (nginx/idle-proof.conf) and answers 429 beyond its burst. A
    request that hangs ends at the client's 30 s."""
    return Load(url, threads=threads, timeout=30, rate=12)


def host_get(fleet: Fleet, host: str, url: str, timeout: float) -> tuple[int | str, float]:
    """GET url from inside host (its loopback is its own): status and seconds."""
    out = fleet.run(host, "python3", "-c", _GET, url, str(timeout)).stdout
    status, seconds = json.loads(out)
    return status, float(seconds)


def host_env(fleet: Fleet, host: str) -> dict[str, str]:
    """The app's EnvironmentFile on an app host, as a dict."""
    return read_env_file(fleet.root(host) / APP_ENV.lstrip("/"))


def start_naive(fleet: Fleet, host: str) -> str:
    """The naive app (no recycle, no ping, no socket timeouts, Flask's 500 page) under the
    kit's Gunicorn config on host's loopback, with the kit's database; its URL there.

    A transient unit, so ``stop_naive`` (or the host's power-off) ends it."""
    target = fleet.root(host) / "opt" / NAIVE_UNIT / "harness"
    target.mkdir(parents=True, exist_ok=True)
    for name in ("__init__.py", "variants.py"):
        shutil.copy2(ROOT / "harness" / name, target / name)
    env = host_env(fleet, host)
    # The kit's CA too: the app user may only log in over TLS (REQUIRE SSL).
    database = {name: env.get(name, "") for name in ("DATABASE_URL", "DB_TLS_CA")}
    fleet.run(
        host,
        "systemd-run",
        f"--unit={NAIVE_UNIT}",
        f"--working-directory={RELEASE}",
        "--setenv=KIT_VARIANT=naive",
        *(f"--setenv={name}={value}" for name, value in database.items()),
        f"--setenv=PYTHONPATH=/opt/{NAIVE_UNIT}:{RELEASE}",
        f"--setenv=PROMETHEUS_MULTIPROC_DIR=/run/{NAIVE_UNIT}-metrics",
        "--property=RuntimeDirectory=" + f"{NAIVE_UNIT}-metrics",
        f"{RELEASE}/venv/bin/gunicorn",
        "--config",
        "python:idleproof.gunicorn_conf",
        "--bind",
        f"127.0.0.1:{NAIVE_PORT}",
        # One worker: the naive engine's first connection (create_all, in the master under
        # preload_app) would otherwise serve two workers at once, which a TLS session does
        # not survive (each process advances the same record counters): a fault of its own,
        # not the idle one this app is here to show.
        "--workers",
        "1",
        "harness.variants:app",
    )
    url = f"http://127.0.0.1:{NAIVE_PORT}"
    for _ in range(60):
        status, _seconds = host_get(fleet, host, f"{url}/healthz", 5)
        if status == 200:
            return url
        time.sleep(0.5)
    log = fleet.run(host, "journalctl", "-u", NAIVE_UNIT, "--no-pager", "-n", "30", check=False)
    raise RuntimeError(f"the naive app did not start on {host}: {log.stdout[-2000:]}")


def stop_naive(fleet: Fleet, host: str) -> None:
    fleet.run(host, "systemctl", "stop", NAIVE_UNIT, check=False)


def dead_host_bound(settings: Settings) -> float:
    """The longest the kit may take to answer a request when the database host dies under
    it (the hot-fault core's promise for a host cut off): the kernel declares the busy
    connection dead after DB_NET_TIMEOUT, the one retry's new connection fails within
    DB_CONNECT_TIMEOUT, and the request is answered 503; 1 s for nginx and this machine."""
    waits = settings.waits()
    return waits.net.value + waits.connect.value + 1


@dataclass
class HostDeath:
    """db1 powered off hard under load through web1, then powered on again."""

    answers: list[Answer]  # every request of the load, in order of sending
    healthz: list[int | str]  # /healthz through web1, polled during the outage
    powered_off: float  # time.monotonic() of the power cut
    powered_on: float  # when the power-on began
    db_back: float  # when db1's MariaDB answered again (locally)
    boot_seconds: float  # the power-on: boot to systemd running and sshd answering
    naive: list[tuple[int | str, float]] = field(default_factory=list)  # during the outage

    @property
    def after(self) -> list[Answer]:
        """Requests sent once db1's MariaDB answered again."""
        return [a for a in self.answers if a.started >= self.db_back]

    @property
    def failed(self) -> list[Answer]:
        return [a for a in self.answers if not a.ok]

    @property
    def slowest(self) -> float:
        return max((a.seconds for a in self.answers), default=0.0)

    @property
    def recovered_after(self) -> float | None:
        """Seconds from the start of the power-on to the first 2xx sent after it."""
        oks = [a for a in self.answers if a.ok and a.started >= self.powered_on]
        return min(a.started + a.seconds for a in oks) - self.powered_on if oks else None

    def summary(self) -> str:
        statuses: dict[str, int] = {}
        for a in self.answers:
            statuses[str(a.status)] = statuses.get(str(a.status), 0) + 1
        recovered = self.recovered_after
        return (
            f"{len(self.answers)} requests {statuses}; {len(self.failed)} non-2xx, slowest "
            f"{self.slowest:.2f} s; outage {self.db_back - self.powered_off:.1f} s (boot "
            f"{self.boot_seconds:.1f} s); first 2xx "
            f"{'never' if recovered is None else f'{recovered:.1f} s'} after power-on; "
            f"{len(self.after)} requests after db1 was back, "
            f"{sum(not a.ok for a in self.after)} non-2xx"
        )


def host_death(
    fleet: Fleet,
    host: str = "db1",
    down_seconds: float = 15,
    naive_url: str | None = None,
    naive_host: str = "app1",
    naive_timeout: float = 20,
) -> HostDeath:
    """Load through web1; pull ``host``'s plug; ``down_seconds`` later power it on and
    keep the load until 6 s after its MariaDB answers again.

    With ``naive_url`` (start_naive's, on naive_host), that app is asked once during the
    outage, on a connection it used a moment before the cut."""
    url = fleet.url
    healthz: list[int | str] = []
    naive: list[tuple[int | str, float]] = []
    stop = threading.Event()

    def poll_health() -> None:
        while not stop.is_set():
            try:
                healthz.append(requests.get(f"{url}/healthz", timeout=20).status_code)
            except requests.RequestException as exc:
                healthz.append(type(exc).__name__)
            stop.wait(0.25)

    with load(url) as rec:
        time.sleep(3)
        naive_thread = None
        if naive_url is not None:
            host_get(fleet, naive_host, f"{naive_url}/", naive_timeout)  # a fresh connection

            def ask_naive() -> None:
                naive.append(host_get(fleet, naive_host, f"{naive_url}/", naive_timeout))

            naive_thread = threading.Thread(target=ask_naive)
        poller = threading.Thread(target=poll_health)
        powered_off = time.monotonic()
        fleet.power_off(host)
        poller.start()
        if naive_thread is not None:
            naive_thread.start()
        time.sleep(down_seconds)
        stop.set()
        poller.join()
        powered_on = time.monotonic()
        boot = fleet.power_on(host)
        for _ in range(120):
            if fleet.run(host, "mariadb", "-e", "SELECT 1", check=False).returncode == 0:
                break
            time.sleep(0.5)
        else:
            raise RuntimeError(f"MariaDB on {host} did not answer within 60 s of its boot")
        db_back = time.monotonic()
        time.sleep(6)
        if naive_thread is not None:
            naive_thread.join()
    return HostDeath(
        answers=sorted(rec.answers, key=lambda a: a.started),
        healthz=healthz,
        powered_off=powered_off,
        powered_on=powered_on,
        db_back=db_back,
        boot_seconds=boot,
        naive=naive,
    )
