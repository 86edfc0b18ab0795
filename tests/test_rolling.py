"""Rolling deploys on a real fleet (db1, app1, app2, web1), under GET and POST load
through web1 from this machine: one app host at a time, drained from nginx, restarted,
gated on /readyz from web1, put back; a release that cannot get ready stops the run on
the first host, which goes back on its previous release.

One fleet for the module, booted and converged cold once, then given a second release so
that every app host has a previous one to roll back to; removed even when a test fails.
Each test starts from both app hosts serving ``fleet.source_dir`` and leaves them so, in
whatever order the tests run.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from harness.fleet import Fleet
from harness.rolling import (
    APP_HOSTS,
    BROKEN,
    RATE,
    Rolled,
    apart_from_reloads,
    current,
    nginx_reloads,
    outlast_failures,
    release_variant,
    started_at,
    under_load,
    upstream,
)
from harness.traffic import Load
from tests.helpers import own_fleet, report, runbook_blocks

pytestmark = [pytest.mark.slow, pytest.mark.ansible, pytest.mark.fleet]


@pytest.fixture(scope="module")
def fleet(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Fleet]:
    with own_fleet(tmp_path_factory) as fleet:
        seconds = fleet.up()
        cold = fleet.playbook()
        assert cold.returncode == 0, cold.output[-6000:]
        assert fleet.source_dir is not None
        second = release_variant(
            fleet.source_dir, tmp_path_factory.mktemp("release") / "second", note="second"
        )
        warm = fleet.playbook("-e", f"app_source_dir={second}")
        assert warm.returncode == 0, warm.output[-6000:]
        fleet.source_dir = second
        report(
            request,
            "rolling",
            f"fleet boot {seconds:.0f} s, cold converge {cold.seconds:.0f} s, "
            f"a second release {warm.seconds:.0f} s",
        )
        yield fleet


def serving(fleet: Fleet, after: Load | None = None) -> None:
    """Both app hosts in nginx's upstream, ready from web1, and (after a naive run that
    failed requests) in the rotation of every nginx worker again."""
    if after is not None:
        outlast_failures(after)
    assert " down;" not in upstream(fleet), upstream(fleet)
    for host in APP_HOSTS:
        active = fleet.run(host, "systemctl", "is-active", "idle-proof.service", check=False)
        assert active.stdout.strip() == "active", (host, active.stdout)
        # `previous` (RUNBOOK section 9) names a release still there, if any.
        previous = "/opt/idle-proof/previous"
        dangling = fleet.run(
            host, "sh", "-c", f"[ ! -L {previous} ] || [ -e {previous} ]", check=False
        )
        assert dangling.returncode == 0, f"{host}: {previous} names a removed release"
    deadline = time.monotonic() + 15
    while requests.get(f"{fleet.url}/readyz", timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "web1 does not answer /readyz"
        time.sleep(1)


def nothing_lost(rolled: Rolled) -> None:
    """Every request answered 2xx, every write stored once, and no resend but right after
    an nginx reload."""
    assert rolled.lost == [], (rolled.lost[:10], rolled.web_log)
    assert (rolled.duplicated, rolled.missing, rolled.stored_unanswered) == (0, 0, 0)
    assert rolled.resent_apart_from_reloads() == [], (rolled.resent, rolled.reloads)


def test_rolling_redeploy_of_a_new_release_loses_nothing(
    fleet: Fleet, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    assert fleet.source_dir is not None
    before = {host: current(fleet, host) for host in APP_HOSTS}
    v2 = release_variant(fleet.source_dir, tmp_path / "v2", note=f"rolling test {os.getpid()}")
    rolled = under_load(fleet, extra={"app_source_dir": str(v2)}, log=tmp_path / "run.log")
    report(request, "rolling", f"rolling redeploy of a new release: {rolled.summary()}")
    assert rolled.run.returncode == 0, rolled.run.output[-6000:]
    after = {host: current(fleet, host) for host in APP_HOSTS}
    assert len(set(after.values())) == 1 and set(after.values()).isdisjoint(before.values())
    # One host at a time: app1 drained, restarted and back before app2 is drained.
    out = rolled.run.output
    drains = [out.index(f"changed: [app{n} -> web1") for n in (1, 2)]
    assert drains[0] < out.index("Put this host back into nginx") < drains[1], out[-6000:]
    assert rolled.answered > 50
    nothing_lost(rolled)
    serving(fleet)
    fleet.source_dir = v2
    # Nothing changed: nothing drained, nothing restarted.
    again = fleet.playbook()
    assert again.returncode == 0 and again.changed == 0, again.changed_tasks()


def test_a_socket_unit_change_loses_nothing(
    fleet: Fleet, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # A change to the socket unit through a documented variable (its drop-in): one more
    # peer allowed, this machine's address on the bridge.
    controller = fleet.controller
    allow = ["localhost", fleet.address("web1"), controller]
    sockets = {host: started_at(fleet, host, "idle-proof.socket") for host in APP_HOSTS}
    rolled = under_load(
        fleet, extra={"app_socket_ip_address_allow": allow}, log=tmp_path / "run.log"
    )
    report(request, "rolling", f"socket unit change: {rolled.summary()}")
    assert rolled.run.returncode == 0, rolled.run.output[-6000:]
    for host in APP_HOSTS:  # every socket was restarted
        assert started_at(fleet, host, "idle-proof.socket") != sockets[host]
        unit = fleet.run(host, "systemctl", "cat", "idle-proof.socket").stdout
        assert f"IPAddressAllow=localhost {fleet.address('web1')} {controller}" in unit, unit
    assert rolled.answered > 50
    nothing_lost(rolled)
    serving(fleet)


def test_socket_restarts_without_a_drain_fail_requests(
    fleet: Fleet, request: pytest.FixtureRequest
) -> None:
    """The naive way, beside the rolling one: each host's socket restarted in turn (what
    site.yml's handlers did for a socket change), no drain. The closed listeners reset
    queued requests, and nginx counts the failures against the host: with both hosts
    marked failed it has no server left and answers 502."""
    restart = "systemctl restart idle-proof.socket && systemctl restart idle-proof.service"
    started = time.monotonic()
    try:
        with Load(fleet.url, timeout=30, rate=RATE) as load:
            time.sleep(1)
            for _ in range(2):
                for host in APP_HOSTS:
                    fleet.run(host, "sh", "-c", restart, check=False)
                    time.sleep(4)
    finally:
        for host in APP_HOSTS:
            fleet.run(host, "systemctl", "reset-failed", "idle-proof.socket", "idle-proof.service")
            fleet.run(host, "systemctl", "start", "idle-proof.socket", "idle-proof.service")
    report(
        request,
        "rolling",
        f"socket restarts without a drain (naive): {time.monotonic() - started:.0f} s, "
        f"{load.ok} requests 2xx, {len(load.failures)} failed ({dict(load.statuses)})",
    )
    assert load.failures, "the naive socket restarts lost nothing: the test cannot tell"
    serving(fleet, after=load)


def test_a_broken_release_stops_on_the_first_host_and_rolls_it_back(
    fleet: Fleet, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    assert fleet.source_dir is not None
    before = {host: current(fleet, host) for host in APP_HOSTS}
    app2_started = started_at(fleet, "app2")
    broken = release_variant(fleet.source_dir, tmp_path / "broken", broken=True)
    rolled = under_load(fleet, extra={"app_source_dir": str(broken)}, log=tmp_path / "run.log")
    report(request, "rolling", f"broken release, rolling: {rolled.summary()}")
    assert rolled.run.returncode != 0, rolled.run.output[-6000:]
    fatal = rolled.run.fatal("app1")
    assert BROKEN in fatal, rolled.run.output[-6000:]
    assert "current is back on" in fatal, fatal
    assert (
        "app2"
        not in "".join(rolled.run.output.split("PLAY [Deploy the app")[1:]).split("PLAY RECAP")[0]
    ), "app2 was touched"
    # app1 back on the release it ran, app2 never restarted, both in nginx.
    assert {host: current(fleet, host) for host in APP_HOSTS} == before
    assert started_at(fleet, "app2") == app2_started
    nothing_lost(rolled)
    serving(fleet)


def test_a_doctor_fail_after_the_restart_rolls_the_host_back(
    fleet: Fleet, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A new release, and the server's wait_timeout lowered at run time (the preflight
    cannot see it): app1 restarts and answers its readiness path, but idleproof doctor
    FAILs. app1 goes back to the release it ran before it serves the new one; app2 is not
    touched."""
    assert fleet.source_dir is not None
    before = {host: current(fleet, host) for host in APP_HOSTS}
    app2_started = started_at(fleet, "app2")
    new = release_variant(fleet.source_dir, tmp_path / "new", note="doctor gate")
    fleet.run("db1", "mysql", "-e", "SET GLOBAL wait_timeout = 20")
    try:
        rolled = under_load(fleet, extra={"app_source_dir": str(new)}, log=tmp_path / "run.log")
    finally:
        fleet.run("db1", "mysql", "-e", "SET GLOBAL wait_timeout = 60")
    report(request, "rolling", f"a doctor FAIL after the restart, rolling: {rolled.summary()}")
    assert rolled.run.returncode != 0, rolled.run.output[-6000:]
    fatal = rolled.run.fatal("app1")
    assert "idleproof doctor: FAIL wait_timeout" in fatal, rolled.run.output[-6000:]
    assert "current is back on" in fatal, fatal
    assert {host: current(fleet, host) for host in APP_HOSTS} == before
    assert started_at(fleet, "app2") == app2_started
    nothing_lost(rolled)
    serving(fleet)


