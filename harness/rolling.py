"""Rolling deploys on a test fleet (harness/fleet.py) under load through web1: the
release variants they deploy and what the load saw (tests/test_rolling.py, bench)."""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.fleet import Fleet
from harness.testhost import PlaybookRun
from harness.traffic import Load

APP_HOSTS = ("app1", "app2")
# Requests per second through web1: under nginx's per-address limit (20 r/s; this machine
# is one address to web1).
RATE = 15
BROKEN = "deliberately broken release (rolling deploy test)"
# nginx's default for an upstream server (max_fails=1 fail_timeout=10s): one failed attempt
# takes the host out of that worker's rotation for 10 s, and each worker keeps its own
# count. A 200 through web1 does not show that every worker has both hosts again.
FAIL_TIMEOUT = 10


def release_variant(source: Path, dest: Path, *, note: str = "", broken: bool = False) -> Path:
    """A copy of a release snapshot: with an extra file (a new release that serves as
    before), or with code that raises at import (it passes the preflight, never gets ready)."""
    shutil.copytree(source, dest)
    if note:
        (dest / "app" / "RELEASE_NOTE").write_text(note + "\n")
    if broken:
        with (dest / "app" / "wsgi.py").open("a") as code:
            code.write(f"\nraise RuntimeError({BROKEN!r})\n")
    return dest


def current(fleet: Fleet, host: str) -> str:
    return fleet.run(host, "readlink", "/opt/idle-proof/current").stdout.strip()


def started_at(fleet: Fleet, host: str, unit: str = "idle-proof.service") -> str:
    """When the unit last became active (changes on every restart)."""
    out = fleet.run(host, "systemctl", "show", "-P", "ActiveEnterTimestampMonotonic", unit)
    return out.stdout.strip()


def upstream(fleet: Fleet) -> str:
    return fleet.run("web1", "cat", "/etc/nginx/idle-proof/upstream.conf").stdout


def nginx_reloads(fleet: Fleet, host: str = "web1") -> list[float]:
    """When systemd began each reload of nginx on a web host (wall-clock seconds)."""
    out = fleet.run(host, "journalctl", "-u", "nginx", "-o", "short-unix", "--no-pager").stdout
    return [float(line.split()[0]) for line in out.splitlines() if " Reloading " in line]


def apart_from_reloads(resent: list[float], reloads: list[float]) -> list[float]:
    """Resends (Load(resend=True)) not explained by a reload of nginx that began up to 5 s
    before: a connection closed unanswered at any other time is a fault the kit must own."""
    return [t for t in resent if not any(0 <= t - r <= 5 for r in reloads)]


def outlast_failures(load: Load) -> None:
    """Wait until nginx has both app hosts in every worker again after the failures a naive
    run caused: a test that follows must not meet a 502 that this one left behind."""
    ends = [a.started + a.seconds for a in load.answers if not a.ok]
    if ends:
        time.sleep(max(0.0, max(ends) + FAIL_TIMEOUT + 1 - time.monotonic()))


def web_log(fleet: Fleet, failures: list[str]) -> str:
    """web1's access log lines of the failed requests (their ids, harness/traffic.py) and
    the end of its error log: which app host failed each, and why."""
    ids = [line.split()[1] for line in failures if line[:3].isdigit()]
    access = fleet.run("web1", "cat", "/var/log/nginx/idle-proof.access.log", check=False)
    lines = access.stdout.splitlines()
    errors = fleet.run("web1", "tail", "-n", "20", "/var/log/nginx/error.log", check=False)
    found = [line for line in lines if any(f"request_id={rid} " in line for rid in ids)]
    return "\n".join(["access log:", *found, "error log:", errors.stdout])


def notes_in_db(fleet: Fleet, tag: str) -> Counter[str]:
    """Every note of one load run as stored on db1, with how often each text is there."""
    query = f"SELECT text FROM notes WHERE text LIKE 'load {tag} %'"
    out = fleet.run("db1", "mariadb", "-N", "-B", "app", "-e", query).stdout
    return Counter(line for line in out.splitlines() if line)


@dataclass
class Rolled:
    """One playbook run under load through web1."""

    run: PlaybookRun
    answered: int  # 2xx
    lost: list[str]  # every request not answered 2xx
    duplicated: int  # notes stored more than once
    missing: int  # notes answered 201 but not stored
    stored_unanswered: int  # notes stored whose request was not answered 201
    resent: list[float]  # when a keep-alive connection closed unanswered (harness/traffic.py)
    reloads: list[float]  # when nginx on web1 began a reload
    web_log: str  # web1's log lines of the lost requests (empty when none was lost)

    def resent_apart_from_reloads(self) -> list[float]:
        return apart_from_reloads(self.resent, self.reloads)

    def summary(self) -> str:
        return (
            f"{self.run.seconds:.0f} s, {self.answered} requests 2xx, {len(self.lost)} lost, "
            f"{self.duplicated} duplicated writes, {self.missing} lost writes, "
            f"{len(self.resent)} resent on a keep-alive connection an nginx reload closed"
        )


def under_load(
    fleet: Fleet, *playbook_args: str, extra: dict[str, Any] | None = None, log: Path | None = None
) -> Rolled:
    """site.yml with extra vars while GET and POST traffic runs through web1; the
    playbook's output is also written to log."""
    args = [*playbook_args, *(["-e", json.dumps(extra)] if extra else [])]
    with Load(fleet.url, timeout=30, rate=RATE, resend=True) as load:
        time.sleep(1)
        run = fleet.playbook(*args)
        time.sleep(1)
    if log is not None:
        log.write_text(run.output)
    stored = notes_in_db(fleet, load.tag)
    created = Counter(load.created)
    return Rolled(
        run=run,
        answered=load.ok,
        lost=load.failures,
        duplicated=sum(1 for n in stored.values() if n > 1),
        missing=sum(1 for text in created if text not in stored),
        stored_unanswered=sum(1 for text in stored if text not in created),
        resent=load.resent,
        reloads=nginx_reloads(fleet),
        web_log=web_log(fleet, load.failures) if load.failures else "",
    )
