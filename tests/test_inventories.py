"""The example inventory's wiring and the preflight checks, on the controller only.

Nothing here contacts a host: preflight.yml runs without facts or connections, and what the
roles see is shown by a playbook that loads the kit's roles but runs only its debug tasks
(``--tags show``; Ansible still validates each role's argument specs). The converge itself
is in test_deploy.py (one host) and tests/test_fleet.py (four).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import ROOT, apps
from harness.testhost import ANSIBLE_DIR

pytestmark = pytest.mark.ansible

EXAMPLE = ANSIBLE_DIR / "inventories" / "example"
# This checkout as the collection idleproof.kit, as Ansible finds it (ansible.cfg).
COLLECTION = ANSIBLE_DIR / ".collections" / "ansible_collections" / "idleproof" / "kit"
ROLES = ANSIBLE_DIR / "roles"
BIN = Path(sys.executable).parent
PASSWORDS = {
    "vault_db_password": "a-long-test-password",
    "vault_db_migrate_password": "another-long-password",
}
# The roles site.yml runs on each group (the firewall on every host of the kit's groups).
PLAYS = {
    "db:app:web:backup": "firewall",
    "db": "mysql",
    "app": "app",
    "web": "nginx",
    "backup": "backup_store",
}


def options(role: str) -> dict[str, Any]:
    """A role's argument spec options, with those of the shared role it depends on."""
    found = {}
    for name in ("shared", role):
        specs = yaml.safe_load((ROLES / name / "meta" / "argument_specs.yml").read_text())
        found.update(specs["argument_specs"]["main"]["options"])
    return found


def ansible(
    *argv: str, inventory: Path = EXAMPLE, extra: dict[str, object] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "ANSIBLE_NOCOLOR": "1",
        # One JSON object per result line: "host | SUCCESS => {...}", "fatal: [host]: ... => {...}"
        "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
        "ANSIBLE_CALLBACK_FORMAT_PRETTY": "false",
    }
    return subprocess.run(
        [*argv, "-i", str(inventory), "-e", json.dumps({**PASSWORDS, **(extra or {})})],
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
        [sys.executable, ANSIBLE_DIR.parent / "scripts" / "install_collections.py"], check=True
    )


