"""Every command in deploy/RUNBOOK.md runs, in order, against a real MariaDB and Gunicorn.

The runbook's ```sh blocks are joined into one bash script (``set -eu``: a failing
command fails the test) with the deployed paths swapped for this test's, as listed in
SUBSTITUTIONS; each swap must match, so an edited runbook cannot silently skip one.

Commands that need a running systemd are checked another way, because this host has
none (PID 1 is not systemd; tests/test_deploy.py boots a systemd-nspawn host for the
units themselves):

* ``journalctl -u UNIT ...`` runs for real (an empty journal here, which checks its
  options), and the same pipeline is run again on the real log that the unit would
  have written: Gunicorn's log of the naive app and of the kit through a KILL, and this
  MariaDB's error log. The signatures the runbook greps for must be found there.
* ``systemctl VERB UNIT`` must name a verb that exists and a unit this repo ships
  (systemd/) or MariaDB installs; in the script it becomes ``true``.
* ``make deploy ...`` runs as ``make -n deploy ...``: the target and variable exist,
  and no host is touched.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from harness import ROOT, VENV_BIN
from harness.faults import vanish
from harness.hot import HOT_ENV
from harness.mariadb import LocalMariaDB
from harness.scenarios import FaultContext, hit, warm
from tests.helpers import WAIT_TIMEOUT, AppFactory

pytestmark = pytest.mark.slow

RUNBOOK = ROOT / "deploy" / "RUNBOOK.md"
SYSTEMCTL_VERBS = {"restart", "reload", "status", "start", "stop", "show", "cat"}
UNIT_FILES = {
    "idle-proof.service": ROOT / "systemd" / "idle-proof.service",
    "mariadb.service": Path("/lib/systemd/system/mariadb.service"),
}


def runbook_commands() -> list[str]:
    """Each command of each ```sh block, continuation lines joined."""
    commands = []
    for block in re.findall(r"^```sh\n(.*?)^```", RUNBOOK.read_text(), re.S | re.M):
        for command in re.sub(r"\\\n\s*", "", block).splitlines():
            if command.strip() and not command.lstrip().startswith("#"):
                commands.append(command.strip())
    return commands


def test_every_shell_block_is_run_by_a_test() -> None:
    """```sh blocks run here; ```sh on=HOST blocks (the fleet procedures) run on that host of
    a test fleet, by tests/test_fleet_incident.py. Any other shell fence would be run by none."""
    fences = re.findall(r"^```((?:ba|z)?sh\b.*|shell.*|console.*)$", RUNBOOK.read_text(), re.M)
    assert fences and all(f == "sh" or re.fullmatch(r"sh on=\w+", f) for f in fences), fences


def journal_unit(command: str) -> str | None:
    match = re.match(r"journalctl -u (\S+) [^|]*\|", command)
    return match.group(1) if match else None


def check_systemctl(command: str) -> None:
    _, verb, unit = shlex.split(command)
    assert verb in SYSTEMCTL_VERBS, command
    assert UNIT_FILES[unit].is_file(), f"{command}: no unit file {UNIT_FILES[unit]}"


def incident_journal(start_app: AppFactory, mariadb: LocalMariaDB, path: Path) -> str:
    """The naive app and the kit through a KILL: the log lines a journal would hold.

    Returns the kit's URL; the kit keeps running for the runbook's curl commands.
    """
    naive = start_app("naive")
    hit(naive.url, 4)
    mariadb.kill_app_connections()
    hit(naive.url, 4)
    naive.stop()
    kit = start_app()
    # Which worker accepts a request is the kernel's choice: repeat until a worker that held a
    # killed connection was asked again (pool_recycle may also have replaced it first).
    for _ in range(5):
        hit(kit.url, 4)
        mariadb.kill_app_connections()
        assert hit(kit.url, 8).failures == 0
        if "replacing pooled connection: closed_by_server" in kit.log_path.read_text():
            break
    # Section 7: the host lost under load; a kit that cannot ping its busy connections.
    hot = start_app(**HOT_ENV, DB_IDLE_TIMEOUT="600")
    # A vanished connection is met under a statement only when a request uses it before its
    # keepalives give up on it (DB_NET_TIMEOUT; it is then replaced at checkout instead): on
    # a busy machine the requests can come later than that, so the incident is repeated.
    for _ in range(3):
        warm(FaultContext(mariadb, hot.url, WAIT_TIMEOUT), 5)
        with vanish(mariadb.port):
            assert hit(hot.url, 4, timeout=10).failures == 0
        if "connection lost under a statement" in hot.log_path.read_text():
            break
    hot.stop()
    path.write_text(
        naive.log_path.read_text() + kit.log_path.read_text() + hot.log_path.read_text()
    )
    return kit.url


