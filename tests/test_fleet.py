"""site.yml converged for real on a fleet: db1, app1, app2 and web1 as systemd-nspawn hosts
on a private bridge (scripts/fleet), each with its own address, over ssh; and mon1, a
host of the same inventory outside the kit's groups, which nothing may touch.

One fleet per module, with names and a subnet of its own: booted, converged cold (with
passwords holding / @ : % #), converged again at -vvv (nothing may change, no password
shown), then used through web1 (in HTTPS, its name checked against the kit's CA) and
probed from the wrong hosts; removed even when a test fails.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
import yaml

from harness.fleet import Fleet
from harness.testhost import PlaybookRun, snapshot_release
from tests.helpers import own_fleet, reaches, report

pytestmark = [pytest.mark.slow, pytest.mark.ansible, pytest.mark.fleet]

# The app's own secret (an API key, a SECRET_KEY): app_extra_environment is where it goes.
APP_SECRET = f"kit-app-secret-{secrets.token_hex(12)}"


@pytest.fixture(scope="module")
def fleet(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Fleet]:
    secret = {"app_extra_environment": {"KIT_TEST_API_KEY": APP_SECRET}}
    # mon1: a host of the same inventory in a group of its own, which the kit must not touch.
    with own_fleet(tmp_path_factory, inventory_vars=secret, bystanders={"mon1": 40}) as fleet:
        # The inventory's password lookups read these: every character a URL or a shell
        # cares about, so a password that breaks a URL or a command line breaks the converge.
        for name in ("db-password", "db-migrate-password"):
            path = fleet.inventory / ".secrets" / name
            path.parent.mkdir(mode=0o700, exist_ok=True)
            path.write_text(f"Kit/{secrets.token_urlsafe(12)}@:%#{secrets.token_hex(4)}\n")
        seconds = fleet.up()
        report(request, "fleet", f"boot of 5 hosts (mon1 too), bridge and proxy: {seconds:.0f} s")
        yield fleet


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
    proxy = f"http://{fleet.controller}:3142"
    probe = (
        "import urllib.request, urllib.error\n"
        f"proxy = urllib.request.ProxyHandler({{'http': {proxy!r}}})\n"
        "try:\n"
        "    urllib.request.build_opener(proxy).open('http://pypi.org/simple/', timeout=10)\n"
        "except urllib.error.HTTPError as e:\n"
        "    print(e.code)\n"
    )
    assert fleet.run("app1", "python3", "-c", probe).stdout.strip() == "403"


@pytest.fixture(scope="module")
def rerun(converged: Fleet, request: pytest.FixtureRequest) -> PlaybookRun:
    """The second converge, at -vvv: every remote command and module result shown."""
    second = converged.playbook("-vvv")
    assert second.returncode == 0, second.output[-6000:]
    report(request, "fleet", f"re-run at -vvv: {second.seconds:.0f} s, changed={second.changed}")
    return second


def test_converge_then_rerun_changes_nothing(rerun: PlaybookRun) -> None:
    assert rerun.changed == 0, f"changed on re-run: {rerun.changed_tasks()}"


def test_a_host_outside_the_kits_groups_is_left_alone(converged: Fleet, rerun: PlaybookRun) -> None:
    """A monitoring host in the same inventory, in a group of its own: no play reaches it,
    so no firewall of the kit's closes it off, and none of the kit's files land there."""
    assert "mon1" not in rerun.output.split("PLAY RECAP")[-1], rerun.output[-2000:]
    kit_files = converged.run("mon1", "grep", "-rlsF", "idle_proof", "/etc", check=False)
    assert kit_files.stdout.strip() == "", kit_files.stdout
    for host in ("app1", "web1"):
        assert converged.run(host, "grep", "-rlsF", "idle_proof", "/etc").stdout.strip()


def passwords(fleet: Fleet) -> dict[str, str]:
    return {
        name: (fleet.inventory / ".secrets" / name).read_text().strip()
        for name in ("db-password", "db-migrate-password")
    }


def leaks(output: str, fleet: Fleet) -> list[str]:
    """Which password shows in output: whole, percent-encoded, or any 8 characters of it."""
    found = []
    for name, secret in passwords(fleet).items():
        pieces = {secret, quote(secret, safe="")} | {
            secret[i : i + 8] for i in range(len(secret) - 7)
        }
        found += [name for piece in pieces if piece in output][:1]
    return found


def test_no_password_shows_at_vvv(converged: Fleet, rerun: PlaybookRun) -> None:
    # The migration did run at -vvv, and its task hid its stdin (the migration user's URL).
    assert "Migrate the schema to this release, once per run" in rerun.output
    assert leaks(rerun.output, converged) == []
    # Nor the app's own secret, which the app's EnvironmentFile does hold.
    assert APP_SECRET in converged.run("app1", "cat", "/etc/idle-proof/app.env").stdout
    assert APP_SECRET[-12:] not in rerun.output


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
    # nginx spreads requests over both app hosts, and both reach db1. A worker's counts
    # reach /metrics within a second (idleproof.metrics flushes them), so look for a while.
    deadline = time.monotonic() + 5
    while True:
        after = {host: checkouts(converged, host) for host in ("app1", "app2")}
        if all(after[host] > before[host] for host in after) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert all(after[host] > before[host] for host in after), (before, after)


# --- HTTPS for clients ------------------------------------------------------------------------


def handshake(fleet: Fleet, context: ssl.SSLContext, name: str) -> str:
    """A TLS handshake with web1 on 443 naming ``name``: the protocol, or the error."""
    try:
        with (
            socket.create_connection((fleet.address("web1"), 443), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname=name) as tls,
        ):
            return str(tls.version())
    except (ssl.SSLError, ssl.CertificateError) as exc:
        why = getattr(exc, "verify_message", None) or getattr(exc, "reason", None) or exc
        return f"{type(exc).__name__}: {why}"


def test_https_through_web1_checks_the_name_and_refuses_old_protocols(converged: Fleet) -> None:
    """web1's certificate is signed by the kit's CA for web1's address, which a client
    verifies; TLS below 1.2 is refused by web1 (the client here would still speak it)."""
    web1 = converged.address("web1")
    trusting = ssl.create_default_context(cafile=str(converged.ca))
    assert handshake(converged, trusting, web1) in ("TLSv1.2", "TLSv1.3")
    wrong = handshake(converged, trusting, "not-web1.example")
    assert wrong.startswith("SSLCertVerificationError: Hostname mismatch"), wrong
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(cafile=str(converged.ca))
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    old.minimum_version, old.maximum_version = ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1
    refused = handshake(converged, old, web1)
    assert refused == "SSLError: TLSV1_ALERT_PROTOCOL_VERSION", refused  # web1's refusal
    answer = requests.get(f"{converged.url}/readyz", timeout=10)
    assert answer.status_code == 200 and "Strict-Transport-Security" not in answer.headers


def test_plain_http_is_redirected_to_https_keeping_the_method(converged: Fleet) -> None:
    web1 = converged.address("web1")
    plain = requests.post(
        f"http://{web1}/notes", json={"text": "sent in plain HTTP"}, timeout=10,
        allow_redirects=False,
    )  # fmt: skip
    assert (plain.status_code, plain.headers["Location"]) == (308, f"https://{web1}/notes")
    followed = requests.post(f"http://{web1}/notes", json={"text": "followed"}, timeout=10)
    assert followed.status_code == 201 and followed.url == f"https://{web1}/notes", followed.url


# --- nothing reachable that should not be ---------------------------------------------------


@pytest.mark.parametrize(
    ("source", "target", "port", "open_"),
    [
        ("web1", "db1", 3306, False),
        ("app1", "db1", 3306, True),
        ("app2", "db1", 3306, True),
        ("db1", "app1", 8000, False),
        ("app2", "app1", 8000, False),
        ("web1", "app1", 8000, True),
        ("web1", "app2", 8000, True),
        ("db1", "web1", 80, True),
        ("db1", "web1", 443, True),
    ],
)
def test_each_service_answers_only_the_hosts_that_use_it(
    converged: Fleet, source: str, target: str, port: int, open_: bool
) -> None:
    assert reaches(converged, source, target, port) is open_


def test_without_the_kits_firewall_the_wrong_host_gets_in(converged: Fleet) -> None:
    """MariaDB listens on db1's bridge address: the firewall is what keeps web1 out."""
    converged.run("db1", "nft", "delete", "table", "inet", "idle_proof")
    try:
        assert reaches(converged, "web1", "db1", 3306)
    finally:
        converged.run("db1", "nft", "--file", "/etc/nftables.d/idle-proof.nft")
    assert not reaches(converged, "web1", "db1", 3306)


