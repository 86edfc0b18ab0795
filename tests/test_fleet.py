"""site.yml converged for real on a fleet: db1, app1, app2 and web1 as systemd-nspawn hosts
on a private bridge (scripts/fleet), each with its own address, over ssh.

One fleet per module, with names and a subnet of its own: booted, converged cold, converged
again (nothing may change), then used through web1; removed even when a test fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from harness import ROOT
from harness.fleet import Fleet
from harness.testhost import snapshot_release
from tests.conftest import report

pytestmark = [pytest.mark.slow, pytest.mark.ansible]


@pytest.fixture(scope="module")
def fleet(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Fleet]:
    if os.geteuid() != 0:
        pytest.fail("the fleet tests boot systemd-nspawn hosts: run them as root (sudo make test)")
    subprocess.run([sys.executable, ROOT / "scripts" / "install-collections"], check=True)
    source = snapshot_release(tmp_path_factory.mktemp("release"))
    fleet = Fleet.for_test(tmp_path_factory.mktemp("fleet"), source_dir=source)
    try:
        seconds = fleet.up()
        report(request, "fleet", f"boot of 4 hosts, bridge and proxy: {seconds:.0f} s")
        yield fleet
    finally:
        fleet.down()
    # Nothing left behind: no bridge, no host.
    assert not Path(f"/sys/class/net/{fleet.bridge}").exists()
    assert not list(Path("/sys/class/net").glob(f"vb-{fleet.prefix[:8]}*"))


@pytest.fixture(scope="module")
def converged(fleet: Fleet, request: pytest.FixtureRequest) -> Fleet:
    first = fleet.playbook()
    assert first.returncode == 0, first.output[-6000:]
    report(request, "fleet", f"cold converge: {first.seconds:.0f} s, changed={first.changed}")
    return fleet


@pytest.mark.parametrize("host", ["db1", "app1", "app2", "web1"])
def test_hosts_reach_nothing_beyond_the_bridge(fleet: Fleet, host: str) -> None:
    routes = fleet.run(host, "ip", "-4", "route", "show").stdout.splitlines()
    subnet = f"{fleet.network}.0/24 dev host0 proto kernel scope link src {fleet.address(host)}"
    assert [r.strip() for r in routes] == [subnet], routes
    # No route: the kernel refuses before a packet leaves the host.
    outside = fleet.run(host, "ip", "route", "get", "198.51.100.1", check=False)
    assert outside.returncode != 0 and "unreachable" in outside.stderr, outside


def test_the_proxy_forwards_to_the_debian_mirror_only(fleet: Fleet) -> None:
    # Refused by the proxy's filter before it connects anywhere.
    proxy = f"http://{fleet.network}.1:3142"
    probe = (
        "import urllib.request, urllib.error\n"
        f"proxy = urllib.request.ProxyHandler({{'http': {proxy!r}}})\n"
        "try:\n"
        "    urllib.request.build_opener(proxy).open('http://pypi.org/simple/', timeout=10)\n"
        "except urllib.error.HTTPError as e:\n"
        "    print(e.code)\n"
    )
    assert fleet.run("app1", "python3", "-c", probe).stdout.strip() == "403"


def test_converge_then_rerun_changes_nothing(
    converged: Fleet, request: pytest.FixtureRequest
) -> None:
    second = converged.playbook()
    assert second.returncode == 0, second.output[-6000:]
    report(request, "fleet", f"re-run: {second.seconds:.0f} s, changed={second.changed}")
    assert second.changed == 0, f"changed on re-run: {second.changed_tasks()}"


def checkouts(fleet: Fleet, host: str) -> float:
    """The pool checkouts an app host's Gunicorn counted (its /metrics, read on that host);
    0 before the first one (no worker has written the counter yet)."""
    url = f"http://{fleet.address(host)}:8000/metrics"
    read = f"import urllib.request as u; print(u.urlopen({url!r}, timeout=10).read().decode())"
    for line in fleet.run(host, "python3", "-c", read).stdout.splitlines():
        if line.startswith("idleproof_db_checkouts_total "):
            return float(line.split()[1])
    return 0.0


def test_the_app_answers_through_web1_from_both_app_hosts(converged: Fleet) -> None:
    url = converged.url
    before = {host: checkouts(converged, host) for host in ("app1", "app2")}
    assert requests.get(f"{url}/readyz", timeout=10).status_code == 200
    created = requests.post(f"{url}/notes", json={"text": "through web1"}, timeout=10)
    assert created.status_code == 201, created.text
    for _ in range(6):
        listing = requests.get(f"{url}/", timeout=10)
        assert listing.status_code == 200, listing.text
        assert "through web1" in [n["text"] for n in listing.json()["notes"]]
    assert listing.headers["Server"] == "nginx"
    # nginx spreads requests over both app hosts, and both reach db1.
    after = {host: checkouts(converged, host) for host in ("app1", "app2")}
    assert all(after[host] > before[host] for host in after), (before, after)
