"""A replica, on a converged fleet of its own (db1, db2, app1, web1).

With two hosts in the db group, db2 becomes a replica of db1 (db_primary): seeded from a
fresh backup of db1, by GTID, over TLS that verifies db1's certificate, semi-synchronous,
read-only to the app's users. A firewall on db1 forgets idle flows to MariaDB after the
inventory's ``network_idle_timeout``, as in tests/test_fleet_incident.py, and the replication
connection crosses it too.

* db2 replicates db1 over verified TLS, with the replication account refused without TLS;
* under load through web1, every note db1 acknowledged (201) is on db2, once, and db1
  waited for db2's acknowledgement of every COMMIT;
* the app's user can read on db2 and not write; ``idleproof doctor`` on app1 passes the
  primary (a replica acknowledging) and fails settings pointed at db2 (read-only);
* idle past the firewall's limit, the kit's heartbeat (below the limit) keeps the
  replication connection alive: the next COMMIT is acknowledged at once and on db2 within
  seconds. With MariaDB's default heartbeat (30 s) on the same fleet, the firewall forgets
  the connection: the COMMIT waits out the semi-sync timeout, is acknowledged without db2,
  and db2 does not have it until it reconnects by itself, while db1 answers throughout (its
  kernel drops the dead connection first); a converge puts the kit's heartbeat back;
* the replication metrics on both hosts, and a stopped replica's;
* restore.yml restores db1 and seeds db2 again from it, so that db2 follows db1's new
  binary logs rather than skipping them;
* deploy/RUNBOOK.md section 13, every command on its host: a replica seeded again;
* db_floating_address on db1, the writable host, only; section 14: db1 powered off under
  load, failover.yml promotes db2 and the address follows, the app hosts with no restart:
  the cut costs 503s only, every acknowledged note is on db2, once; an app given db1's own
  address fails, and a converge with the stale inventory is refused;
* section 15: db1 comes back writable without the address and rejoins as db2's replica;
  a switch back to db1 with both up loses no acknowledged note, and db2 rejoins.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Iterator

import pytest
import requests

from harness.fleet import Fleet
from harness.incident import APP_ENV, RELEASE, dead_host_bound, host_env
from harness.mariadb import MYSQL_ROLE_DEFAULTS
from harness.traffic import Load
from idleproof.settings import Settings
from tests.helpers import (
    forgetting_fleet,
    report,
    role_default,
    runbook_blocks,
    service_pid,
)

pytestmark = [pytest.mark.slow, pytest.mark.ansible, pytest.mark.fleet]

NETWORK_IDLE_TIMEOUT = 10
# The fleet's mysql_semi_sync_timeout: the role's default.
SEMI_SYNC_TIMEOUT = role_default(MYSQL_ROLE_DEFAULTS, "mysql_semi_sync_timeout")
METRICS = "/var/lib/prometheus/node-exporter/idle_proof_replication.prom"
# db_floating_address's last octet on the fleet's network: an address no host has.
FLOATING_OCTET = 50


@pytest.fixture(scope="module")
def fleet(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Fleet]:
    started = time.monotonic()
    with forgetting_fleet(
        tmp_path_factory,
        "ipkr",
        NETWORK_IDLE_TIMEOUT,
        extra_hosts={"db2": ("db", 11)},
        without=("app2",),
    ) as fleet:
        fleet.inventory_vars["db_floating_address"] = f"{fleet.network}.{FLOATING_OCTET}"
        fleet.write_inventory()
        converge = fleet.playbook()
        assert converge.returncode == 0, converge.output[-6000:]
        report(
            request,
            "replica",
            f"fleet booted, firewall on db1, converged with db2 seeded: "
            f"{time.monotonic() - started:.0f} s (converge {converge.seconds:.0f} s)",
        )
        yield fleet


def sql(fleet: Fleet, host: str, query: str) -> str:
    return fleet.run(host, "mariadb", "-N", "-e", query).stdout.strip()


def replica_status(fleet: Fleet, host: str = "db2") -> dict[str, str]:
    out = fleet.run(host, "mariadb", "-e", "SHOW SLAVE STATUS\\G").stdout
    fields = (line.split(":", 1) for line in out.splitlines() if ":" in line)
    return {name.strip(): value.strip() for name, value in fields}


def semi_sync(fleet: Fleet) -> dict[str, str]:
    """db1's Rpl_semi_sync_master_* status, without the prefix."""
    out = sql(fleet, "db1", "SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_%'")
    rows = (line.split("\t") for line in out.splitlines())
    return {name.removeprefix("Rpl_semi_sync_master_"): value for name, value in rows}