def test_every_runbook_command_runs(
    start_app: AppFactory, mariadb: LocalMariaDB, tmp_path: Path
) -> None:
    journal = tmp_path / "idle-proof.journal"
    app_url = incident_journal(start_app, mariadb, journal)
    logs = {"idle-proof.service": journal, "mariadb.service": mariadb.directory / "error.log"}
    env_file = tmp_path / "app.env"
    env_file.write_text(f"DATABASE_URL={mariadb.url}\nDB_IDLE_TIMEOUT={WAIT_TIMEOUT}\n")

    # Deployed paths and production durations -> this test's servers and seconds.
    substitutions = {
        "/etc/idle-proof/app.env": str(env_file),
        "--unix-socket /run/idle-proof/gunicorn.sock http://localhost": app_url,
        "--max-seconds 900": "--max-seconds 4",
        "LIMIT=300": f"LIMIT={WAIT_TIMEOUT}",
        "make deploy": "make -n deploy",
    }
    commands = runbook_commands()
    unchecked = [c for c in commands if c.startswith("journalctl") and not journal_unit(c)]
    assert not unchecked, f"journalctl commands must pipe into a grep this test checks: {unchecked}"
    for old in substitutions:
        assert any(old in c for c in commands), f"the runbook no longer says {old!r}"

    script = ["set -eu"]
    journal_pipelines = []
    for command in commands:
        for old, new in substitutions.items():
            command = command.replace(old, new)
        if command.startswith("systemctl "):
            check_systemctl(command)
            command = "true"
        unit = journal_unit(command)
        if unit:
            journal_pipelines.append((unit, command))
        script.append(command)
    # The runbook's `mariadb` runs as root on the database host's default socket; here the
    # test server's socket comes from ~/.my.cnf, read after /etc/mysql/my.cnf.
    (tmp_path / ".my.cnf").write_text(f"[client]\nsocket = {mariadb.socket_path}\n")
    env = {
        "PATH": f"{VENV_BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": str(tmp_path),
    }
    result = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
    )
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    assert "0 FAIL" in out  # idleproof doctor, before and after the fix
    assert "killed by: server_close" in out  # idleproof probe-idle
    assert re.search(r"wait_timeout\s+2\b", out)  # SHOW GLOBAL VARIABLES
    assert "Aborted_clients" in out and "Threads_connected" in out
    assert "idleproof_db_connections_replaced_total" in out  # /metrics
    assert "idleproof_db_connections_lost_total" in out and "idleproof_db_pool_" in out
    assert '"status":"ready"' in out.replace(" ", "")  # /readyz
    assert f"first request after {WAIT_TIMEOUT + 5} s idle: HTTP 200" in out
    assert "ansible-playbook" in out  # make -n deploy
    assert re.search(r"SUCCESS: \d+ rules found", out)  # promtool check rules
    assert re.search(r"idleproof\.rules\.test\.yml\n\s*SUCCESS", out)  # promtool test rules

    # The journal pipelines again, on the real logs those units would have written.
    found = ""
    assert {unit for unit, _ in journal_pipelines} == set(logs)
    for unit, command in journal_pipelines:
        on_log = re.sub(r"^journalctl -u \S+ [^|]*", f"cat {logs[unit]} ", command)
        piped = subprocess.run(["bash", "-c", on_log], capture_output=True, text=True, check=True)
        assert piped.stdout.strip(), f"{command!r} finds nothing in a real {unit} log"
        found += piped.stdout
    assert re.search(r"\((2006|2013|2014), ", found), found  # the naive app's errors
    assert "replacing pooled connection: closed_by_server" in found  # the kit at work
    assert "retrying the request on a fresh connection: network" in found  # section 7
    assert "Aborted connection" in found  # MariaDB's side of it
