"""The incident across a real network, on a converged fleet (db1, app1, app2, web1).

A stateful firewall on db1 (harness/conntrack.py) forgets idle flows to MariaDB after the
inventory's ``network_idle_timeout`` and drops their later packets silently, as cloud NAT
gateways and firewalls do. The one inventory variable sets both the firewall's limit (here)
and the app's (the app role's idle limit, so its pool recycles below it).

* idle past the limit: through web1 the kit answers 2xx; the naive app beside it on app1,
  through the same firewall, hangs; a migration's idle connection survives with the
  migration plugin and is lost without it;
* ``idleproof probe-idle`` on app1 finds a silent drop at the limit; ``idleproof doctor`` on
  app1 FAILs a pool recycle above it;
* deploy/RUNBOOK.md section 8 ("find which hop"), every command, on its host;
* a slowloris from 8 addresses against web1, with half as many sockets again as nginx
  has slots: with the firewall's per-address bound every real client is answered; without
  it (the same fleet, the bound set to 0) nginx fills and most are not;
* db1's backups and binary logs copied to web1 (the fleet's backup host), byte for byte,
  where db1's key can add files but not delete them; web1 prunes old copies itself;
* db1 powered off hard under load (no FIN/RST, no shutdown): 503 JSON within the bound the
  core promises, /healthz answers throughout, every request 2xx once db1 is back from its
  own disk, nothing restarted; the naive app hangs meanwhile;
* db1's disk lost after a table was dropped under load: a new db1 in its place, restored
  from web1's copy to just before the DROP with deploy/RUNBOOK.md section 12, every
  command on its host: every note acknowledged before the DROP is there once, none after.

One fleet for the module, removed even when a test fails. The host-death tests run last:
they power db1 off, then replace it.
"""

from __future__ import annotations

import contextlib
import json
import re
import ssl
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from harness import ROOT, conntrack
from harness.fleet import Fleet
from harness.incident import (
    APP_ENV,
    RELEASE,
    dead_host_bound,
    host_death,
    host_env,
    host_get,
    load,
    start_naive,
    stop_naive,
)
from harness.slowloris import Slowloris, late_clients, open_files
from harness.traffic import Load
from idleproof.settings import Settings
from tests.helpers import (
    DROP_NOTES,
    forgetting_fleet,
    notes_around,
    reaches,
    report,
    role_default,
    runbook_blocks,
    service_pid,
)

pytestmark = [pytest.mark.slow, pytest.mark.ansible, pytest.mark.fleet]

# The network's idle limit, declared once in the inventory: short, so idling past it is fast.
NETWORK_IDLE_TIMEOUT = 10
KIT = f"{RELEASE}/venv/bin/idleproof"
# Production durations in the runbook -> this test's (a limit of seconds, not minutes).
RUNBOOK_SUBSTITUTIONS = {"--max-seconds 900": f"--max-seconds {NETWORK_IDLE_TIMEOUT + 6}"}


@pytest.fixture(scope="module")
def fleet(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Fleet]:
    started = time.monotonic()
    with forgetting_fleet(tmp_path_factory, "ipki", NETWORK_IDLE_TIMEOUT) as fleet:
        # ssh narrowed to this machine, the fleet's controller (production narrows it to a
        # bastion): the backup host must still let the db hosts' copies in.
        fleet.inventory_vars["firewall_ssh_sources"] = [fleet.controller]
        fleet.write_inventory()
        converge = fleet.playbook()
        assert converge.returncode == 0, converge.output[-6000:]
        report(
            request,
            "incident",
            f"fleet booted, firewall on db1, converged: {time.monotonic() - started:.0f} s "
            f"(converge {converge.seconds:.0f} s)",
        )
        yield fleet


def declared_limit(fleet: Fleet) -> int:
    """The inventory's network_idle_timeout: what the firewall forgets idle flows after."""
    return int(fleet.inventory_vars["network_idle_timeout"])