@pytest.fixture(scope="module")
def show_playbook(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Each role on its group, showing every option as the role sees it; and the preflight's
    lookup, showing what it will check (for every host, whatever --limit says)."""
    plays: list[dict[str, Any]] = []
    for group, role in PLAYS.items():
        show = sorted(options(role))
        task = {
            "name": "Show",
            "ansible.builtin.debug": {
                "msg": "{{ dict(show | zip(query('ansible.builtin.vars', *show))) }}"
            },
            # As in the role's own tasks (app_kit_package is found beside the role).
            "vars": {"show": show, "role_path": str(COLLECTION / "roles" / role)},
            "tags": ["show"],
        }
        plays.append(
            {
                "name": role,
                "hosts": group,
                "gather_facts": False,
                "roles": [f"idleproof.kit.{role}"],
                "tasks": [task],
            }
        )
    groups = {}
    for group, role in PLAYS.items():
        names = " + ".join(f"groups['{name}'] | default([])" for name in group.split(":"))
        groups[role] = "{{ (" + names + ") | unique }}"
    check = {
        "name": "Check",
        "idleproof.kit.check_inventory": {"roles": groups, "show": True},
        "register": "checked",
        "failed_when": False,
        "tags": ["show"],
    }
    task = {
        "name": "Show",
        "ansible.builtin.debug": {"msg": "{{ checked.views }}"},
        "tags": ["show"],
    }
    plays.append(
        {
            "name": "preflight",
            "hosts": "all",
            "gather_facts": False,
            "tasks": [check | {"run_once": True}, task | {"run_once": True}],
        }
    )
    path = tmp_path_factory.mktemp("show") / "show.yml"
    path.write_text(yaml.safe_dump(plays, sort_keys=False))
    return path


def shown(
    playbook: Path, inventory: Path = EXAMPLE, *args: str, **extra: object
) -> dict[str, dict[str, Any]]:
    """{play: {host: what it showed}}: each role's variables, or the preflight's lookup."""
    proc = ansible(
        str(BIN / "ansible-playbook"), str(playbook), "--tags", "show", *args,
        inventory=inventory, extra=extra,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    found: dict[str, dict[str, Any]] = {}
    play = ""
    for line in proc.stdout.splitlines():
        if line.startswith("PLAY ["):
            play = line.split("[", 1)[1].split("]", 1)[0]
        elif match := re.match(r"^ok: \[(\S+)\] => (\{.*\})$", line):
            found.setdefault(play, {})[match.group(1)] = json.loads(match.group(2))["msg"]
    return found


def preflight(inventory: Path = EXAMPLE, *args: str, **overrides: object) -> tuple[int, list[str]]:
    proc = ansible(
        str(BIN / "ansible-playbook"), "preflight.yml", *args, inventory=inventory, extra=overrides
    )
    failure = r"^(?:fatal: \[[^]]+\]: FAILED!|failed: \[\S+\] \(item=.*?\)) => (\{.*\})$"
    fatal = re.findall(failure, proc.stdout, re.M)
    return proc.returncode, [json.loads(result)["msg"] for result in fatal]


def copy_example(tmp_path: Path) -> Path:
    """The example inventory elsewhere, what it deploys still this checkout's app."""
    inventory = tmp_path / "inventory"
    shutil.copytree(EXAMPLE, inventory)
    write_vars(inventory / "group_vars" / "all" / "source.yml", {"app_source_dir": str(ROOT)})
    return inventory


def edit_hosts(inventory: Path, change: Any) -> None:
    hosts = inventory / "hosts.yml"
    data = yaml.safe_load(hosts.read_text())
    change(data["all"]["children"])
    hosts.write_text(yaml.safe_dump(data, sort_keys=False))


def write_vars(path: Path, values: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(values))


# --- what the roles see ----------------------------------------------------------------------


@pytest.mark.slow
def test_example_inventory_wires_one_idle_timeout_everywhere(show_playbook: Path) -> None:
    # db_idle_timeout 3600 on the server; the app knows both it and the 350 s middlebox.
    seen = shown(show_playbook)
    assert {str(v["mysql_wait_timeout"]) for v in seen["mysql"].values()} == {"3600"}
    assert {str(v["mysql_interactive_timeout"]) for v in seen["mysql"].values()} == {"3600"}
    assert {float(v["app_db_idle_timeout"]) for v in seen["app"].values()} == {3600.0}
    assert {float(v["app_db_network_idle_timeout"]) for v in seen["app"].values()} == {350.0}


@pytest.mark.slow
def test_example_inventory_wires_the_hosts_to_each_other(show_playbook: Path) -> None:
    seen = shown(show_playbook)
    assert seen["nginx"]["web1"]["nginx_upstream_servers"] == ["10.0.0.21:8000", "10.0.0.22:8000"]
    assert seen["mysql"]["db1"]["mysql_app_client_hosts"] == ["10.0.0.21", "10.0.0.22"]
    assert seen["mysql"]["db1"]["mysql_bind_address"] == "10.0.0.10"
    assert seen["app"]["app1"]["app_ip_address_allow"] == ["localhost", "10.0.0.10", "10.0.0.30"]
    assert seen["app"]["app1"]["app_socket_ip_address_allow"] == ["localhost", "10.0.0.30"]
    assert seen["app"]["app1"]["app_forwarded_allow_ips"] == ["127.0.0.1", "10.0.0.30"]
    assert seen["app"]["app1"]["app_listen"] == "10.0.0.21:8000"
    assert seen["firewall"]["db1"]["firewall_db_clients"] == ["10.0.0.21", "10.0.0.22"]
    assert seen["firewall"]["app1"]["firewall_app_clients"] == ["10.0.0.30"]
    # TLS on by default: the app hosts and db1 are different hosts.
    assert seen["app"]["app1"]["app_db_tls_ca"] == "/etc/idle-proof/db-ca.pem"
    assert seen["mysql"]["db1"]["mysql_tls"] in (True, "True")


@pytest.mark.slow
def test_the_preflight_sees_what_the_roles_see_even_under_limit(show_playbook: Path) -> None:
    """The preflight's lookup gives, for every host, each role's values exactly as the role
    sees them (passwords as stars), also for hosts outside --limit."""
    seen = shown(show_playbook)
    checked = shown(show_playbook, EXAMPLE, "--limit", "web1")["preflight"]["web1"]
    assert set(checked["groups"]) == {"db1", "app1", "app2", "web1", "backup1"}
    for role in PLAYS.values():
        secret = {n for n, spec in options(role).items() if spec.get("no_log")}
        for host, values in seen[role].items():
            view = checked["views"][role][host]
            for name in secret:
                value = values.pop(name)
                stars = (
                    {k: "*" * len(str(v)) for k, v in value.items()}
                    if isinstance(value, dict)
                    else "*" * len(str(value))
                )
                assert view.pop(name) == stars, name
            assert {n: str(v) for n, v in view.items()} == {n: str(v) for n, v in values.items()}


def probe(name: str, spec: dict[str, Any], index: int) -> Any:
    """A value of the option's type that no default has."""
    kind, element = spec.get("type", "raw"), spec.get("elements", "str")
    if kind == "list":
        return [4000 + index] if element == "int" else [f"probe-{name}"]
    return {
        "int": 4000 + index,
        "float": 40.5 + index,
        "bool": False,
        "dict": {"PROBE": name},
    }.get(kind, f"probe-{name}")


@pytest.mark.slow
@pytest.mark.parametrize("place", ["group_vars/all", "group file", "host_vars", "-e"])
def test_every_documented_variable_wins_where_a_user_sets_it(
    show_playbook: Path, tmp_path: Path, place: str
) -> None:
    """Every option of every role, set in an inventory's group_vars/all, a group's file,
    host_vars or -e, is what the role sees: no wiring outranks the inventory."""
    inventory = copy_example(tmp_path)
    index = {n: i for i, n in enumerate(sorted({n for r in PLAYS.values() for n in options(r)}))}
    values = {
        role: {n: probe(n, spec, index[n]) for n, spec in options(role).items()}
        for role in PLAYS.values()
    }
    everything = {k: v for role_values in values.values() for k, v in role_values.items()}
    extra: dict[str, Any] = {}
    if place == "group_vars/all":
        write_vars(inventory / "group_vars" / "all" / "zz-probe.yml", everything)
    elif place == "group file":
        for group, role in PLAYS.items():
            if group != "all":
                write_vars(
                    inventory / "group_vars" / f"{group}.yml", values[role] | values["firewall"]
                )
    elif place == "host_vars":
        for host in ("db1", "app1", "app2", "web1", "backup1"):
            write_vars(inventory / "host_vars" / f"{host}.yml", everything)
    else:
        extra = everything
    seen = shown(show_playbook, inventory, **extra)
    for role, expected in values.items():
        for host, got in seen[role].items():
            differ = {n: (got[n], v) for n, v in expected.items() if same(got[n]) != same(v)}
            assert not differ, (place, role, host, differ)


def same(value: Any) -> Any:
    """Values as Ansible may render them: 4000 or "4000", [4000] or ["4000"]."""
    if isinstance(value, list):
        return [str(v) for v in value]
    return value if isinstance(value, dict) else str(value)


# --- the preflight ---------------------------------------------------------------------------


def test_example_inventory_passes_preflight() -> None:
    assert preflight() == (0, [])


def test_the_mlflow_example_deploys_what_the_app_tests_run() -> None:
    """inventories/mlflow, a user's app from the index: consistent, and the same packages,
    callable, URL variable and migration that tests/test_apps.py and test_fleet_apps.py run."""
    inventory = ANSIBLE_DIR / "inventories" / "mlflow"
    assert preflight(inventory) == (0, [])
    own = yaml.safe_load((inventory / "group_vars" / "all" / "main.yml").read_text())
    tested = apps.inventory_vars(apps.MLFLOW)
    for name in ("app_python_packages", "app_wsgi", "app_database_url_variables"):
        assert own[name] == tested[name], name
    assert own["app_migrate_command"] == tested["app_migrate_command"]
    assert set(own["app_extra_environment"]) == set(tested["app_extra_environment"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"vault_db_password": ""}, "db_password is not set"),
        ({"vault_db_migrate_password": "short"}, "db_migrate_password is not set (or shorter"),
        (
            {"app_db_pool_recycle": 350},
            "app1, app2: app_db_pool_recycle=350 must be below app_db_network_idle_timeout=350: "
            "lower app_db_pool_recycle or unset it to use 315",
        ),
        ({"app_gunicorn_workers": 9}, "raise mysql_max_connections to at least 190"),
        ({"nginx_proxy_read_timeout": 30}, "raise nginx_proxy_read_timeout"),
        ({"app_gunicorn_timeout": 20}, "raise app_gunicorn_timeout"),
        ({"db_idle_timeout": "soon"}, "db_idle_timeout=soon is not a positive number"),
        (
            {"app_db_idle_timeout": 7200, "app_db_network_idle_timeout": ""},
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
        # Misspelt and mistyped: refused by name, never ignored.
        (
            {"app_db_pool_sise": 3},
            "app_db_pool_sise is not a variable of the kit's roles "
            "(did you mean app_db_pool_size?)",
        ),
        (
            {"mysql_max_conections": 500},
            "mysql_max_conections is not a variable of the kit's roles "
            "(did you mean mysql_max_connections?)",
        ),
        ({"nginx_listen": "80"}, "web1: nginx_listen='80' is not a list"),
        ({"db_tls": "maybe"}, "db_tls='maybe' is not true or false"),
        # A role variable set against the shared one that the other hosts follow.
        (
            {"mysql_port": 3307},
            "mysql_port=3307 on db1 but app_db_port=3306 on the app hosts: set db_port",
        ),
        ({"mysql_wait_timeout": 60}, "set db_idle_timeout"),
        ({"mysql_tls": False}, "db1 does not serve TLS (mysql_tls=False) but app_db_tls_ca is"),
        ({"app_listen": "/run/idle-proof/gunicorn.sock"}, "which web1 cannot reach"),
        (
            {"nginx_upstream_servers": ["10.0.0.21:8000"]},
            "nginx_upstream_servers=['10.0.0.21:8000'] but",
        ),
        ({"db_client_addresses": ["10.0.0.21"]}, "does not admit app2 (10.0.0.22)"),
        (
            {"app_forwarded_allow_ips": ["127.0.0.1"]},
            "app_forwarded_allow_ips on app1 lacks web1's",
        ),
        ({"firewall_web_ports": [443]}, "nginx listens on port 80 (nginx_listen) but"),
        ({"firewall_web_ports": [80]}, "nginx listens on port 443 (nginx_tls_listen) but"),
        (
            {"nginx_tls_listen": ["80"]},
            "nginx_listen and nginx_tls_listen both use port 80: give HTTPS a port of its own",
        ),
        ({"nginx_hsts_max_age": -5}, "nginx_hsts_max_age=-5 is below 0"),
        (
            {"nginx_tls_generate": False, "nginx_tls_certificate": "/nonexistent/web.crt"},
            "nginx_tls_certificate=/nonexistent/web.crt is not a file on the controller and "
            "nginx_tls_generate is false",
        ),
        (
            {"nginx_tls_acme": True},
            "nginx_tls_names=['app.example.com', '10.0.0.30'] with nginx_tls_acme: an ACME CA "
            "certifies public DNS names only",
        ),
        (
            {
                "nginx_tls_acme": True,
                "nginx_tls_names": ["www.example.com"],
                "nginx_tls_acme_server": "http://acme.example.com/directory",
            },
            "nginx_tls_acme_server=http://acme.example.com/directory is not an https:// URL",
        ),
        (
            {
                "nginx_tls_acme": True,
                "nginx_tls_names": ["www.example.com"],
                "nginx_tls_acme_server_ca": "/nonexistent/acme-ca.pem",
            },
            "nginx_tls_acme_server_ca=/nonexistent/acme-ca.pem is not a file on the controller",
        ),
        (
            {"firewall_web_connections_per_address": -1},
            "firewall_web_connections_per_address=-1 but nginx_worker_connections=4096: set it "
            "between 1 and 4095, or to 0",
        ),
        (
            {"firewall_web_connections_per_address": 5000},
            "firewall_web_connections_per_address=5000 but nginx_worker_connections=4096",
        ),
        ({"firewall_web_connections_per_address": "many"}, "'many' is not a whole number"),
        (
            {"db_address": "db.example.com", "mysql_tls_names": ["10.0.0.10"]},
            "app_db_host=db.example.com on app1 is not a name on db1's certificate",
        ),
        ({"db_max_connections": 500}, "db_max_connections is for a managed database"),
        # What to deploy: on the controller, before any host is touched.
        ({"app_source_dir": "/nonexistent"}, "app_source_dir=/nonexistent is not a directory"),
        (
            {"app_source_dir": "", "app_requirements": "", "app_python_packages": []},
            "nothing to deploy: set app_source_dir, app_requirements or app_python_packages",
        ),
        ({"app_kit_package": ""}, "app_kit_package is empty"),
        ({"app_wsgi": "app wsgi"}, "app_wsgi='app wsgi' is not MODULE:CALLABLE"),
        ({"app_database_url_variables": ["DATABASE_URL"]}, "lists DATABASE_URL, which the kit"),
    ],
)
def test_inconsistent_example_inventory_names_what_to_change(
    overrides: dict[str, object], message: str
) -> None:
    returncode, messages = preflight(EXAMPLE, **overrides)
    assert returncode != 0
    assert messages and all(message in m for m in messages), messages
    assert all("\n" not in m for m in messages), messages