def test_the_socket_unit_admits_only_the_web_hosts(converged: Fleet) -> None:
    """Enforced by systemd with cgroup v2 only (not on this machine): the firewall above is
    what a test can prove here, the unit's own list is checked as systemd loaded it."""
    shown = converged.run(
        "app1", "systemctl", "show", "idle-proof.socket", "-p", "IPAddressAllow", "-p",
        "IPAddressDeny", "-p", "Listen",
    ).stdout  # fmt: skip
    values = dict(line.split("=", 1) for line in shown.splitlines())
    web1 = converged.address("web1")
    assert set(values["IPAddressAllow"].split()) == {"127.0.0.0/8", "::1/128", f"{web1}/32"}
    assert set(values["IPAddressDeny"].split()) == {"0.0.0.0/0", "::/0"}
    assert values["Listen"] == f"{converged.address('app1')}:8000 (Stream)"


# --- TLS to the database, least privilege ---------------------------------------------------

# Logs in to db1 from an app host as the runtime user, with DATABASE_URL and DB_TLS_CA from
# the host's EnvironmentFile (no password on a command line): "plain" without TLS,
# "verified" as the app does, "other-name" verified against a name db1's certificate lacks.
LOGIN = r"""
import socket, sys
from urllib.parse import unquote, urlsplit
import pymysql
env = dict(line.split("=", 1) for line in open("/etc/idle-proof/app.env").read().splitlines()
           if "=" in line and not line.startswith("#"))
url = urlsplit(env["DATABASE_URL"])
args = dict(host=url.hostname, port=url.port, user=unquote(url.username),
            password=unquote(url.password), database=url.path[1:], connect_timeout=5)
mode = sys.argv[1]
if mode == "plain":
    args["ssl_disabled"] = True
else:
    args["ssl"] = {"ca": env["DB_TLS_CA"], "check_hostname": True}
if mode == "other-name":
    real, connect = url.hostname, socket.create_connection
    socket.create_connection = lambda address, *a, **k: connect((real, address[1]), *a, **k)
    args["host"] = "db.other-name.invalid"
try:
    cursor = pymysql.connect(**args).cursor()
    cursor.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
    print("cipher", cursor.fetchone()[1] or "-")
    for statement in sys.argv[2:]:
        try:
            cursor.execute(statement)
            print("allowed", statement)
        except pymysql.err.MySQLError as exc:
            print("refused", statement, exc.args[0])
except pymysql.err.MySQLError as exc:
    print("login refused", *exc.args)
"""
VENV_PYTHON = "/opt/idle-proof/current/venv/bin/python"