@pytest.fixture(scope="module")
def naive(fleet: Fleet) -> Iterator[str]:
    """The naive app on app1's loopback (its URL there), through the same firewall."""
    url = start_naive(fleet, "app1")
    yield url
    stop_naive(fleet, "app1")


def test_the_declared_limit_reaches_the_app(fleet: Fleet) -> None:
    env = host_env(fleet, "app1")
    limit = declared_limit(fleet)
    settings = Settings.from_env(env)
    assert settings.network_idle_timeout == limit, env
    assert settings.pool_recycle < limit, env


def test_idle_past_the_network_limit_kit_2xx_naive_hangs(
    fleet: Fleet, naive: str, request: pytest.FixtureRequest
) -> None:
    limit = declared_limit(fleet)
    # Every worker of both app hosts holds pooled connections, as after a day's traffic.
    with load(fleet.url, threads=4) as warm:
        time.sleep(3)
    assert all(a.ok for a in warm.answers), [a.status for a in warm.answers if not a.ok]
    for _ in range(4):
        assert host_get(fleet, "app1", f"{naive}/", 10)[0] == 200
    dropped_before = conntrack.dropped(fleet, "db1")

    time.sleep(limit + 4)  # the quiet night

    with load(fleet.url) as kit:
        time.sleep(4)
    naive_answers = [host_get(fleet, "app1", f"{naive}/", 12) for _ in range(2)]
    dropped = conntrack.dropped(fleet, "db1") - dropped_before
    kit_failed = [a.status for a in kit.answers if not a.ok]
    slowest = max(a.seconds for a in kit.answers)
    report(
        request,
        "incident",
        f"idle {limit + 4} s past a {limit} s firewall limit: kit through web1 "
        f"{len(kit.answers)} requests, {len(kit_failed)} non-2xx, slowest {slowest:.2f} s | "
        f"naive on app1 {[(s, round(t, 1)) for s, t in naive_answers]} | "
        f"firewall dropped {dropped} packets of forgotten flows",
    )
    assert len(kit.answers) >= 10 and kit_failed == [], kit_failed
    assert any(s != 200 for s, _ in naive_answers), f"the naive app survived: {naive_answers}"
    assert dropped > 0, "the firewall dropped nothing: the naive app failed for another reason"


# One connection per engine, idle past the firewall's limit, then a statement: what a
# migration tool does while it loads its next step. The same application arguments for both
# (its own 8 s read timeout, so the plain one fails instead of waiting out TCP).
_IDLE_MIGRATION = """\
import json, os, sys, threading, time
import sqlalchemy
from idleproof.connection import tls_args
idle = float(sys.argv[1])
url = os.environ["DATABASE_URL"]
args = {"read_timeout": 8, **tls_args(os.environ.get("DB_TLS_CA", ""))}
outcome = {}
def run(name, url):
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.NullPool, connect_args=args)
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")
        time.sleep(idle)
        try:
            conn.exec_driver_sql("SELECT 1")
            outcome[name] = "ok"
        except sqlalchemy.exc.OperationalError as exc:
            outcome[name] = str(exc.orig)
threads = [threading.Thread(target=run, args=item) for item in
           (("plain", url), ("migration plugin", url + "?plugin=idleproof_migration"))]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps(outcome))
"""