def git(repo: Path, *argv: str) -> None:
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=kit", "-c", "user.email=kit@localhost", *argv],
        check=True, capture_output=True,
    )  # fmt: skip


def test_uncommitted_changes_to_a_release_are_refused_unless_asked_for(tmp_path: Path) -> None:
    """A release from a git work tree is its last commit: a changed or new file in what
    the release packs is refused, naming it; files outside app_source_paths do not count."""
    source = tmp_path / "source"
    (source / "app").mkdir(parents=True)
    (source / "app" / "wsgi.py").write_text("app = None\n")
    (source / "requirements.lock").write_text("")
    (source / "notes.txt").write_text("not packed\n")
    git(source, "init", "-q")
    git(source, "add", ".")
    git(source, "commit", "-q", "-m", "release")
    inventory = copy_example(tmp_path)
    packed = {"app_source_dir": str(source), "app_source_paths": ["app", "requirements.lock"]}
    write_vars(inventory / "group_vars" / "all" / "source.yml", packed)
    (source / "notes.txt").write_text("changed, but not packed\n")
    assert preflight(inventory) == (0, [])

    (source / "app" / "wsgi.py").write_text("app = 'edited'\n")
    (source / "app" / "new.py").write_text("")
    returncode, messages = preflight(inventory)
    assert returncode != 0
    expected = (
        f"app_source_dir={source} has uncommitted changes in what the release packs "
        "(app/new.py, app/wsgi.py): commit them, or set app_source_uncommitted=true"
    )
    assert messages and all(expected in m for m in messages), messages
    assert preflight(inventory, app_source_uncommitted=True) == (0, [])


