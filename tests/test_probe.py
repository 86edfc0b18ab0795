"""``idleproof probe-idle`` measures a real server's wait_timeout and a real silent drop."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import ROOT, VENV_BIN
from harness.faults import StallProxy, established_client_ports
from harness.mariadb import LocalMariaDB, start_mariadb

pytestmark = pytest.mark.slow

WAIT_TIMEOUT = 3


@pytest.fixture(scope="module")
def mariadb3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMariaDB]:
    """A server of our own with wait_timeout=3 (the shared one has 2)."""
    db = start_mariadb(
        tmp_path_factory.mktemp("mariadb3"),
        options={"wait_timeout": WAIT_TIMEOUT, "interactive_timeout": WAIT_TIMEOUT},
    )
    yield db
    db.stop()


def probe(url: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(VENV_BIN / "idleproof"), "probe-idle", "--json", *args],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "DATABASE_URL": url, "DB_IDLE_TIMEOUT": str(WAIT_TIMEOUT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str]) -> tuple[int, dict[str, object], str]:
    stdout, stderr = proc.communicate(timeout=60)
    assert stdout, stderr
    return proc.returncode, json.loads(stdout), stderr


def test_reports_the_servers_wait_timeout_as_a_server_side_close(mariadb3: LocalMariaDB) -> None:
    started = time.monotonic()
    code, report, progress = finish(probe(mariadb3.url, "--max-seconds", "6", "--parallel", "4"))
    assert code == 0, progress
    assert report["cause"] == "server_close", report
    survived = report["survived"]
    assert isinstance(survived, float) and abs(survived - WAIT_TIMEOUT) <= 1, report
    assert report["suggested_idle_timeout"] in (2, 3, 4), report
    # Progress on stderr, one line per round and per connection; bounded by 2 x max-seconds.
    assert "round 1: 4 connections" in progress and "-> alive" in progress, progress
    assert time.monotonic() - started < 2 * 6 + 5


def stall_when_idle(proxy: StallProxy, connections: int) -> int:
    """Wait until the probe holds ``connections`` through the proxy, then stall them."""
    deadline = time.monotonic() + 10
    while len(established_client_ports(proxy.port)) < connections:
        assert time.monotonic() < deadline, "the probe never connected"
        time.sleep(0.02)
    time.sleep(0.2)  # past the handshake and the first query: the connections sit idle
    return proxy.stall()


def test_reports_a_silent_drop_through_a_proxy_that_stops_forwarding(
    mariadb3: LocalMariaDB, tmp_path: Path
) -> None:
    proxy = StallProxy(mariadb3.port)
    try:
        url = mariadb3.url.replace(f":{mariadb3.port}/", f":{proxy.port}/")
        proc = probe(url, "--max-seconds", "4", "--parallel", "4", "--probe-timeout", "1.5")
        # Once round 1's connections are idle, the proxy silently stops forwarding them
        # (no RST, no FIN), as an expired NAT or firewall entry does.
        stalled: list[int] = []
        staller = threading.Thread(target=lambda: stalled.append(stall_when_idle(proxy, 4)))
        staller.start()
        code, report, progress = finish(proc)
        staller.join()
    finally:
        proxy.close()
    assert stalled == [4], progress
    assert report["cause"] == "silent_drop", report
    # DB_IDLE_TIMEOUT=3 is above what the path keeps alive: exit 1 says so.
    assert code == 1 and report["ok"] is False, report
    assert "silent_drop" in progress