def login(fleet: Fleet, host: str, mode: str, *statements: str) -> list[str]:
    out = fleet.run(host, VENV_PYTHON, "-c", LOGIN, mode, *statements).stdout
    return out.strip().splitlines()


@pytest.mark.parametrize("host", ["app1", "app2"])
def test_the_app_user_is_refused_in_plaintext_and_verifies_the_server(
    converged: Fleet, host: str
) -> None:
    # 1045: access denied (REQUIRE SSL), before any query.
    plain = login(converged, host, "plain")
    assert plain[0].startswith("login refused 1045 Access denied for user 'app'"), plain
    verified = login(converged, host, "verified")
    assert verified[0].startswith("cipher TLS_"), verified
    # The same server and CA under a name its certificate does not carry: refused.
    other = login(converged, host, "other-name")
    assert other[0].startswith("login refused 2003") and "Hostname mismatch" in other[0], other


def doctor_task_output(run: PlaybookRun) -> str:
    """What the app play's idleproof doctor task printed, over every batch of the rolling play
    (serial: one app host per batch, so the task appears once per host)."""
    parts = run.output.split("TASK [idleproof.kit.app : Run idleproof doctor on this host.]")[1:]
    assert parts, "the app play ran no idleproof doctor task"
    return "".join(part.split("TASK [")[0] for part in parts)