def test_hosts_must_agree_on_the_shared_values(tmp_path: Path) -> None:
    """db_idle_timeout for the db group alone would give the server 60 s while the app hosts
    recycle at 315 s: refused, naming the variable and where each value comes from."""
    inventory = copy_example(tmp_path)
    write_vars(inventory / "group_vars" / "db.yml", {"db_idle_timeout": 60})
    returncode, messages = preflight(inventory)
    assert returncode != 0
    assert messages == [
        "db1, app1, app2, web1, backup1: db_idle_timeout differs between hosts (db1: 60; app1, "
        "app2, web1, backup1: 3600): set it once for all of them (your inventory's group_vars/all)"
    ]


def test_preflight_checks_hosts_outside_limit(tmp_path: Path) -> None:
    """--limit web1 touches web1 only, but web1 must still agree with the others."""
    inventory = copy_example(tmp_path)
    write_vars(inventory / "host_vars" / "db1.yml", {"mysql_max_connections": 50})
    assert preflight(inventory, "--limit", "db1")[0] != 0
    returncode, messages = preflight(inventory, "--limit", "web1")
    assert returncode != 0
    assert messages and "raise mysql_max_connections to at least 90" in messages[0], messages


@pytest.mark.parametrize(
    ("group", "message"),
    [
        (
            "app",
            "web1: nginx on the web hosts passes requests to the app group, which has no host: "
            "add your app hosts to the app group, or remove the web group",
        ),
        (
            "web",
            "app1, app2: app_listen is a unix socket, and no host runs nginx (the web group "
            "is empty): nothing can reach the app: add a host to the web group (an app host "
            "itself, for nginx beside the app)",
        ),
    ],
)
def test_a_layout_that_serves_nobody_is_refused(tmp_path: Path, group: str, message: str) -> None:
    """No app host behind nginx, or an app that only a local nginx could reach and none:
    refused before any file is written."""
    inventory = copy_example(tmp_path)
    edit_hosts(inventory, lambda groups: groups.pop(group))
    returncode, messages = preflight(inventory)
    assert returncode != 0
    assert messages and messages[0] == message, messages


