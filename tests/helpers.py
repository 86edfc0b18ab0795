"""What the test modules share besides fixtures (those are in conftest.py): the test
server's idle limit, the type of the ``start_app`` fixture, the protected engine as the
engine tests see it, measured numbers on the terminal, a test fleet of a module's own, and
the runbook's procedures for a host."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import Engine

from harness import ROOT, conntrack
from harness.fleet import Fleet
from harness.gunicorn import GunicornServer
from harness.testhost import snapshot_release
from harness.traffic import Load
from idleproof.engine import create_engine, guard_of
from idleproof.guard import ConnectionGuard, Observer
from idleproof.settings import Settings

# Short enough that "a quiet night" fits in a test, long enough to warm a pool.
WAIT_TIMEOUT = 2

RUNBOOK = ROOT / "deploy" / "RUNBOOK.md"

# What the start_app fixture gives: start a Gunicorn app with this environment.
AppFactory = Callable[..., GunicornServer]


@dataclass
class Protected:
    """An engine with the kit's protection, and what the tests look at on it."""

    engine: Engine

    @property
    def guard(self) -> ConnectionGuard:
        return guard_of(self.engine)

    @property
    def settings(self) -> Settings:
        return self.guard.settings

    def dispose_after_fork(self) -> None:
        self.engine.dispose(close=False)


def protected(settings: Settings, observer: Observer | None = None) -> Protected:
    return Protected(create_engine(settings, observer if observer is not None else Observer()))


def report(request: pytest.FixtureRequest, tag: str, line: str) -> None:
    """Measured numbers go to the terminal even when the test passes: ``[tag] line``."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"[{tag}] {line}")


@contextmanager
def trusting(ca: Path) -> Iterator[None]:
    """requests (and the load generators built on it) verify HTTPS against ``ca``, the
    kit's CA of a test host or fleet, and the name in the URL against its certificate."""
    before = os.environ.get("REQUESTS_CA_BUNDLE")
    os.environ["REQUESTS_CA_BUNDLE"] = str(ca)
    try:
        yield
    finally:
        if before is None:
            del os.environ["REQUESTS_CA_BUNDLE"]
        else:
            os.environ["REQUESTS_CA_BUNDLE"] = before


@contextmanager
def own_fleet(tmp_path_factory: pytest.TempPathFactory, **options: Any) -> Iterator[Fleet]:
    """A fleet of its own for one test module (Fleet.for_test options), with a snapshot
    of this checkout's release as its source; the caller boots it (fleet.up()) and may
    prepare its inventory first. Removed even when a test fails, and checked to leave
    nothing behind: no bridge, no host's link."""
    if os.geteuid() != 0:
        pytest.fail("the fleet tests boot systemd-nspawn hosts: run them as root (sudo make test)")
    subprocess.run([sys.executable, ROOT / "scripts" / "install_collections.py"], check=True)
    source = snapshot_release(tmp_path_factory.mktemp("release") / "v1")
    fleet = Fleet.for_test(tmp_path_factory.mktemp("fleet"), source_dir=source, **options)
    try:
        with trusting(fleet.ca):
            yield fleet
    finally:
        links = fleet.links()
        fleet.down()
    assert not Path(f"/sys/class/net/{fleet.bridge}").exists()
    # The kernel removes a host's link once its network namespace is gone. It frees
    # namespaces in a background queue, one after another: with other fleets stopping on a
    # loaded machine, that can take more than 30 s after the host stopped.
    deadline = time.monotonic() + 180
    left = links
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = [n for n in links if Path(f"/sys/class/net/{n}").exists()]
    assert links and not left, left


# Run on a fleet host: "open" when a TCP connection to argv[1]:argv[2] succeeds in 3 s.
CONNECT = (
    "import socket, sys\n"
    "try:\n"
    "    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close()\n"
    "    print('open')\n"
    "except OSError as e:\n"
    "    print('closed', e)\n"
)


def reaches(fleet: Fleet, source: str, target: str, port: int) -> bool:
    """Whether host ``source`` can open a TCP connection to ``target``'s port."""
    out = fleet.run(source, "python3", "-c", CONNECT, fleet.address(target), str(port)).stdout
    return out.strip() == "open"


def service_pid(fleet: Fleet, host: str) -> str:
    """The app's Gunicorn master on the host: the same after a fault means not restarted."""
    show = ("systemctl", "show", "--property=MainPID", "--value", "idle-proof.service")
    return fleet.run(host, *show).stdout.strip()


def role_default(path: Path, name: str) -> int:
    """A role's default (its defaults/main.yml at ``path``), a whole number."""
    return int(yaml.safe_load(path.read_text())[name])


@contextmanager
def forgetting_fleet(
    tmp_path_factory: pytest.TempPathFactory, name: str, limit: int, **options: Any
) -> Iterator[Fleet]:
    """A fleet of its own (more Fleet.for_test ``options``), booted, with a firewall on db1
    that forgets idle flows after ``limit`` seconds (harness/conntrack.py), installed before
    the app's first connection so that every flow gets it; the inventory declares the same
    limit. Not converged."""
    with own_fleet(
        tmp_path_factory, inventory_vars={"network_idle_timeout": limit}, name=name, **options
    ) as fleet:
        fleet.up()
        conntrack.install_tools(fleet, "db1")
        conntrack.install(fleet, "db1", limit)
        yield fleet


# The notes table dropped by mistake and made again, empty, at once, so that the app writes
# on: a restore to just before the DROP must keep every note of before and none of after.
DROP_NOTES = (
    "CREATE TABLE app.notes_again LIKE app.notes; DROP TABLE app.notes; "
    "RENAME TABLE app.notes_again TO app.notes"
)


def notes_around(load: Load, before: float, after: float) -> tuple[list[str], list[str]]:
    """The notes a load had acknowledged (201) by ``before``, and those it sent after
    ``after`` and were acknowledged (monotonic times, as the load's answers)."""
    posted = [a for a in load.answers if a.note is not None and a.status == 201]
    return (
        [a.note for a in posted if a.note and a.started + a.seconds < before],
        [a.note for a in posted if a.note and a.started > after],
    )


def runbook_blocks(section: int) -> list[tuple[str, str]]:
    """Section ``section`` of deploy/RUNBOOK.md: (host, script) for each of its ```sh on=HOST
    blocks, in order; the test that runs the section runs each script on that host."""
    text = RUNBOOK.read_text().split(f"\n## {section}. ", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```sh on=(\S+)\n(.*?)^```", text, re.S | re.M)