def caught_up(fleet: Fleet, seconds: float, primary: str = "db1", replica: str = "db2") -> bool:
    """Whether the replica applied everything the primary has logged, within ``seconds``."""
    position = sql(fleet, primary, "SELECT @@gtid_binlog_pos")
    waited = sql(fleet, replica, f"SELECT MASTER_GTID_WAIT('{position}', {seconds})")
    return waited == "0"


def floating(fleet: Fleet) -> str:
    return str(fleet.inventory_vars["db_floating_address"])


def holds(fleet: Fleet, host: str) -> bool:
    """Whether the host has the floating address on an interface."""
    show = ("ip", "-o", "-4", "addr", "show", "to", f"{floating(fleet)}/32")
    return bool(fleet.run(host, *show).stdout.strip())


def notes_on(fleet: Fleet, host: str) -> list[str]:
    return sql(fleet, host, "SELECT text FROM app.notes").split("\n")


def env_pointed_at(fleet: Fleet, host: str) -> str:
    """app1's settings with DATABASE_URL at ``host``'s own address rather than the floating
    one: a file on app1, its path."""
    text = (fleet.root("app1") / APP_ENV.lstrip("/")).read_text()
    replaced = text.replace(f"@{floating(fleet)}:", f"@{fleet.address(host)}:")
    assert replaced != text
    path = f"/root/{host}.env"
    (fleet.root("app1") / path.lstrip("/")).write_text(replaced)
    return path


def test_db2_replicates_db1_by_gtid_over_verified_tls(fleet: Fleet) -> None:
    status = replica_status(fleet)
    expected = {
        "Master_Host": fleet.address("db1"),
        "Slave_IO_Running": "Yes",
        "Slave_SQL_Running": "Yes",
        "Using_Gtid": "Slave_Pos",
        "Master_SSL_Allowed": "Yes",
        "Master_SSL_Verify_Server_Cert": "Yes",
    }
    assert {name: status.get(name) for name in expected} == expected, status
    # The account exists for every db host (any may be the primary) and requires TLS: an
    # IO thread that runs is a TLS connection.
    for host in ("db1", "db2"):
        grants = sql(fleet, "db1", f"SHOW GRANTS FOR 'replication'@'{fleet.address(host)}'")
        assert "REPLICATION SLAVE" in grants and "REQUIRE SSL" in grants, grants
    assert sql(fleet, "db2", "SELECT @@read_only, @@gtid_strict_mode") == "1\t1"
    assert sql(fleet, "db1", "SELECT @@read_only, @@server_id") == "0\t1"
    assert sql(fleet, "db2", "SELECT @@server_id") == "2"
    assert semi_sync(fleet)["clients"] == "1"


def test_the_floating_address_is_on_db1_the_writable_host_only(fleet: Fleet) -> None:
    """The app reaches the database at db_floating_address, which keepalived keeps on the
    host whose server is writable: db1. db2 is read-only, so its check fails and it does
    not even stand by for the address."""
    assert f"@{floating(fleet)}:" in host_env(fleet, "app1")["DATABASE_URL"]
    assert holds(fleet, "db1") and not holds(fleet, "db2")
    check = "/usr/local/sbin/idle-proof-db-writable"
    assert fleet.run("db1", check, check=False).returncode == 0
    assert fleet.run("db2", check, check=False).returncode == 1


