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
* deploy/RUNBOOK.md section 13, every command on its host: a replica seeded again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import requests

from harness.fleet import Fleet
from harness.incident import APP_ENV, RELEASE, host_env
from harness.mariadb import MYSQL_ROLE_DEFAULTS
from harness.traffic import Load
from tests.helpers import forgetting_fleet, report, role_default, runbook_blocks

pytestmark = [pytest.mark.slow, pytest.mark.ansible, pytest.mark.fleet]

NETWORK_IDLE_TIMEOUT = 10
# The fleet's mysql_semi_sync_timeout: the role's default.
SEMI_SYNC_TIMEOUT = role_default(MYSQL_ROLE_DEFAULTS, "mysql_semi_sync_timeout")
METRICS = "/var/lib/prometheus/node-exporter/idle_proof_replication.prom"


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


def caught_up(fleet: Fleet, seconds: float) -> bool:
    """Whether db2 applied everything db1 has logged, within ``seconds``."""
    position = sql(fleet, "db1", "SELECT @@gtid_binlog_pos")
    waited = sql(fleet, "db2", f"SELECT MASTER_GTID_WAIT('{position}', {seconds})")
    return waited == "0"


def notes_on(fleet: Fleet, host: str) -> list[str]:
    return sql(fleet, host, "SELECT text FROM app.notes").split("\n")


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
    text = (fleet.root("app1") / APP_ENV.lstrip("/")).read_text()
    wrong = "/root/db2.env"
    replaced = text.replace(f"@{fleet.address('db1')}:", f"@{fleet.address('db2')}:")
    assert replaced != text
    (fleet.root("app1") / wrong.lstrip("/")).write_text(replaced)
    on_db2 = fleet.run("app1", kit, "doctor", f"--env-file={wrong}", check=False)
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
    }
    requests.post(f"{fleet.url}/notes", json={"text": "semi-sync on"}, timeout=30)
    primary = metrics(fleet, "db1")
    assert primary["idleproof_replication_semi_sync"] == 1, primary
    sql(fleet, "db2", "STOP SLAVE SQL_THREAD")
    try:
        stopped = metrics(fleet, "db2")
    finally:
        sql(fleet, "db2", "START SLAVE SQL_THREAD")
    # No lag while a thread is stopped: the server says NULL, and the metric is left out.
    assert stopped == {"idleproof_replication_running": 0}, stopped


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