def test_kit_doctor_reports_the_encryption_on_each_app_host(
    converged: Fleet, rerun: PlaybookRun
) -> None:
    # The app play ran it on both app hosts (and a FAIL would have failed the play).
    ran = doctor_task_output(rerun)
    assert "ok: [app1]" in ran and "ok: [app2]" in ran, ran
    for host in ("app1", "app2"):
        doctor = converged.run(
            host, "/opt/idle-proof/current/venv/bin/idleproof", "doctor", "--env-file",
            "/etc/idle-proof/app.env", "--systemd-unit",
            "/etc/systemd/system/idle-proof.service", "--json", check=False,
        )  # fmt: skip
        checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
        assert checks["TLS"]["status"] == "PASS", checks["TLS"]
        assert "encrypted (TLSv1.3" in checks["TLS"]["detail"], checks["TLS"]
        assert "certificate and name verified" in checks["TLS"]["detail"], checks["TLS"]
        assert not [c for c in checks.values() if c["status"] == "FAIL"], checks


def test_the_runtime_user_changes_data_only(converged: Fleet) -> None:
    ddl = "CREATE TABLE probe_ddl (id INT)"
    dml = "SELECT COUNT(*) FROM notes"
    # 1142: command denied to the runtime user.
    assert login(converged, "app1", "verified", dml, ddl)[1:] == [
        f"allowed {dml}",
        f"refused {ddl} 1142",
    ]
    app1 = converged.address("app1")
    grants = converged.run(
        "db1", "mysql", "-N", "-e",
        f"SHOW GRANTS FOR 'app'@'{app1}'; SHOW GRANTS FOR 'app_migrate'@'{app1}'",
    ).stdout  # fmt: skip
    assert f"GRANT SELECT, INSERT, UPDATE, DELETE ON `app`.* TO `app`@`{app1}`" in grants
    # The migration user's schema changes: what Alembic and the documented apps' own
    # migrations (MLflow's triggers, views) run, and no more than that on this schema.
    migrate = (
        "GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, REFERENCES, INDEX, ALTER, "
        f"CREATE VIEW, SHOW VIEW, TRIGGER ON `app`.* TO `app_migrate`@`{app1}`"
    )
    assert migrate in grants, grants


@pytest.mark.parametrize("host", ["app1", "app2"])
def test_the_migration_password_never_reaches_an_app_host(converged: Fleet, host: str) -> None:
    env = converged.run(host, "cat", "/etc/idle-proof/app.env").stdout
    secret = passwords(converged)
    assert quote(secret["db-password"], safe="") in env  # the runtime user's, encoded
    assert leaks(env, converged) == ["db-password"]
    assert "app_migrate" not in env
    # Nor in any other file the kit writes there (its config and units).
    found = converged.run(
        host, "grep", "-rlF", "app_migrate", "/etc/idle-proof", "/etc/systemd/system",
        check=False,
    ).stdout  # fmt: skip
    assert found.strip() == "", found


# --- one host at a time, and a dry run -------------------------------------------------------