def test_every_note_db1_acknowledged_is_on_db2(
    fleet: Fleet, request: pytest.FixtureRequest
) -> None:
    """AFTER_SYNC: db1 answers a COMMIT once db2 has it in its relay log. Every 201 the
    load got is on db2, once, and db1 waited for db2 on every COMMIT of the load."""
    before = semi_sync(fleet)
    with Load(fleet.url, threads=4, rate=16) as load:
        time.sleep(15)
    after = semi_sync(fleet)
    acknowledged = [a.note for a in load.answers if a.note and a.status == 201]
    assert acknowledged, load.statuses
    assert caught_up(fleet, 30), replica_status(fleet)
    rows = notes_on(fleet, "db2")
    missing = [text for text in acknowledged if text not in rows]
    duplicated = sorted({text for text in acknowledged if rows.count(text) > 1})
    waited = int(after["yes_tx"]) - int(before["yes_tx"])
    unacknowledged = int(after["no_tx"]) - int(before["no_tx"])
    report(
        request,
        "replica",
        f"load through web1: {len(acknowledged)} notes acknowledged by db1, {len(missing)} "
        f"missing on db2, {len(duplicated)} duplicated; {waited} COMMITs acknowledged by "
        f"db2 first, {unacknowledged} without it",
    )
    assert missing == [] and duplicated == []
    assert unacknowledged == 0 and waited >= len(acknowledged), (before, after)


# Run on app1 with the app's venv: the app's user and TLS settings, against db2.
WRITE_ON_REPLICA = """
import json, os, sys
import pymysql
from sqlalchemy.engine import make_url
url = make_url(os.environ["DATABASE_URL"])
connection = pymysql.connect(
    host=sys.argv[1], port=url.port or 3306, user=url.username, password=url.password,
    database=url.database, ssl={"ca": os.environ["DB_TLS_CA"]}, connect_timeout=5,
)
with connection.cursor() as cursor:
    cursor.execute("SELECT COUNT(*) FROM notes")
    read = cursor.fetchone()[0]
    try:
        cursor.execute("INSERT INTO notes (text) VALUES ('written on the replica')")
        connection.commit()
        wrote = None
    except pymysql.err.OperationalError as e:
        wrote = e.args[0]
print(json.dumps({"read": read, "error": wrote}))
"""


def test_the_apps_user_reads_on_db2_and_cannot_write(fleet: Fleet) -> None:
    env = host_env(fleet, "app1")
    out = fleet.run(
        "app1",
        "env",
        f"DATABASE_URL={env['DATABASE_URL']}",
        f"DB_TLS_CA={env['DB_TLS_CA']}",
        f"{RELEASE}/venv/bin/python",
        "-c",
        WRITE_ON_REPLICA,
        fleet.address("db2"),
    ).stdout
    answer = json.loads(out)
    # 1290: the server runs with --read-only.
    assert answer["read"] > 0 and answer["error"] == 1290, answer
    assert "written on the replica" not in notes_on(fleet, "db2")


def test_doctor_passes_the_primary_and_fails_the_app_pointed_at_db2(fleet: Fleet) -> None:
    kit = f"{RELEASE}/venv/bin/idleproof"
    on_db1 = fleet.run("app1", kit, "doctor", f"--env-file={APP_ENV}", check=False)
    rows = [line for line in on_db1.stdout.splitlines() if "replication" in line]
    assert on_db1.returncode == 0 and rows and "PASS" in rows[0], on_db1.stdout
    assert "1 replica(s) acknowledge each COMMIT" in rows[0], rows
    # The same settings with db_address set to the replica by mistake.
    on_db2 = fleet.run(
        "app1", kit, "doctor", f"--env-file={env_pointed_at(fleet, 'db2')}", check=False
    )
    rows = [line for line in on_db2.stdout.splitlines() if "replication" in line]
    assert on_db2.returncode == 1 and rows and "FAIL" in rows[0], on_db2.stdout
    assert "read-only" in rows[0], rows