def with_db2(groups: dict[str, Any]) -> None:
    groups["db"]["hosts"]["db2"] = {"ansible_host": "10.0.0.11"}


REPLICATION_PASSWORD = {"db_replication_password": "a-long-replication-password"}


def test_a_second_database_host_is_a_replica(tmp_path: Path) -> None:
    inventory = copy_example(tmp_path)
    edit_hosts(inventory, with_db2)
    assert preflight(inventory, **REPLICATION_PASSWORD) == (0, [])
    # db_address follows db_floating_address: the example sets it, so it is given here too.
    floating = {"db_floating_address": "10.0.0.50", "db_address": "10.0.0.50"}
    assert preflight(inventory, **REPLICATION_PASSWORD, **floating) == (0, [])


def test_a_floating_address_with_one_database_host_is_refused(tmp_path: Path) -> None:
    returncode, messages = preflight(copy_example(tmp_path), db_floating_address="10.0.0.50")
    assert returncode != 0
    assert messages == [
        "db1: db_floating_address=10.0.0.50 moves between db hosts, and the db group has one: "
        "remove db_floating_address, or add the replica to the db group"
    ], messages


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {},
            "db1, db2: db_replication_password is not set (or shorter than 12 characters), and "
            "the replicas of the db group's 2 hosts log in with it",
        ),
        (
            {"db_primary": "app1"},
            "db1, db2: db_primary=app1 is not a host of the db group, whose other hosts "
            "replicate it: set db_primary to one of db1, db2",
        ),
        (
            {"mysql_replication": False},
            "db1, db2: mysql_replication is false on db1, db2, and the db group has 2 hosts",
        ),
        (
            {"mysql_backup": False},
            "db1, db2: mysql_backup is false on db1, db2: a replica is seeded from a backup, and "
            "any db host may be the primary: set it to true",
        ),
        (
            {"mysql_tls": False},
            "db1, db2: mysql_tls is false on db1, db2: replication would cross the network in "
            "clear text: set it to true",
        ),
        ({"mysql_server_id": 1}, "mysql_server_id is not unique in the db group (1, 1)"),
        (
            {"mysql_semi_sync_timeout": 30},
            "db1, app1, app2: mysql_semi_sync_timeout=30 on db1 is not below "
            "app_db_read_timeout=30 on the app hosts",
        ),
        (
            {"mysql_replication_tcp_retries2": 8},
            "db1: mysql_replication_tcp_retries2=8 on db1 keeps a dead replica connection about "
            "102 s, and with the heartbeat (30 s) that is not below "
            "mysql_replication_net_timeout=60",
        ),
        (
            {"mysql_replication_heartbeat": 400},
            "db1: mysql_replication_heartbeat=400 on db1 must be above 0 and below "
            "mysql_replication_net_timeout=60 and network_idle_timeout=350: remove it from the "
            "inventory (it follows both)",
        ),
        (
            {"db_floating_address": "db.example.com"},
            "db1, db2: db_floating_address=db.example.com is not an IPv4 address",
        ),
        (
            {"db_floating_address": "10.0.0.50", "db_address": "10.0.0.10"},
            "db1, db2: db_address=10.0.0.10 but db_floating_address=10.0.0.50: the app hosts "
            "would not follow a failover",
        ),
        (
            {
                "db_floating_address": "10.0.0.50",
                "db_address": "10.0.0.50",
                "mysql_failover": False,
            },
            "db1, db2: mysql_failover is false on db1, db2, and db_floating_address=10.0.0.50 is "
            "where the app hosts connect",
        ),
        (
            {"db_floating_address": "10.0.0.11"},
            "db1, db2: db_floating_address=10.0.0.11 is db2's own address, which keepalived "
            "would take from it",
        ),
        (
            {"db_floating_address": "10.0.0.50", "mysql_vrrp_router_id": 300},
            "db1, db2: mysql_vrrp_router_id must be one number from 1 to 255 on every db host "
            "(300, 300)",
        ),
    ],
)
def test_a_replica_that_could_not_work_is_refused(
    tmp_path: Path, overrides: dict[str, object], message: str
) -> None:
    inventory = copy_example(tmp_path)
    edit_hosts(inventory, with_db2)
    returncode, messages = preflight(
        inventory, **(REPLICATION_PASSWORD if overrides else {}), **overrides
    )
    assert returncode != 0
    assert messages and message in messages[0], messages
    assert all("\n" not in m for m in messages), messages