@pytest.mark.parametrize("host", ["web1", "db1", "app1"])
def test_limit_to_one_host_converges_it_alone(
    converged: Fleet, host: str, request: pytest.FixtureRequest
) -> None:
    run = converged.playbook("--limit", host)
    assert run.returncode == 0, run.output[-6000:]
    report(request, "fleet", f"--limit {host}: {run.seconds:.0f} s, changed={run.changed}")
    assert run.changed == 0, run.changed_tasks()
    recap = run.output.split("PLAY RECAP")[-1].splitlines()[1:]
    assert [line.split()[0] for line in recap if line.strip()] == [host], recap


def test_check_diff_runs_and_predicts_no_change(
    converged: Fleet, request: pytest.FixtureRequest
) -> None:
    run = converged.playbook("--check", "--diff")
    assert run.returncode == 0, run.output[-6000:]
    report(request, "fleet", f"--check --diff: {run.seconds:.0f} s, changed={run.changed}")
    assert run.changed == 0, run.changed_tasks()
    assert leaks(run.output, converged) == []


def test_a_fail_of_kit_doctor_stops_the_app_play(converged: Fleet) -> None:
    """A server that drifted from the inventory (wait_timeout lowered at run time, which
    the preflight cannot see) fails the app play on the app host, naming the check."""
    converged.run("db1", "mysql", "-e", "SET GLOBAL wait_timeout = 20")
    try:
        run = converged.playbook("--limit", "app1")
    finally:
        converged.run("db1", "mysql", "-e", "SET GLOBAL wait_timeout = 60")
    assert run.returncode != 0
    found = "idleproof doctor on app1" in run.output and "FAIL wait_timeout" in run.output
    assert found, run.output[-4000:]


def test_a_migration_running_on_the_host_stops_a_second_deploy_with_one_line(
    converged: Fleet,
) -> None:
    """Another deploy's migration still running on app1 (here a holder of its lock): this
    deploy stops before it would migrate beside it, and says what to do."""
    holder = "ipk-migration-holder"
    converged.run(
        "app1", "systemd-run", f"--unit={holder}", "--collect",
        "/usr/bin/flock", "/var/lib/idle-proof/.migrate.lock", "sleep", "600",
    )  # fmt: skip
    try:
        run = converged.playbook("--limit", "app1")
    finally:
        converged.run("app1", "systemctl", "stop", holder, check=False)
    assert run.returncode != 0, run.output[-4000:]
    fatal = run.fatal("app1")
    assert "a migration of idle-proof is already running on app1" in fatal, run.output[-4000:]


def running_environment(fleet: Fleet, host: str) -> dict[str, str]:
    """The environment of the app's running Gunicorn master, and when it started."""
    pid = fleet.run(host, "systemctl", "show", "-P", "MainPID", "idle-proof.service").stdout
    environ = fleet.run(host, "cat", f"/proc/{pid.strip()}/environ").stdout
    started = fleet.run(
        host, "systemctl", "show", "-P", "ActiveEnterTimestampMonotonic", "idle-proof.service"
    ).stdout.strip()
    found = dict(item.split("=", 1) for item in environ.split("\0") if "=" in item)
    return found | {"(started)": started}