def commit_after_idle(fleet: Fleet, text: str) -> tuple[float, bool, dict[str, str]]:
    """Nothing written for twice the firewall's limit, then one note through web1: the
    seconds its 201 took, whether db2 has it within 5 s, and db1's semi-sync status before
    and after (as deltas of no_tx and yes_tx)."""
    assert caught_up(fleet, 30), replica_status(fleet)
    time.sleep(2 * NETWORK_IDLE_TIMEOUT)
    before = semi_sync(fleet)
    started = time.monotonic()
    made = requests.post(f"{fleet.url}/notes", json={"text": text}, timeout=60)
    took = time.monotonic() - started
    assert made.status_code == 201, made.text
    after = semi_sync(fleet)
    there = caught_up(fleet, 5) and text in notes_on(fleet, "db2")
    deltas = {k: str(int(after[k]) - int(before[k])) for k in ("no_tx", "yes_tx")}
    return took, there, deltas


def set_heartbeat(fleet: Fleet, seconds: int) -> None:
    sql(
        fleet,
        "db2",
        f"STOP SLAVE; CHANGE MASTER TO MASTER_HEARTBEAT_PERIOD = {seconds}; START SLAVE",
    )


def db2_catches_up_alone(fleet: Fleet, text: str, seconds: float) -> tuple[float | None, int]:
    """Wait for ``text`` on db2 without touching it: its IO thread reconnects by itself
    once it heard nothing for mysql_replication_net_timeout. The seconds it took (None:
    not within ``seconds``), and how many of db1's answers to SELECT 1 took over 10 s
    meanwhile: a dead connection still open on db1 when db2 reconnects stalls it."""
    started = time.monotonic()
    stalled = 0
    while time.monotonic() - started < seconds:
        probe = ("timeout", "10", "mariadb", "-N", "-e", "SELECT 1")
        stalled += fleet.run("db1", *probe, check=False).returncode != 0
        if text in notes_on(fleet, "db2"):
            return time.monotonic() - started, stalled
        time.sleep(2)
    return None, stalled


def heartbeat(fleet: Fleet) -> float:
    return float(sql(fleet, "db2", "SHOW GLOBAL STATUS LIKE 'Slave_heartbeat_period'").split()[1])


def test_idle_past_the_firewall_kit_heartbeat_keeps_db2_naive_loses_it(
    fleet: Fleet, request: pytest.FixtureRequest
) -> None:
    kit_heartbeat = heartbeat(fleet)
    assert 0 < kit_heartbeat < NETWORK_IDLE_TIMEOUT
    kit = commit_after_idle(fleet, "after idle, kit")
    # MariaDB's own default: half of slave_net_timeout (60 s).
    set_heartbeat(fleet, 30)
    try:
        naive = commit_after_idle(fleet, "after idle, naive")
        alone, stalled = db2_catches_up_alone(fleet, "after idle, naive", 150)
    finally:
        converge = fleet.playbook("--limit", "db2")
    report(
        request,
        "replica",
        f"idle {2 * NETWORK_IDLE_TIMEOUT} s past a firewall forgetting at "
        f"{NETWORK_IDLE_TIMEOUT} s: kit (heartbeat {kit_heartbeat:.0f} s): COMMIT "
        f"{kit[0]:.2f} s, on db2 {kit[1]}, {kit[2]}; naive (30 s): COMMIT {naive[0]:.2f} s, "
        f"on db2 {naive[1]}, {naive[2]}, on db2 after its own reconnect "
        f"{'never' if alone is None else f'{alone:.0f} s later'}, db1 stalled {stalled} times",
    )
    assert kit[1] and kit[2] == {"no_tx": "0", "yes_tx": "1"}, kit
    # The naive COMMIT waited out the semi-sync timeout for an acknowledgement that never came.
    assert not naive[1] and naive[2]["no_tx"] == "1", naive
    assert naive[0] >= SEMI_SYNC_TIMEOUT, naive
    # db2 reconnected by itself and caught up, and db1 answered throughout: its kernel had
    # dropped the forgotten connection first (mysql_replication_tcp_retries2).
    assert alone is not None and stalled == 0, (alone, stalled)
    # The converge gave db2 the kit's heartbeat again.
    assert converge.returncode == 0, converge.output[-6000:]
    assert heartbeat(fleet) == kit_heartbeat
    assert caught_up(fleet, 30)


