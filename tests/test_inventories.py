"""The example inventory's wiring and the preflight checks, on the controller only.

Nothing here contacts a host: preflight.yml runs without facts or connections, and the
debug module templates variables locally. The converge itself is in test_deploy.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.testhost import ANSIBLE_DIR

pytestmark = pytest.mark.ansible

EXAMPLE = str(ANSIBLE_DIR / "inventories" / "example")
BIN = Path(sys.executable).parent
PASSWORD = {"vault_db_password": "a-long-test-password"}


def ansible(*argv: str, extra: dict[str, object]) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "ANSIBLE_NOCOLOR": "1",
        # One JSON object per result line: "host | SUCCESS => {...}", "fatal: [host]: ... => {...}"
        "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
        "ANSIBLE_CALLBACK_FORMAT_PRETTY": "false",
    }
    return subprocess.run(
        [*argv, "-i", EXAMPLE, "-e", json.dumps(extra)],
        cwd=ANSIBLE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module", autouse=True)
def collections() -> None:
    subprocess.run(
        [sys.executable, ANSIBLE_DIR.parent / "scripts" / "install-collections"], check=True
    )


def rendered(var: str) -> dict[str, Any]:
    """The value of var on each host of the example inventory, as the roles will see it."""
    proc = ansible(
        str(BIN / "ansible"),
        "all",
        "-m",
        "ansible.builtin.debug",
        "-a",
        f"var={var}",
        extra=PASSWORD,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    found = re.findall(r"^(\S+) \| SUCCESS => (\{.*\})$", proc.stdout, re.M)
    return {host: json.loads(result)[var] for host, result in found}


def preflight(**overrides: object) -> tuple[int, list[str]]:
    proc = ansible(str(BIN / "ansible-playbook"), "preflight.yml", extra={**PASSWORD, **overrides})
    failure = r"^(?:fatal: \[\S+\]: FAILED!|failed: \[\S+\] \(item=.*?\)) => (\{.*\})$"
    fatal = re.findall(failure, proc.stdout, re.M)
    return proc.returncode, [json.loads(result)["msg"] for result in fatal]


def test_example_inventory_wires_one_idle_timeout_everywhere() -> None:
    # db_idle_timeout 3600 on the server; a 350 s middlebox makes the app follow 350.
    assert set(rendered("mysql_wait_timeout").values()) == {"3600"}
    assert set(rendered("mysql_interactive_timeout").values()) == {"3600"}
    assert {float(v) for v in rendered("app_db_idle_timeout").values()} == {350.0}


def test_example_inventory_wires_the_hosts_to_each_other() -> None:
    assert rendered("nginx_upstream_servers")["web1"] == ["10.0.0.21:8000", "10.0.0.22:8000"]
    assert rendered("mysql_app_client_hosts")["db1"] == ["10.0.0.21", "10.0.0.22"]
    assert rendered("mysql_bind_address")["db1"] == "10.0.0.10"
    assert rendered("app_ip_address_allow")["app1"] == ["localhost", "10.0.0.10", "10.0.0.30"]


def test_example_inventory_passes_preflight() -> None:
    assert preflight() == (0, [])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"vault_db_password": ""}, "db_password is not set"),
        (
            {"app_db_pool_recycle": 350},
            "app1, app2: app_db_pool_recycle=350 must be below app_db_idle_timeout=350: "
            "lower app_db_pool_recycle or unset it to use 315",
        ),
        ({"app_gunicorn_workers": 9}, "raise mysql_max_connections to at least 190"),
        ({"nginx_proxy_read_timeout": 30}, "raise nginx_proxy_read_timeout"),
        ({"app_gunicorn_timeout": 20}, "raise app_gunicorn_timeout"),
        ({"db_idle_timeout": "soon"}, "db_idle_timeout=soon is not a positive number"),
        (
            {"app_db_idle_timeout": 7200},
            "db1, app1, app2: app_db_pool_recycle=6480 is not below the server's "
            "mysql_wait_timeout=3600",
        ),
        (
            {"app_timeout_stop_sec": 30},
            "app1, app2: app_timeout_stop_sec=30 is not above app_gunicorn_graceful_timeout=30",
        ),
        (
            {"app_gunicorn_workers": "four"},
            "app1, app2: app_gunicorn_workers='four' is not a whole number",
        ),
        ({"app_db_ping_timeout": 40}, "app_db_ping_timeout=40 must not exceed"),
    ],
)
def test_inconsistent_example_inventory_names_what_to_change(
    overrides: dict[str, object], message: str
) -> None:
    returncode, messages = preflight(**overrides)
    assert returncode != 0
    assert messages and all(message in m for m in messages), messages
    assert all("\n" not in m for m in messages), messages