def test_a_setting_written_before_a_failed_migration_reaches_the_app_on_the_next_run(
    converged: Fleet,
) -> None:
    """A run writes a new setting, then its migration fails: the app keeps running as it
    was. The next run finds the file already written, and must still restart the app."""
    before = running_environment(converged, "app1")
    assert before["DB_POOL_SIZE"] != "4", before["DB_POOL_SIZE"]
    setting = {"app_db_pool_size": 4}
    try:
        # A migration that fails after saying who runs it and whether it can change the
        # release it migrates to (it must not: it runs as the app's user, confined).
        says = (
            'echo "as $(id -un), release writable: $(touch x 2>/dev/null && echo yes || echo no)"'
        )
        migrate = {"app_migrate_command": ["sh", "-c", f"{says} >&2; exit 3"]}
        failed = converged.playbook("--limit", "app1", "-e", json.dumps(setting | migrate))
        assert failed.returncode != 0, failed.output[-4000:]
        expected = "sh failed on app1 (exit 3): as idle-proof, release writable: no"
        assert expected in failed.fatal("app1"), failed.output[-4000:]
        assert running_environment(converged, "app1") == before  # not restarted
        again = converged.playbook("--limit", "app1", "-e", json.dumps(setting))
        assert again.returncode == 0, again.output[-4000:]
        after = running_environment(converged, "app1")
        assert after["(started)"] != before["(started)"], "the app was not restarted"
        assert after["DB_POOL_SIZE"] == "4"
    finally:
        back = converged.playbook("--limit", "app1")
    assert back.returncode == 0, back.output[-4000:]
    assert running_environment(converged, "app1")["DB_POOL_SIZE"] == before["DB_POOL_SIZE"]


def test_a_release_name_reused_for_other_files_is_refused(converged: Fleet, tmp_path: Path) -> None:
    """app_release_id given to new code, while a release of that name is on app1 already:
    unpacking nothing and restarting on the old files would look like a deploy. Refused."""
    current = converged.run("app1", "readlink", "/opt/idle-proof/current").stdout.strip()
    name = current.rsplit("/", 1)[-1]
    source = snapshot_release(tmp_path / "release")
    with (source / "app" / "wsgi.py").open("a") as wsgi:
        wsgi.write("# new code under an old release name\n")
    overrides = {"app_release_id": name, "app_source_dir": str(source)}
    run = converged.playbook("--limit", "app1", "-e", json.dumps(overrides))
    assert run.returncode != 0, run.output[-4000:]
    fatal = run.fatal("app1")
    assert f"app_release_id={name} is already on app1 with other files" in fatal, run.output[-4000:]
    assert converged.run("app1", "readlink", "/opt/idle-proof/current").stdout.strip() == current
    code = converged.run("app1", "cat", f"{current}/app/wsgi.py").stdout
    assert "old release name" not in code


def test_accounts_and_virtualenvs_nothing_uses_are_removed(converged: Fleet) -> None:
    """An app host that left the inventory keeps no database account, and a virtualenv
    no kept release points at is removed; other accounts and the venv in use stay."""
    gone = "192.0.2.7"  # an app host's address that is no longer in the inventory
    converged.run(
        "db1", "mysql", "-e",
        f"CREATE USER 'app'@'{gone}' IDENTIFIED BY 'x'; "
        f"GRANT SELECT ON app.* TO 'app'@'{gone}'; "
        f"CREATE USER 'app_migrate'@'{gone}' IDENTIFIED BY 'x'; "
        f"CREATE USER 'someone'@'{gone}' IDENTIFIED BY 'x'",
    )  # fmt: skip
    stale = "/opt/idle-proof/venvs/0123456789ab"
    converged.run("app1", "mkdir", "-p", f"{stale}/bin")
    converged.run("app1", "touch", f"{stale}/.complete")
    try:
        run = converged.playbook("--limit", "db1,app1")
        assert run.returncode == 0, run.output[-4000:]
        accounts = converged.run(
            "db1", "mysql", "-N", "-e", f"SELECT User FROM mysql.user WHERE Host = '{gone}'"
        ).stdout.split()
        assert accounts == ["someone"]
        venvs = converged.run("app1", "ls", "/opt/idle-proof/venvs").stdout.split()
        links = converged.run("app1", "sh", "-c", "readlink /opt/idle-proof/releases/*/venv")
        assert sorted(venvs) == sorted({link.rsplit("/", 1)[-1] for link in links.stdout.split()})
        assert "0123456789ab" not in venvs
    finally:
        # Whatever the run left of the three (all of them, when it failed early).
        drop = ", ".join(f"'{user}'@'{gone}'" for user in ("app", "app_migrate", "someone"))
        converged.run("db1", "mysql", "-e", f"DROP USER IF EXISTS {drop}")
        converged.run("app1", "rm", "-rf", stale)