def metrics(fleet: Fleet, host: str) -> dict[str, float]:
    fleet.run(host, "systemctl", "start", "idle-proof-replication-metrics.service", check=False)
    out = fleet.run(host, "cat", METRICS).stdout
    rows = (line.split() for line in out.splitlines() if line and not line.startswith("#"))
    return {name: float(value) for name, value in rows}


def test_the_metrics_show_replication_and_a_stopped_replica(fleet: Fleet) -> None:
    assert fleet.run("db2", "systemctl", "is-active", "idle-proof-replication-metrics.timer")
    assert caught_up(fleet, 30)
    assert metrics(fleet, "db2") == {
        "idleproof_replication_running": 1,
        "idleproof_replication_seconds_behind_primary": 0,
        "idleproof_db_writable": 0,
    }
    requests.post(f"{fleet.url}/notes", json={"text": "semi-sync on"}, timeout=30)
    primary = metrics(fleet, "db1")
    assert primary["idleproof_replication_semi_sync"] == 1, primary
    assert primary["idleproof_db_writable"] == 1, primary
    sql(fleet, "db2", "STOP SLAVE SQL_THREAD")
    try:
        stopped = metrics(fleet, "db2")
    finally:
        sql(fleet, "db2", "START SLAVE SQL_THREAD")
    # No lag while a thread is stopped: the server says NULL, and the metric is left out.
    assert stopped == {"idleproof_replication_running": 0, "idleproof_db_writable": 0}, stopped


def test_a_restore_of_db1_seeds_db2_from_the_restored_server(
    fleet: Fleet, request: pytest.FixtureRequest
) -> None:
    """restore.yml restarts db1's binary logs at the restored point: db2, which had gone on
    past it, would skip db1's next transactions without a word. It stops db2 first and
    seeds it from the restored db1 at the end: what db1 writes afterwards is on db2."""
    fleet.run("db1", "systemctl", "start", "idle-proof-backup.service")
    made = requests.post(f"{fleet.url}/notes", json={"text": "after the backup"}, timeout=30)
    assert made.status_code == 201, made.text
    restored = fleet.playbook("-e", "mysql_restore_latest=true", file="restore.yml", timeout=900)
    assert restored.returncode == 0, restored.output[-6000:]
    status = replica_status(fleet)
    assert status["Slave_IO_Running"] == status["Slave_SQL_Running"] == "Yes", status
    made = requests.post(f"{fleet.url}/notes", json={"text": "after the restore"}, timeout=30)
    assert made.status_code == 201, made.text
    assert caught_up(fleet, 30), replica_status(fleet)
    rows = notes_on(fleet, "db2")
    assert rows.count("after the backup") == 1 and rows.count("after the restore") == 1
    assert sorted(rows) == sorted(notes_on(fleet, "db1"))
    report(
        request,
        "replica",
        f"restore.yml on db1 (latest) with db2 seeded again: {restored.seconds:.0f} s",
    )