def two_backup_hosts(groups: dict[str, Any]) -> None:
    groups["backup"]["hosts"]["backup2"] = {"ansible_host": "10.0.0.41"}


def db1_as_backup_host(groups: dict[str, Any]) -> None:
    groups["backup"]["hosts"] = {"db1": None}


@pytest.mark.parametrize(
    ("change", "extra", "message"),
    [
        (
            two_backup_hosts,
            {},
            "backup1, backup2: the backup group has 2 hosts, and the db hosts copy to one: "
            "keep one host in the backup group",
        ),
        (
            db1_as_backup_host,
            {},
            "db1: db1 is in both the db and the backup group, and a copy on the db host is lost "
            "with it: put another host in the backup group",
        ),
        (
            None,
            {"mysql_backup": False},
            "db1: mysql_backup is false on db1, so there is nothing to copy to the backup host: "
            "set mysql_backup to true, or remove the backup group",
        ),
    ],
)
def test_a_backup_group_that_cannot_keep_a_copy_is_refused(
    tmp_path: Path, change: Any, extra: dict[str, Any], message: str
) -> None:
    """A copy on one backup host apart from the db host, of backups that are taken."""
    inventory = copy_example(tmp_path)
    if change:
        edit_hosts(inventory, change)
    returncode, messages = preflight(inventory, **extra)
    assert returncode != 0
    assert messages == [message], messages