@pytest.mark.parametrize(
    ("tag", "host", "roles"),
    [("web", "web1", {"idleproof.kit.nginx"}), ("app", "app1", {"idleproof.kit.app"})],
)
def test_a_tag_runs_its_part_of_the_kit_after_the_preflight(
    converged: Fleet, tag: str, host: str, roles: set[str]
) -> None:
    """--tags web re-runs nginx alone and --tags app the app alone (each still behind the
    preflight and the system check, the shared role's, as is the CA that app hosts use): no
    other role's task runs, and on a converged fleet nothing changes."""
    run = converged.playbook("--tags", tag, "--limit", host)
    assert run.returncode == 0, run.output[-4000:]
    # Each role's check of its arguments runs with any tag (Ansible tags it `always`).
    tasks = re.findall(r"^TASK \[([^\]]+) : (?!Validating arguments)", run.output, re.M)
    expected = {"idleproof.kit.preflight", "idleproof.kit.shared"} | roles
    assert set(tasks) == expected, sorted(set(tasks))
    assert run.changed == 0, run.changed_tasks()


def test_a_host_on_a_system_the_kit_is_not_tested_on_is_refused_untouched(
    converged: Fleet,
) -> None:
    """web1 runs Debian 12; a list of tested systems without it stops the run with one
    line per host before any role touches a host."""
    untested = {"shared_supported_systems": ["Debian 13"]}
    run = converged.playbook("--limit", "web1", "-e", json.dumps(untested))
    assert run.returncode != 0, run.output[-4000:]
    fatal = run.fatal("web1")
    expected = "web1 runs Debian 12, which the kit is not tested on"
    assert expected in fatal, run.output[-4000:]
    assert "TASK [idleproof.kit.firewall" not in run.output, run.output[-4000:]


def test_a_managed_database_serves_app_hosts_without_a_db_group(
    converged: Fleet, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """db1 as a database the kit does not run (no db group; its users made by "the DBA",
    here the mysql role earlier): the inventory states its limits and CA, the app hosts
    converge against it unchanged, and idleproof doctor passes there, TLS verified."""
    inventory = tmp_path / "managed"
    hosts = yaml.safe_load((converged.inventory / "hosts.yml").read_text())
    hosts["all"]["children"].pop("db")
    hosts["all"]["children"].pop("backup")  # a managed database's backups are its provider's
    inventory.mkdir()
    (inventory / "hosts.yml").write_text(yaml.safe_dump(hosts, sort_keys=False))
    shutil.copytree(converged.inventory / ".secrets", inventory / ".secrets")
    fleet_vars = yaml.safe_load((converged.inventory / "group_vars" / "all.yml").read_text())
    managed = {
        **fleet_vars,
        "db_address": converged.address("db1"),
        "db_max_connections": 60,
        "db_tls_ca_cert": str(converged.inventory / ".tls" / "ca.crt"),
    }
    (inventory / "group_vars").mkdir()
    (inventory / "group_vars" / "all.yml").write_text(yaml.safe_dump(managed))
    run = converged.playbook("--limit", "app", inventory=inventory)
    assert run.returncode == 0, run.output[-6000:]
    report(request, "fleet", f"managed database, app hosts: {run.seconds:.0f} s")
    assert run.changed == 0, run.changed_tasks()
    ran = doctor_task_output(run)
    assert "ok: [app1]" in ran and "ok: [app2]" in ran, ran
    # Without db_max_connections the preflight refuses it, naming the variable.
    del managed["db_max_connections"]
    (inventory / "group_vars" / "all.yml").write_text(yaml.safe_dump(managed))
    refused = converged.playbook("--limit", "app", inventory=inventory)
    assert refused.returncode != 0 and "set db_max_connections" in refused.output