def test_runbook_seeds_db2_again(fleet: Fleet, request: pytest.FixtureRequest) -> None:
    """Section 13: db2 stops replicating and forgets db1's position (as restore.yml does),
    db1 writes on, and the section's commands seed db2 again from a fresh backup of db1;
    db2's data of before is kept aside."""
    blocks = runbook_blocks(13)
    assert [host for host, _ in blocks] == ["db2", "db1", "db2", "controller"], blocks
    for host, script in blocks[:2]:
        out = fleet.run(host, "bash", "-c", "set -eu\n" + script).stdout
        assert out.strip(), script
    fleet.run("db2", "bash", "-c", "set -eu\n" + blocks[2][1])
    assert replica_status(fleet) == {}
    made = requests.post(f"{fleet.url}/notes", json={"text": "while db2 was reset"}, timeout=30)
    assert made.status_code == 201, made.text
    assert "while db2 was reset" not in notes_on(fleet, "db2")
    kept = fleet.run("db2", "bash", "-c", "ls -d /var/lib/mysql.replaced-*").stdout.split()
    command = blocks[3][1].split()
    assert command[:2] == ["ansible-playbook", "-i"] and command[3:] == [
        "site.yml",
        "--limit",
        "db2",
    ], command
    run = fleet.playbook("--limit", "db2")
    assert run.returncode == 0, run.output[-6000:]
    status = replica_status(fleet)
    assert status["Slave_IO_Running"] == status["Slave_SQL_Running"] == "Yes", status
    assert caught_up(fleet, 30) and "while db2 was reset" in notes_on(fleet, "db2")
    now = fleet.run("db2", "bash", "-c", "ls -d /var/lib/mysql.replaced-*").stdout.split()
    assert set(kept) < set(now), (kept, now)
    report(request, "replica", f"db2 seeded again by the runbook: converge {run.seconds:.0f} s")


def doctor_row(fleet: Fleet, env_file: str) -> tuple[int, str]:
    """``idleproof doctor`` on app1 with these settings: its exit code, its replication row."""
    kit = f"{RELEASE}/venv/bin/idleproof"
    done = fleet.run("app1", kit, "doctor", f"--env-file={env_file}", check=False)
    rows = [line for line in done.stdout.splitlines() if "replication" in line]
    return done.returncode, rows[0] if rows else done.stdout[-300:]