def test_a_backup_host_reached_by_name_needs_an_address(tmp_path: Path) -> None:
    """The db host's copy may reach the backup host only (IPAddressAllow=): an address."""
    inventory = copy_example(tmp_path)
    returncode, messages = preflight(inventory, mysql_backup_copy_address="backup1.example.com")
    assert returncode != 0
    assert messages == [
        "db1: mysql_backup_copy_address=backup1.example.com is not an address (systemd's "
        "IPAddressAllow= takes no names): give the backup host a private_address"
    ], messages


def test_a_backup_group_without_a_db_group_is_refused(tmp_path: Path) -> None:
    inventory = managed(tmp_path)
    backup1 = {"ansible_host": "10.0.0.40"}
    edit_hosts(inventory, lambda groups: groups.update(backup={"hosts": {"backup1": backup1}}))
    allow = {"app_ip_address_allow": ["localhost", "10.0.5.0/24", "10.0.0.30"]}
    returncode, messages = preflight(inventory, **allow)
    assert returncode != 0
    assert messages[0].startswith(
        "backup1: the backup group keeps the db hosts' backups, and there is no db group: "
        "remove the backup group (a managed database is backed up by its provider)"
    ), messages


def test_a_restore_without_a_db_host_is_refused_on_the_controller(tmp_path: Path) -> None:
    """restore.yml with a managed database (no db group) would only stop the app: refused
    in one line before any host is contacted (this one's port is closed anyway)."""
    inventory = tmp_path / "hosts.yml"
    app1 = {"ansible_host": "127.0.0.1", "ansible_port": 1}
    write_vars(inventory, {"all": {"children": {"app": {"hosts": {"app1": app1}}}}})
    proc = ansible(str(BIN / "ansible-playbook"), "restore.yml", inventory=inventory)
    assert proc.returncode != 0
    fatal = re.findall(r"^fatal: \[([^]]+)\]: FAILED! => (\{.*\})$", proc.stdout, re.M)
    assert [(host, json.loads(result)["msg"]) for host, result in fatal] == [
        (
            "localhost",
            "restore.yml restores the server of the db group, and this inventory has none: a "
            "managed database is restored with its provider's tools",
        )
    ], proc.stdout[-3000:]
    assert "app1" not in proc.stdout


def by_name(tmp_path: Path) -> Path:
    """The example with every host reached by a name."""
    inventory = copy_example(tmp_path)

    def rename(groups: dict[str, Any]) -> None:
        for group in groups.values():
            for name, host in group["hosts"].items():
                host["ansible_host"] = f"{name}.example.com"

    edit_hosts(inventory, rename)
    return inventory


