"""Applications no one here wrote, deployed by site.yml on the test fleet, through the
forgetting firewall of the incident.

The fleet (db1, app1, app2, web1) gets the stateful firewall on db1 that forgets idle flows
after the inventory's ``network_idle_timeout`` (harness/conntrack.py). Each application of
harness/apps.py is then converged with site.yml from packages on the index (the app role's
``app_python_packages``, the plugin in its URL variable, Gunicorn with the kit's config),
one after the other; beside it on app1, the same installation runs as its own documentation
deploys it. After a quiet period past the firewall's limit, the kit answers every request
through web1 with 2xx, while the documented setup hangs on its forgotten connections.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from harness import apps, conntrack
from harness.fleet import Fleet
from tests.helpers import forgetting_fleet, report

pytestmark = [pytest.mark.slow, pytest.mark.ansible, pytest.mark.fleet]

NETWORK_IDLE_TIMEOUT = 10
PASSWORD = secrets.token_hex(16)


@pytest.fixture(scope="module")
def fleet(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Fleet]:
    started = time.monotonic()
    with forgetting_fleet(tmp_path_factory, "ipka", NETWORK_IDLE_TIMEOUT) as fleet:
        report(
            request, "apps", f"fleet booted, firewall on db1: {time.monotonic() - started:.0f} s"
        )
        yield fleet


def deployed(fleet: Fleet, app: apps.App, request: pytest.FixtureRequest) -> None:
    """Converge site.yml for ``app``; the app before it (same hosts, same port) is stopped."""
    for other in apps.APPS.values():
        if other is app:
            continue
        for host in ("app1", "app2"):
            fleet.run(host, "systemctl", "disable", "--now", f"{other.name}.socket",
                      f"{other.name}.service", check=False)  # fmt: skip
        fleet.run("web1", "rm", "-f", f"/etc/nginx/sites-enabled/{other.name}.conf")
    fleet.run("web1", "sh", "-c", "systemctl is-active -q nginx && systemctl reload nginx || true")
    variables = apps.inventory_vars(app)
    # The name clients use through nginx, the address the deploy's readiness gate uses, and
    # the loopback address the documented setup listens on beside the kit (same settings).
    variables["app_extra_environment"]["MLFLOW_SERVER_ALLOWED_HOSTS"] = (
        f"{fleet.address('web1')},{{{{ private_address }}}}:{{{{ app_port }}}},localhost,"
        f"127.0.0.1:{apps.NAIVE_PORT}"
    )
    # ihatemoney's migrations hand the URL to configparser, which takes a percent-encoded
    # character for an interpolation: passwords of letters and digits (the fleet's own
    # carry / @ : % #, which the reference app takes).
    variables |= {"db_password": PASSWORD, "db_migrate_password": PASSWORD[::-1]}
    # MLflow's migration keeps a connection idle while it runs, longer than the fleet's
    # short wait_timeout on a busy machine (the firewall's limit is what this test is about).
    variables["db_idle_timeout"] = 3600
    run = fleet.playbook("-e", json.dumps(variables))
    assert run.returncode == 0, run.output[-6000:]
    report(request, "apps", f"{app.name}: site.yml converged in {run.seconds:.0f} s")
    for setup in app.setup:
        apps.send(fleet.url, setup, timeout=30)


@pytest.mark.parametrize("name", sorted(apps.APPS))
def test_idle_past_the_network_limit_kit_2xx_documented_setup_hangs(
    fleet: Fleet, name: str, request: pytest.FixtureRequest
) -> None:
    app = apps.APPS[name]
    deployed(fleet, app, request)
    naive = apps.start_naive(fleet, "app1", app)
    try:
        # Every worker of both app hosts holds pooled connections, as after a day's traffic.
        with apps.AppLoad(fleet.url, app, threads=4, timeout=30, rate=12) as warm:
            time.sleep(4)
        assert warm.failures == [], warm.failures[:3]
        # Both workers of the documented setup too: reads from several clients at once, so
        # that no worker serves them all (a worker that served none would start afresh).
        with ThreadPoolExecutor(4) as pool:
            sent = list(
                pool.map(lambda _: apps.host_send(fleet, "app1", naive, app.read, 20), range(8))
            )
        assert [status for status, _ in sent] == [200] * 8, sent
        dropped_before = conntrack.dropped(fleet, "db1")

        time.sleep(NETWORK_IDLE_TIMEOUT + 4)  # the quiet night

        with apps.AppLoad(fleet.url, app, threads=2, timeout=30, rate=12) as kit:
            time.sleep(4)
        documented = [apps.host_send(fleet, "app1", naive, app.read, 12) for _ in range(2)]
    finally:
        apps.stop_naive(fleet, "app1", app)
    dropped = conntrack.dropped(fleet, "db1") - dropped_before
    report(
        request,
        "apps",
        f"{name}: idle {NETWORK_IDLE_TIMEOUT + 4} s past a {NETWORK_IDLE_TIMEOUT} s firewall "
        f"limit: kit through web1 {len(kit.answers)} requests {dict(kit.statuses)}, slowest "
        f"{kit.slowest:.2f} s | as documented on app1 "
        f"{[(s, round(t, 1)) for s, t in documented]} | firewall dropped {dropped} packets",
    )
    assert len(kit.answers) >= 10 and kit.failures == [], kit.failures[:3]
    assert any(s != 200 for s, _ in documented), f"{name} as documented survived: {documented}"
    assert dropped > 0, "the firewall dropped nothing: the documented setup failed otherwise"