def test_db1_powered_off_under_load_the_runbook_promotes_db2(
    fleet: Fleet, request: pytest.FixtureRequest
) -> None:
    """Section 14: db1 loses its power under load; the runbook's check on db2 and its one
    command (failover.yml) promote db2, and keepalived moves the floating address there.
    The app hosts follow with no restart: the requests caught by the cut are answered 503,
    every note acknowledged (201) before or after is on db2, once. An app given db1's own
    address (naive) still fails; a converge whose inventory still names db1 as the primary
    is refused rather than making db2 a replica."""
    blocks = runbook_blocks(14)
    assert [host for host, _ in blocks] == ["db2", "controller"], blocks
    command = re.fullmatch(
        r"ansible-playbook -i \S+ (failover\.yml) -e (db_primary)=(db2)\n", blocks[1][1]
    )
    assert command, blocks[1][1]
    bound = dead_host_bound(Settings.from_env(host_env(fleet, "app1")))
    pid = service_pid(fleet, "app1")
    with Load(fleet.url, threads=4, rate=16) as load:
        time.sleep(5)
        cut = time.monotonic()
        fleet.power_off("db1")
        seen = fleet.run("db2", "bash", "-c", "set -eu\n" + blocks[0][1]).stdout
        run = fleet.playbook(
            "-e", json.dumps({command.group(2): command.group(3)}), file=command.group(1)
        )
        promoted = time.monotonic()
        for _ in range(120):
            if any(a.status == 201 and a.started > promoted for a in load.answers):
                break
            time.sleep(0.5)
        back = time.monotonic()
        time.sleep(5)
    assert run.returncode == 0, run.output[-6000:]
    assert "Slave_SQL_Running" in seen, seen
    answers = sorted(load.answers, key=lambda a: a.started)
    failed = [a for a in answers if not a.ok]
    acknowledged = [a.note for a in answers if a.note and a.status == 201]
    rows = notes_on(fleet, "db2")
    missing = [text for text in acknowledged if text not in rows]
    duplicated = sorted({text for text in acknowledged if rows.count(text) > 1})
    # Writes acknowledged again, in seconds after the cut: the first 201 to a request sent
    # after the first failure.
    first_failure = min((a.started for a in failed), default=cut)
    writes = min(
        a.started + a.seconds - cut
        for a in answers
        if a.status == 201 and a.started > first_failure
    )
    outage = (
        max(a.started + a.seconds for a in failed) - min(a.started for a in failed)
        if failed
        else 0.0
    )
    statuses = dict(Counter(a.status for a in failed))
    naive_doctor = doctor_row(fleet, env_pointed_at(fleet, "db1"))
    kit_doctor = doctor_row(fleet, APP_ENV)
    report(
        request,
        "replica",
        f"db1 powered off under load, failover.yml promoted db2 in {run.seconds:.0f} s: "
        f"{len(failed)} requests failed over {outage:.0f} s ({statuses}), writes "
        f"acknowledged again {writes:.0f} s after the cut; {len(acknowledged)} notes "
        f"acknowledged, {len(missing)} missing on db2, "
        f"{len(duplicated)} duplicated; doctor on app1: kit {kit_doctor[0]}, naive (db1's "
        f"own address) {naive_doctor[0]}",
    )
    assert failed, "no request met the cut: it did not happen under load"
    assert all(a.status == 503 and a.error for a in failed), [(a.status, a.error) for a in failed]
    assert max(a.seconds for a in failed) <= bound, sorted(a.seconds for a in failed)[-5:]
    after = [a for a in answers if a.started > back]
    assert len(after) >= 5 and all(a.ok for a in after), [a.status for a in after]
    assert missing == [] and duplicated == []
    assert holds(fleet, "db2") and sql(fleet, "db2", "SELECT @@read_only") == "0"
    assert replica_status(fleet) == {}
    # db2's metrics are the primary's now: no replication to report stopped.
    promoted_metrics = metrics(fleet, "db2")
    assert "idleproof_replication_running" not in promoted_metrics, promoted_metrics
    assert promoted_metrics["idleproof_db_writable"] == 1, promoted_metrics
    # The app hosts followed the address: the same Gunicorn serves, and doctor passes.
    assert service_pid(fleet, "app1") == pid
    # A primary with no replica yet: a warning, not a failure.
    assert kit_doctor[0] == 0 and "no replica connected" in kit_doctor[1], kit_doctor
    assert naive_doctor[0] == 1 and "FAIL" in naive_doctor[1], naive_doctor
    # The inventory still says db_primary: db1: the converge leaves db2 the primary.
    stale = fleet.playbook("--limit", "db2")
    assert stale.returncode != 0
    assert f"db2 holds db_floating_address={floating(fleet)}" in stale.output, stale.output[-3000:]
    assert holds(fleet, "db2") and sql(fleet, "db2", "SELECT @@read_only") == "0"