def test_hosts_given_by_name_need_a_private_address(tmp_path: Path) -> None:
    returncode, messages = preflight(by_name(tmp_path))
    assert returncode != 0
    assert len(messages) == 1 and messages[0].startswith(
        "db1, app1, app2, web1, backup1: private_address is a name, not an address (db1: "
        "db1.example.com, app1: app1.example.com, app2: app2.example.com, web1: "
        "web1.example.com, backup1: backup1.example.com)"
    ), messages
    assert "set private_address for each (host_vars)" in messages[0]


@pytest.mark.slow
def test_hosts_given_by_name_with_addresses_get_addresses_everywhere(
    tmp_path: Path, show_playbook: Path
) -> None:
    """Names where names work (ssh, the database's name on its certificate), addresses
    where only an address does."""
    inventory = by_name(tmp_path)
    for host, address in {"db1": 10, "app1": 21, "app2": 22, "web1": 30, "backup1": 40}.items():
        write_vars(
            inventory / "host_vars" / f"{host}.yml", {"private_address": f"10.0.0.{address}"}
        )
    extra = {"db_address": "db1.example.com"}
    assert preflight(inventory, **extra) == (0, [])
    seen = shown(show_playbook, inventory, **extra)
    assert seen["mysql"]["db1"]["mysql_app_client_hosts"] == ["10.0.0.21", "10.0.0.22"]
    assert seen["mysql"]["db1"]["mysql_bind_address"] == "10.0.0.10"
    assert seen["mysql"]["db1"]["mysql_tls_names"] == ["db1.example.com", "10.0.0.10"]
    assert seen["mysql"]["db1"]["mysql_backup_copy_address"] == "10.0.0.40"
    assert seen["app"]["app1"]["app_db_host"] == "db1.example.com"
    assert seen["app"]["app1"]["app_ip_address_allow"] == ["localhost", "10.0.0.10", "10.0.0.30"]
    assert seen["app"]["app2"]["app_listen"] == "10.0.0.22:8000"
    assert seen["nginx"]["web1"]["nginx_upstream_servers"] == ["10.0.0.21:8000", "10.0.0.22:8000"]
    assert seen["firewall"]["app1"]["firewall_app_clients"] == ["10.0.0.30"]


def managed(tmp_path: Path) -> Path:
    """The example without a db group: the app hosts use a database the kit does not run."""
    inventory = copy_example(tmp_path)
    # A managed database's backups are its provider's.
    edit_hosts(inventory, lambda groups: [groups.pop("db"), groups.pop("backup")])
    main = inventory / "group_vars" / "all" / "main.yml"
    main.write_text(main.read_text().replace("db_address: 10.0.0.10", "db_address: db.example.com"))
    return inventory


def test_a_managed_database_needs_its_limits_its_ca_and_addresses(tmp_path: Path) -> None:
    inventory = managed(tmp_path)
    returncode, messages = preflight(inventory)
    assert returncode != 0
    assert messages == [
        "app1, app2: app_ip_address_allow lists db_address=db.example.com, a name: systemd's "
        "IPAddressAllow= takes addresses and networks only: set app_ip_address_allow to "
        "localhost, the database's address or network, and the web hosts' addresses"
    ]
    allow = {"app_ip_address_allow": ["localhost", "10.0.5.0/24", "10.0.0.30"]}
    returncode, messages = preflight(inventory, **allow)
    assert returncode != 0 and len(messages) == 1
    assert "set db_max_connections to that server's max_connections" in messages[0]
    assert f"db_tls_ca_cert={inventory}/.tls/ca.crt is not a file on the controller" in messages[0]
    ca = tmp_path / "provider-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    told = {**allow, "db_tls_ca_cert": str(ca)}
    returncode, messages = preflight(inventory, db_max_connections=60, **told)
    assert returncode != 0
    assert messages == [
        "managed database: db_max_connections=60 is below what the app hosts can open: 2 app "
        "host(s) x workers x (pool size + overflow) + 10 headroom = 90: raise "
        "db_max_connections to at least 90 or lower app_gunicorn_workers, app_db_pool_size or "
        "app_db_max_overflow"
    ]
    assert preflight(inventory, db_max_connections=120, **told) == (0, [])