def app_env(fleet: Fleet, host: str) -> str:
    """The EnvironmentFile's digest, and every file beside it (a backup left behind shows)."""
    digest = fleet.run(host, "sha256sum", "/etc/idle-proof/app.env").stdout.split()[0]
    return digest + " " + " ".join(sorted(fleet.run(host, "ls", "/etc/idle-proof").stdout.split()))


def test_a_setting_that_keeps_readyz_from_answering_is_rolled_back_with_app_env(
    fleet: Fleet, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The app starts but cannot log in to its database (a wrong password for the app
    only): /readyz answers 503, the gate fails on app1, and the rollback puts app.env back
    with the release; app2 never gets the setting."""
    before = {host: (current(fleet, host), app_env(fleet, host)) for host in APP_HOSTS}
    app2_started = started_at(fleet, "app2")
    rolled = under_load(
        fleet, extra={"app_db_password": "not-the-password"}, log=tmp_path / "run.log"
    )
    report(request, "rolling", f"a password that keeps /readyz at 503, rolling: {rolled.summary()}")
    assert rolled.run.returncode != 0, rolled.run.output[-6000:]
    fatal = rolled.run.fatal("app1")
    assert "/readyz from web1" in fatal, rolled.run.output[-6000:]
    assert "database unavailable" in fatal and "1045" in fatal, fatal
    assert "with app.env as it was, which answers /readyz" in fatal, fatal
    assert {host: (current(fleet, host), app_env(fleet, host)) for host in APP_HOSTS} == before
    assert started_at(fleet, "app2") == app2_started
    nothing_lost(rolled)
    serving(fleet)


def test_the_same_broken_release_on_every_host_at_once_fails_requests(
    fleet: Fleet, request: pytest.FixtureRequest
) -> None:
    """The naive way, beside the rolling one: every host switched and restarted at once,
    no drain, no gate (what site.yml's handlers did before), then put back by hand."""
    before = {host: current(fleet, host) for host in APP_HOSTS}
    naive = "/opt/idle-proof/releases/naive-broken"
    switch = (
        f'cp -a "$(readlink -f /opt/idle-proof/current)" {naive} && '
        f"echo 'raise RuntimeError(\"{BROKEN}\")' >>{naive}/app/wsgi.py && "
        f"ln -sfnT {naive} /opt/idle-proof/current && systemctl restart idle-proof.service"
    )
    started = time.monotonic()
    with Load(fleet.url, timeout=10, rate=RATE) as load:
        time.sleep(1)
        threads = [
            threading.Thread(
                target=fleet.run, args=(h, "sh", "-c", switch), kwargs={"check": False}
            )
            for h in APP_HOSTS
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        time.sleep(5)
    try:
        report(
            request,
            "rolling",
            f"broken release, every host at once (naive): {time.monotonic() - started:.0f} s, "
            f"{load.ok} requests 2xx, {len(load.failures)} failed ({dict(load.statuses)})",
        )
        assert load.failures, "the naive deploy lost nothing: the test cannot tell"
    finally:
        for host in APP_HOSTS:
            fleet.run(
                host,
                "sh",
                "-c",
                f"ln -sfnT {before[host]} /opt/idle-proof/current && rm -rf {naive} && "
                "systemctl reset-failed idle-proof.service idle-proof.socket; "
                "systemctl start idle-proof.socket && systemctl restart idle-proof.service",
            )
    serving(fleet, after=load)


def test_the_runbook_drains_app1_and_rolls_it_back_under_load(
    fleet: Fleet, request: pytest.FixtureRequest
) -> None:
    """Section 9 of deploy/RUNBOOK.md, every command, on this fleet: app1 drained from
    web1, rolled back to its previous release, checked and put back, under load."""
    blocks = runbook_blocks(9)
    assert [host for host, _ in blocks] == ["web1", "web1", "app1"], blocks
    drain, put_back, roll_back = (body for _, body in blocks)
    example = "10.0.0.21:8000"  # app1 in ansible/inventories/example
    assert example in drain and example in put_back
    app1 = f"{fleet.address('app1')}:8000"
    previous = fleet.run("app1", "readlink", "/opt/idle-proof/previous").stdout.strip()
    assert previous and previous != current(fleet, "app1")
    started = time.monotonic()
    outputs = []
    with Load(fleet.url, timeout=30, rate=RATE, resend=True) as load:
        time.sleep(1)
        for host, body in (("web1", drain), ("app1", roll_back), ("web1", put_back)):
            script = "set -eu\n" + body.replace(example, app1)
            done = fleet.run(host, "bash", "-c", script, check=False)
            assert done.returncode == 0, (host, script, done.stdout, done.stderr)
            outputs.append(done.stdout)
        time.sleep(1)
    took = time.monotonic() - started
    report(
        request,
        "rolling",
        f"runbook drain + rollback + put back of app1: {took:.0f} s, {load.ok} requests 2xx, "
        f"{len(load.failures)} lost, {len(load.resent)} resent on a keep-alive connection "
        "an nginx reload closed",
    )
    assert apart_from_reloads(load.resent, nginx_reloads(fleet)) == [], load.resent
    assert f"server {app1} down;" in outputs[0] and outputs[0].rstrip().endswith("\n0")
    assert '"status":"ready"' in outputs[2].replace(" ", "")
    assert outputs[2].rstrip().endswith("0")  # no server left down
    assert current(fleet, "app1") == previous
    assert load.ok > 20
    assert load.failures == [], load.failures[:10]
    serving(fleet)
    # app1 back on the fleet's release, by the deploy itself.
    again = fleet.playbook()
    assert again.returncode == 0, again.output[-6000:]
    assert current(fleet, "app1") == current(fleet, "app2")


def test_nginx_passes_over_an_app_host_that_refuses_connections(
    fleet: Fleet, request: pytest.FixtureRequest
) -> None:
    """Passive health: app2 stopped without draining (its socket closed: connections
    refused); nginx tries app1 for every request, GET and POST, that never reached app2."""
    fleet.run("app2", "systemctl", "stop", "idle-proof.socket", "idle-proof.service")
    try:
        with Load(fleet.url, timeout=30, rate=RATE) as load:
            time.sleep(5)
    finally:
        fleet.run("app2", "systemctl", "start", "idle-proof.socket", "idle-proof.service")
    report(
        request,
        "rolling",
        f"app2 refusing connections, not drained: {load.ok} requests 2xx, "
        f"{len(load.failures)} lost",
    )
    assert load.statuses[201] > 10 and load.statuses[200] > 10, load.statuses
    assert load.failures == [], load.failures[:10]
    serving(fleet)