def test_the_runbook_rejoins_db1_as_a_replica_of_db2(
    fleet: Fleet, request: pytest.FixtureRequest
) -> None:
    """Section 15: db1 boots from its own disk, writable (it was the primary) but without
    the floating address, which db2 keeps (nopreempt). With db_primary: db2 in the
    inventory, the section's converge makes db1 a replica of db2, seeded from a fresh
    backup of db2, its own data kept aside."""
    blocks = runbook_blocks(15)
    assert [host for host, _ in blocks] == ["controller", "db2"], blocks
    converge = re.fullmatch(r"ansible-playbook -i \S+ site\.yml --limit (db1)\n", blocks[0][1])
    assert converge, blocks[0][1]
    boot = fleet.power_on("db1")
    for _ in range(120):
        if fleet.run("db1", "mariadb", "-e", "SELECT 1", check=False).returncode == 0:
            break
        time.sleep(0.5)
    # Three advertisements missed would be enough for keepalived to take the address.
    time.sleep(5)
    assert sql(fleet, "db1", "SELECT @@read_only") == "0"
    assert holds(fleet, "db2") and not holds(fleet, "db1")
    # Two primaries, as IdleproofTwoWritableDatabases sees them.
    writable = {h: metrics(fleet, h)["idleproof_db_writable"] for h in ("db1", "db2")}
    assert writable == {"db1": 1, "db2": 1}, writable
    fleet.inventory_vars["db_primary"] = "db2"
    fleet.write_inventory()
    run = fleet.playbook("--limit", converge.group(1))
    assert run.returncode == 0, run.output[-6000:]
    status = replica_status(fleet, "db1")
    expected = {
        "Master_Host": fleet.address("db2"),
        "Slave_IO_Running": "Yes",
        "Slave_SQL_Running": "Yes",
        "Master_SSL_Verify_Server_Cert": "Yes",
    }
    assert {name: status.get(name) for name in expected} == expected, status
    clients = fleet.run("db2", "bash", "-c", "set -eu\n" + blocks[1][1]).stdout
    assert re.search(r"Rpl_semi_sync_master_clients\s+1", clients), clients
    made = requests.post(f"{fleet.url}/notes", json={"text": "after the rejoin"}, timeout=30)
    assert made.status_code == 201, made.text
    assert caught_up(fleet, 30, primary="db2", replica="db1")
    assert sorted(notes_on(fleet, "db1")) == sorted(notes_on(fleet, "db2"))
    assert "after the rejoin" in notes_on(fleet, "db1")
    assert sql(fleet, "db1", "SELECT @@read_only") == "1"
    assert holds(fleet, "db2") and not holds(fleet, "db1")
    assert metrics(fleet, "db1")["idleproof_db_writable"] == 0
    kept = fleet.run("db1", "bash", "-c", "ls -d /var/lib/mysql.replaced-*").stdout.split()
    assert kept
    report(
        request,
        "replica",
        f"db1 back in {boot:.0f} s, writable without the address; rejoined as db2's replica "
        f"by the runbook's converge in {run.seconds:.0f} s, its old data kept ({len(kept)})",
    )


def test_a_switch_back_to_db1_with_both_up_loses_no_acknowledged_note(
    fleet: Fleet, request: pytest.FixtureRequest
) -> None:
    """Section 15's last paragraph: section 14's command with -e db_primary=db1 while both
    hosts run fences db2 (read-only: its writes are answered 503 until db1 takes the
    address), promotes db1, and db2 rejoins as db1's replica with the same converge. The
    fleet ends as it began."""
    with Load(fleet.url, threads=4, rate=16) as load:
        time.sleep(3)
        switched = fleet.playbook("-e", "db_primary=db1", file="failover.yml")
        time.sleep(5)
    assert switched.returncode == 0, switched.output[-6000:]
    assert holds(fleet, "db1") and not holds(fleet, "db2")
    assert sql(fleet, "db2", "SELECT @@read_only") == "1"
    answers = sorted(load.answers, key=lambda a: a.started)
    failed = [a for a in answers if not a.ok]
    assert all(a.status == 503 and a.error for a in failed), [(a.status, a.error) for a in failed]
    acknowledged = [a.note for a in answers if a.note and a.status == 201]
    rows = notes_on(fleet, "db1")
    missing = [text for text in acknowledged if text not in rows]
    duplicated = sorted({text for text in acknowledged if rows.count(text) > 1})
    assert missing == [] and duplicated == []
    fleet.inventory_vars["db_primary"] = "db1"
    fleet.write_inventory()
    rejoined = fleet.playbook("--limit", "db2")
    assert rejoined.returncode == 0, rejoined.output[-6000:]
    assert replica_status(fleet)["Master_Host"] == fleet.address("db1")
    made = requests.post(f"{fleet.url}/notes", json={"text": "db1 again"}, timeout=30)
    assert made.status_code == 201, made.text
    assert caught_up(fleet, 30) and "db1 again" in notes_on(fleet, "db2")
    assert sorted(notes_on(fleet, "db2")) == sorted(notes_on(fleet, "db1"))
    assert semi_sync(fleet)["clients"] == "1"
    report(
        request,
        "replica",
        f"switch back to db1 with both up under load: failover.yml {switched.seconds:.0f} s, "
        f"{len(failed)} requests answered 503, {len(acknowledged)} notes acknowledged, "
        f"{len(missing)} missing on db1, {len(duplicated)} duplicated; db2 rejoined in "
        f"{rejoined.seconds:.0f} s",
    )