def test_a_migrations_idle_connection_survives_the_firewall_with_the_migration_plugin(
    fleet: Fleet, request: pytest.FixtureRequest
) -> None:
    """The migration plugin's keepalives keep the flow in the firewall's table while the
    connection waits; the same connection without them is forgotten and its next statement
    lost."""
    limit = declared_limit(fleet)
    dropped_before = conntrack.dropped(fleet, "db1")
    ran = fleet.run(
        "app1", "systemd-run", "--pipe", "--wait", "--collect", "--quiet",
        f"--property=EnvironmentFile={APP_ENV}", f"{RELEASE}/venv/bin/python", "-c",
        _IDLE_MIGRATION, str(limit + 4), check=False,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stdout + ran.stderr
    outcome = json.loads(ran.stdout.strip().splitlines()[-1])
    dropped = conntrack.dropped(fleet, "db1") - dropped_before
    report(
        request,
        "incident",
        f"a migration's connection idle {limit + 4} s past a {limit} s firewall limit: "
        f"{outcome} | firewall dropped {dropped} packets",
    )
    assert outcome["migration plugin"] == "ok", outcome
    assert "2013" in outcome["plain"], outcome
    assert dropped > 0, "the firewall dropped nothing: the plain connection failed otherwise"


def probe(fleet: Fleet, host: str, max_seconds: int) -> dict[str, object]:
    args = ("--env-file", APP_ENV, "--max-seconds", str(max_seconds), "--json")
    result = fleet.run(host, KIT, "probe-idle", *args, check=False)
    try:
        return dict(json.loads(result.stdout))
    except ValueError:
        found = f"{result.stdout}{result.stderr}"
        raise AssertionError(f"idleproof probe-idle on {host}: {found}") from None


def test_probe_idle_on_app1_finds_the_silent_drop(
    fleet: Fleet, request: pytest.FixtureRequest
) -> None:
    limit = declared_limit(fleet)
    found = probe(fleet, "app1", limit + 6)
    report(
        request,
        "incident",
        f"idleproof probe-idle on app1: survived {found['survived']} s, killed at "
        f"{found['killed']} s by {found['cause']} (firewall limit {limit} s), "
        f"in {found['elapsed']} s",
    )
    assert found["cause"] == "silent_drop", found
    assert isinstance(found["survived"], float | int) and isinstance(found["killed"], float | int)
    assert limit - 1 <= found["survived"] < found["killed"] <= limit + 1, found


def doctor(fleet: Fleet, host: str, env_file: str) -> subprocess.CompletedProcess[str]:
    return fleet.run(host, KIT, "doctor", f"--env-file={env_file}", check=False)


def test_doctor_on_app1_fails_a_recycle_above_the_limit(fleet: Fleet) -> None:
    limit = declared_limit(fleet)
    deployed = doctor(fleet, "app1", APP_ENV)
    assert deployed.returncode == 0 and "0 FAIL" in deployed.stdout, deployed.stdout
    # The same host and settings, with the pool recycling after the firewall forgot.
    wrong = "/root/recycle-above-limit.env"
    text = (fleet.root("app1") / APP_ENV.lstrip("/")).read_text()
    text = re.sub(r"(?m)^DB_POOL_RECYCLE=.*\n", "", text)
    (fleet.root("app1") / wrong.lstrip("/")).write_text(f"{text}DB_POOL_RECYCLE={limit + 5}\n")
    found = doctor(fleet, "app1", wrong)
    assert found.returncode == 1, found.stdout + found.stderr
    fails = [
        line for line in found.stdout.splitlines() if "FAIL" in line and "DB_POOL_RECYCLE" in line
    ]
    assert fails and f"DB_POOL_RECYCLE={limit + 5}" in fails[0], found.stdout


def hop_blocks() -> list[tuple[str, str]]:
    """Section 8 of deploy/RUNBOOK.md (find which hop): its ```sh on=HOST blocks as (host,
    script), continuation lines joined."""
    return [(host, re.sub(r"\\\n\s*", "", block)) for host, block in runbook_blocks(8)]


def test_runbook_finds_the_hop(fleet: Fleet, request: pytest.FixtureRequest) -> None:
    blocks = hop_blocks()
    assert {host for host, _ in blocks} == {"app1", "db1"}, blocks
    for old in RUNBOOK_SUBSTITUTIONS:
        assert any(old in script for _, script in blocks), f"the runbook no longer says {old!r}"
    # Traffic, so the firewall holds flows of the app's connections to list.
    assert requests.get(f"{fleet.url}/", timeout=10).status_code == 200
    out = ""
    started = time.monotonic()
    for host, script in blocks:
        for old, new in RUNBOOK_SUBSTITUTIONS.items():
            script = script.replace(old, new)
        result = fleet.run(host, "bash", "-c", f"set -eu\n{script}", check=False)
        assert result.returncode == 0, f"on {host}:\n{script}\n{result.stdout}{result.stderr}"
        out += result.stdout
    report(
        request,
        "incident",
        f"runbook section 8 on app1 and db1: {time.monotonic() - started:.0f} s",
    )
    limit = declared_limit(fleet)
    assert "killed by: silent_drop" in out, out  # 8.1
    assert re.search(rf"suggestion: DB_NETWORK_IDLE_TIMEOUT=({limit - 1}|{limit})\b", out), out
    assert re.search(r"wait_timeout\s+60\b", out), out  # 8.2: the server keeps them longer
    assert re.search(rf"established : {limit}\b", out) and "ct state invalid" in out, out  # 8.3
    assert re.search(r"^\d+\s*$", out, re.M), out  # the sysctls
    assert "dport=3306" in out, out  # conntrack -L: the app's flows
    assert "counter forgotten" in out, out
    assert f"DB_NETWORK_IDLE_TIMEOUT={limit}" in out and "0 FAIL" in out, out  # 8.4


# A slowloris from several addresses: each holds sockets that never finish their headers.
ATTACKERS = 8
LATE_CLIENTS = 14
FIREWALL_DEFAULTS = ROOT / "ansible" / "roles" / "firewall" / "defaults" / "main.yml"
NGINX_DEFAULTS = ROOT / "ansible" / "roles" / "nginx" / "defaults" / "main.yml"


@contextlib.contextmanager
def addresses_on_the_bridge(fleet: Fleet, count: int) -> Iterator[list[str]]:
    """``count`` more addresses of this machine on the fleet's bridge (.200 up): the
    attacking clients'; removed afterwards."""
    added = [f"{fleet.network}.{200 + i}" for i in range(count)]
    try:
        for address in added:
            subprocess.run(["ip", "addr", "add", f"{address}/32", "dev", fleet.bridge], check=True)
        yield added
    finally:
        for address in added:
            subprocess.run(["ip", "addr", "del", f"{address}/32", "dev", fleet.bridge], check=False)


@dataclass
class Siege:
    late: Counter[str]  # the real clients' outcomes
    held: int  # connections established to web1's port 80 during the attack
    not_enough: int  # nginx's "worker_connections are not enough" lines meanwhile
    opened: int
    refused: int

    @property
    def answered(self) -> int:
        return self.late["200"]

    @property
    def closed_unanswered(self) -> int:
        """Real clients whose connection was closed before any answer came."""
        return sum(n for outcome, n in self.late.items() if outcome.startswith(("send:", "closed")))

    def summary(self) -> str:
        return (
            f"real clients {self.answered}/{sum(self.late.values())} answered {dict(self.late)}; "
            f"web1 held {self.held} connections; attackers opened {self.opened}, "
            f"{self.refused} refused; 'worker_connections are not enough' {self.not_enough} times"
        )


def not_enough(fleet: Fleet) -> int:
    grep = ("grep", "-c", "worker_connections are not enough", "/var/log/nginx/error.log")
    return int(fleet.run("web1", *grep, check=False).stdout.strip() or 0)


def siege(fleet: Fleet, sockets: int) -> Siege:
    """ATTACKERS addresses, ``sockets`` slowloris sockets each, against web1's plain HTTP
    port (the same nginx, the same slots as HTTPS); meanwhile LATE_CLIENTS real clients
    from this machine's own bridge address, one every 0.5 s, each starting its TLS
    handshake and request on 443 2 s after it connected."""
    web1 = fleet.address("web1")
    logged = not_enough(fleet)
    with (
        open_files(ATTACKERS * sockets + 1000),
        addresses_on_the_bridge(fleet, ATTACKERS) as sources,
        contextlib.ExitStack() as stack,
    ):
        # Sockets refused or closed are opened again each second: more often would only
        # spin this machine, which also plays the fleet.
        attacks = [
            stack.enter_context(Slowloris(web1, 80, s, sockets, top_up_every=1.0)) for s in sources
        ]
        time.sleep(5)  # every socket connected, refused or waiting
        established = ("ss", "-Htn", "state", "established", "( sport = :80 )")
        held = len(fleet.run("web1", *established).stdout.splitlines())
        tls = ssl.create_default_context(cafile=str(fleet.ca))
        late = late_clients(web1, 443, LATE_CLIENTS, every=0.5, tls=tls)
    return Siege(
        late,
        held,
        not_enough(fleet) - logged,
        sum(a.opened for a in attacks),
        sum(a.connect_failures for a in attacks),
    )


def test_a_slowloris_from_many_addresses_leaves_real_clients_answered(
    fleet: Fleet, request: pytest.FixtureRequest
) -> None:
    """The firewall's per-address bound against the same attack without it: 8 addresses,
    each with more sockets than nginx has slots for all of them together."""
    per_address = role_default(FIREWALL_DEFAULTS, "firewall_web_connections_per_address")
    workers = int(fleet.run("web1", "nproc").stdout)  # worker_processes auto
    slots = workers * role_default(NGINX_DEFAULTS, "nginx_worker_connections")
    sockets = max(2000, slots * 3 // (2 * ATTACKERS))  # 1.5 times the slots in all

    kit = siege(fleet, sockets)
    report(request, "incident", f"slowloris {ATTACKERS} x {sockets}, kit: {kit.summary()}")
    unbounded = {"firewall_web_connections_per_address": 0}
    try:
        run = fleet.playbook("--tags", "firewall", "--limit", "web1", "-e", json.dumps(unbounded))
        assert run.returncode == 0, run.output[-4000:]
        naive = siege(fleet, sockets)
        report(
            request,
            "incident",
            f"slowloris {ATTACKERS} x {sockets}, no per-address bound: {naive.summary()}; "
            f"nginx has {slots} slots",
        )
    finally:
        restored = fleet.playbook("--tags", "firewall", "--limit", "web1")
        assert restored.returncode == 0, restored.output[-4000:]

    # Without the bound the attack fills nginx and most real clients get no answer. Full,
    # nginx refuses a new connection (the alert counted in not_enough) or, while some of its
    # connections have sent nothing yet, closes those to make room, with a warning that
    # Debian's error_log level leaves out: the real clients, silent for their first 2 s,
    # are such connections, and most of them are closed unanswered.
    assert naive.not_enough > 0 or naive.closed_unanswered > LATE_CLIENTS / 2, naive.summary()
    assert naive.answered < LATE_CLIENTS / 2, naive.summary()
    # With it every real client is answered; each address holds its bound at most.
    assert kit.answered == LATE_CLIENTS, kit.summary()
    assert kit.held <= ATTACKERS * per_address + LATE_CLIENTS, kit.summary()
    assert kit.not_enough == 0 and kit.refused > 0, kit.summary()


# db1's copy of its backups and binary logs on web1 (the fleet's backup host), and what
# db1's key may do there.
STORE = "/var/backups/idle-proof/db1"
TEXTFILES = "/var/lib/prometheus/node-exporter"
# db1's own way there: the ssh command idle-proof-backup-copy uses ($COPY_RSH).
COPY_SETTINGS = "/etc/default/idle-proof-backup-copy"


def sha256s(fleet: Fleet, host: str, directory: str, pattern: str) -> dict[str, str]:
    """{name: sha256} of the files in directory that match a shell pattern."""
    script = f'cd {directory} && for f in {pattern}; do [ -f "$f" ] && sha256sum "$f"; done'
    out = fleet.run(host, "bash", "-c", f"{script}; true").stdout
    return {name: digest for digest, name in (line.split() for line in out.splitlines())}


def test_db1s_backups_and_binary_logs_reach_web1_which_db1_cannot_delete(
    fleet: Fleet, request: pytest.FixtureRequest
) -> None:
    started = time.monotonic()
    post = f"{fleet.url}/notes"
    for i in range(5):
        assert requests.post(post, json={"text": f"before {i}"}, timeout=10).status_code == 201
    fleet.run("db1", "systemctl", "start", "idle-proof-backup.service")
    # Written after the backup: only the binary logs hold them.
    for i in range(5):
        assert requests.post(post, json={"text": f"after {i}"}, timeout=10).status_code == 201
    fleet.run("db1", "mariadb", "-e", "FLUSH BINARY LOGS")
    fleet.run("db1", "systemctl", "start", "idle-proof-backup-copy.service")
    seconds = time.monotonic() - started

    backups = sha256s(fleet, "db1", "/var/backups/mariadb", "full-*")
    taken = [name for name in backups if name.endswith(".xb.zst")]
    copied = sha256s(fleet, "web1", f"{STORE}/full", "full-*")
    assert backups and backups.items() <= copied.items(), (backups, copied)
    fleet.run("web1", "bash", "-c", f"cd {STORE}/full && sha256sum --quiet -c *.sha256")
    # Every binary log the server has closed is on web1, the same bytes.
    index = fleet.run("db1", "cat", "/var/lib/mysql/mariadb-bin.index").stdout.split()
    closed = " ".join(Path(name).name for name in index[:-1])
    timeline = fleet.run("db1", "cat", "/var/lib/idle-proof-backup-copy/timeline").stdout.strip()
    logs = sha256s(fleet, "db1", "/var/lib/mysql", closed)
    copied_logs = sha256s(fleet, "web1", f"{STORE}/binlog/{timeline}", closed)
    assert logs and copied_logs == logs, (logs, copied_logs)
    metric = fleet.run("db1", "cat", f"{TEXTFILES}/idle_proof_backup_copy.prom").stdout
    last = re.search(r"^idleproof_backup_copy_last_success_timestamp_seconds (\S+)$", metric, re.M)
    assert last and time.time() - float(last.group(1)) < 120, metric

    # db1's key runs rrsync -no-del in db1's directory: a broken or stolen db1 can neither
    # delete its copies nor reach beyond them.
    target = f"idle-proof-backup@{fleet.address('web1')}"
    attempts = {
        "a shell": f"$COPY_RSH {target} rm -rf full binlog",
        "rsync --delete": (
            f'mkdir -p /tmp/empty && rsync -r --delete -e "$COPY_RSH" /tmp/empty/ {target}:full/'
        ),
        "a path outside": f'rsync -e "$COPY_RSH" /etc/hostname {target}:../',
    }
    refused = {}
    for what, command in attempts.items():
        run = fleet.run("db1", "bash", "-c", f". {COPY_SETTINGS} && {command}", check=False)
        refused[what] = (run.returncode, (run.stderr.strip().splitlines() or [""])[0])
    report(
        request,
        "incident",
        f"backup copied to web1: {len(taken)} backup(s), {len(logs)} closed binary log(s) "
        f"of timeline {timeline}, in {seconds:.1f} s with the backup; db1's key refused: "
        + "; ".join(f"{what}: {line}" for what, (_, line) in refused.items()),
    )
    assert all(code != 0 for code, _ in refused.values()), refused
    assert sha256s(fleet, "web1", f"{STORE}/full", "full-*") == copied
    assert sha256s(fleet, "web1", f"{STORE}/binlog/{timeline}", closed) == logs


def test_web1_lets_db1_in_over_ssh_and_app1_not(fleet: Fleet) -> None:
    """ssh on web1 is narrowed to this machine (firewall_ssh_sources); as the backup host,
    web1 admits the db hosts too (firewall_backup_clients), and no other host."""
    assert reaches(fleet, "db1", "web1", 22)
    assert not reaches(fleet, "app1", "web1", 22)
    rules = fleet.run("web1", "nft", "list", "table", "inet", "idle_proof").stdout
    assert fleet.controller in rules and fleet.address("db1") in rules, rules


def test_web1_prunes_old_copies_and_never_the_newest(fleet: Fleet) -> None:
    """Retention runs on the backup host, as its own account: backups beyond the newest
    backup_store_keep go, and binary logs no kept backup starts from (here aged by hand)."""
    fleet.run("db1", "systemctl", "start", "idle-proof-backup.service")
    fleet.run("db1", "systemctl", "start", "idle-proof-backup-copy.service")
    backups = sorted(sha256s(fleet, "web1", f"{STORE}/full", "full-*.xb.zst"))
    assert len(backups) >= 2, backups
    old = f"{STORE}/binlog/19990101T000000Z"
    fleet.run("web1", "mkdir", "-p", old)
    fleet.run("web1", "touch", "-d", "3 days ago", f"{old}/mariadb-bin.000001")
    fleet.run("web1", "chown", "-R", "idle-proof-backup:", old)
    # The unit, as scheduled, removes nothing young; then with a retention of one.
    fleet.run("web1", "systemctl", "start", "idle-proof-backup-prune.service")
    assert sorted(sha256s(fleet, "web1", f"{STORE}/full", "full-*.xb.zst")) == backups
    keep_one = (
        "set -a && . /etc/default/idle-proof-backup-prune && STORE_KEEP=1 && "
        "runuser -u idle-proof-backup -- /usr/local/sbin/idle-proof-backup-prune"
    )
    print(fleet.run("web1", "bash", "-c", keep_one).stdout)
    assert sorted(sha256s(fleet, "web1", f"{STORE}/full", "full-*")) == [
        backups[-1],
        f"{backups[-1]}.sha256",
    ]
    assert fleet.run("web1", "test", "-e", old, check=False).returncode != 0
    # The young binary logs stay: the kept backup starts from them.
    timeline = fleet.run("db1", "cat", "/var/lib/idle-proof-backup-copy/timeline").stdout.strip()
    assert sha256s(fleet, "web1", f"{STORE}/binlog/{timeline}", "mariadb-bin.*")


def test_db1_powered_off_under_load(
    fleet: Fleet, naive: str, request: pytest.FixtureRequest
) -> None:
    # The firewall's part is over; a power cut needs no help to drop packets.
    conntrack.disarm(fleet, "db1")
    stop_naive(fleet, "app1")
    naive_url = start_naive(fleet, "app1")  # a fresh pool, not one the firewall broke
    settings = Settings.from_env(host_env(fleet, "app1"))
    bound = dead_host_bound(settings)
    before = {h: service_pid(fleet, h) for h in ("app1", "app2")}
    kept = f"written before the power cut {time.time()}"
    assert requests.post(f"{fleet.url}/notes", json={"text": kept}, timeout=10).status_code == 201

    death = host_death(fleet, "db1", down_seconds=2 * bound, naive_url=naive_url)

    failed = death.failed
    report(
        request,
        "incident",
        f"db1 powered off under load: {death.summary()}; bound {bound:g} s "
        f"(DB_NET_TIMEOUT + DB_CONNECT_TIMEOUT + 1); /healthz {summarize(death.healthz)}; "
        f"naive on app1 during it: {[(s, round(t, 1)) for s, t in death.naive]}",
    )
    assert failed, "no request met the outage: the power cut did not happen under load"
    assert all(a.status == 503 and a.error for a in failed), [(a.status, a.error) for a in failed]
    assert death.slowest <= bound, sorted(a.seconds for a in death.answers)[-5:]
    assert death.healthz and set(death.healthz) == {200}, summarize(death.healthz)
    assert len(death.after) >= 5 and all(a.ok for a in death.after), [a.status for a in death.after]
    # db1 came back from its own disk: what was committed before the cut is there.
    count = f"SELECT COUNT(*) FROM notes WHERE text = '{kept}'"
    assert fleet.run("db1", "mariadb", "-N", "app", "-e", count).stdout.strip() == "1"
    # Nothing was restarted: the same Gunicorn masters serve.
    assert {h: service_pid(fleet, h) for h in ("app1", "app2")} == before
    # The naive app, no socket timeouts: the request outlives the client's patience.
    assert death.naive and all(s != 200 for s, _ in death.naive), death.naive


def summarize(statuses: list[int | str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for s in statuses:
        counts[str(s)] = counts.get(str(s), 0) + 1
    return counts


def test_db1s_lost_disk_is_restored_on_a_new_host_from_web1s_copy(
    fleet: Fleet, request: pytest.FixtureRequest
) -> None:
    """Notes are written the whole time: a backup, more notes, then the notes table is
    dropped by mistake (and made again, empty, so that the app writes on). The copy runs
    (as its timer would within minutes), and db1 is replaced by a new, empty host. The
    runbook's section 12 converges it, finds the DROP in the copied binary logs and
    restores from the copy to just before it."""
    with Load(fleet.url, threads=4, rate=16) as load:
        time.sleep(2)
        fleet.run("db1", "systemctl", "start", "idle-proof-backup.service")
        time.sleep(2)
        dropped_at = time.monotonic()
        fleet.run("db1", "mariadb", "-e", DROP_NOTES)
        made_again_at = time.monotonic()
        time.sleep(2)
    fleet.run("db1", "systemctl", "start", "idle-proof-backup-copy.service")
    before, after = notes_around(load, dropped_at, made_again_at)
    assert before and after, load.statuses
    timelines = fleet.run("web1", "ls", f"{STORE}/binlog").stdout.split()

    replaced = fleet.replace("db1")
    assert fleet.run("db1", "test", "-e", "/var/lib/mysql", check=False).returncode != 0

    # Section 12: the controller's commands with this fleet's inventory (its backup host is
    # web1), the one on db1 as it is.
    blocks = runbook_blocks(12)
    assert [host for host, _ in blocks] == ["controller", "db1", "controller"], blocks
    converge = re.fullmatch(
        r"ansible-playbook -i \S+ site\.yml --limit (db1),backup1\n", blocks[0][1]
    )
    assert converge, blocks[0][1]
    run = fleet.playbook("--limit", f"{converge.group(1)},web1")
    assert run.returncode == 0, run.output[-6000:]
    found = fleet.run("db1", "bash", "-c", "set -eu\n" + blocks[1][1]).stdout.splitlines()
    drops = [line for line in found if "DROP TABLE" in line and "`notes`" in line]
    assert len(drops) == 1, found
    gtid = drops[0].split()[0]
    restore = re.fullmatch(
        r"ansible-playbook -i \S+ (restore\.yml) -e (mysql_restore_from_copy)=true "
        r"-e mysql_restore_before_gtid=0-1-4711\n",
        blocks[2][1],
    )
    assert restore, blocks[2][1]
    point = json.dumps({restore.group(2): True, "mysql_restore_before_gtid": gtid})
    restored = fleet.playbook("-e", point, file=restore.group(1), timeout=600)
    assert restored.returncode == 0, restored.output[-6000:]

    select = "SELECT text FROM app.notes"
    rows = fleet.run("db1", "mariadb", "-N", "-e", select).stdout.split("\n")
    missing = [text for text in before if text not in rows]
    written_after = [text for text in after if text in rows]
    duplicated = sorted({text for text in rows if text and rows.count(text) > 1})
    report(
        request,
        "incident",
        f"db1's disk lost, restored on a new db1 from web1's copy to before {gtid} (a DROP "
        f"TABLE) under load: new host {replaced:.0f} s, converge {run.seconds:.0f} s, restore "
        f"playbook {restored.seconds:.0f} s; {len(before)} notes acknowledged before the drop, "
        f"{len(missing)} missing, {len(duplicated)} duplicated; {len(written_after)} of "
        f"{len(after)} written after it present",
    )
    assert missing == [] and duplicated == [] and written_after == []
    made = requests.post(f"{fleet.url}/notes", json={"text": "after the new disk"}, timeout=10)
    assert made.status_code == 201, made.text
    # The restored server's binary logs reach web1 under a timeline of their own, beside the
    # old host's and the new host's before its restore.
    fleet.run("db1", "systemctl", "start", "idle-proof-backup-copy.service")
    now = fleet.run("web1", "ls", f"{STORE}/binlog").stdout.split()
    assert set(timelines) < set(now) and len(now) == len(timelines) + 2, (timelines, now)
    fleet.run("db1", "mariadb", "-e", "DROP TABLE app.notes_again")
