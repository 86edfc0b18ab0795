"""``idleproof doctor`` against the real MariaDB (wait_timeout=2) and real config files."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from harness import ROOT, VENV_BIN, free_port
from harness.mariadb import LocalMariaDB
from tests.helpers import WAIT_TIMEOUT

pytestmark = pytest.mark.slow

REPO_FILES = [
    "--nginx-conf",
    str(ROOT / "nginx/idle-proof/server.conf"),
    "--systemd-unit",
    str(ROOT / "systemd/idle-proof.service"),
]


def kit(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "idleproof"), *args],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def env_file(tmp_path: Path, **values: str) -> str:
    path = tmp_path / "app.env"
    path.write_text(
        "# like /etc/idle-proof/app.env\n" + "".join(f"{k}={v}\n" for k, v in values.items())
    )
    return str(path)


def rows(stdout: str) -> dict[str, dict[str, str]]:
    return {c["name"]: c for c in json.loads(stdout)["checks"]}


def test_passes_on_the_kits_own_settings(tmp_path: Path, mariadb: LocalMariaDB) -> None:
    f = env_file(tmp_path, DATABASE_URL=mariadb.url, DB_IDLE_TIMEOUT=str(WAIT_TIMEOUT))
    result = kit("doctor", "--env-file", f, *REPO_FILES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert "0 FAIL" in result.stdout
    for name in ("wait_timeout vs DB_POOL_RECYCLE", "preload_app + post_fork", "max_connections"):
        assert f"PASS  {name}" in result.stdout
    assert "nginx proxy_read_timeout" in result.stdout
    assert "systemd TimeoutStopSec" in result.stdout


def test_fails_when_wait_timeout_is_below_the_recycle(
    tmp_path: Path, mariadb: LocalMariaDB
) -> None:
    # MySQL's default idle timeout in the app, a 2 s wait_timeout on the server: the incident.
    f = env_file(tmp_path, DATABASE_URL=mariadb.url, DB_IDLE_TIMEOUT="28800")
    result = kit("doctor", "--env-file", f, "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    row = rows(result.stdout)["wait_timeout vs DB_POOL_RECYCLE"]
    assert row["status"] == "FAIL"
    assert "DB_POOL_RECYCLE=25920" in row["detail"] and "wait_timeout=2" in row["detail"]
    assert "DB_IDLE_TIMEOUT=2" in row["fix"]


@pytest.mark.parametrize(
    "hook",
    [
        "",  # preload and no post_fork at all: the incident's setup
        "def post_fork(server, worker):\n    server.log.info('forked')\n",  # a hook, no dispose
    ],
)
def test_fails_when_gunicorn_preloads_without_a_post_fork_dispose(
    tmp_path: Path, mariadb: LocalMariaDB, hook: str
) -> None:
    config = tmp_path / "gunicorn.conf.py"
    config.write_text(f"preload_app = True\nworkers = 2\n{hook}")
    f = env_file(tmp_path, DATABASE_URL=mariadb.url, DB_IDLE_TIMEOUT=str(WAIT_TIMEOUT))
    result = kit("doctor", "--env-file", f, "--gunicorn-config", str(config))
    assert result.returncode == 1, result.stdout + result.stderr
    line = next(x for x in result.stdout.splitlines() if "preload_app + post_fork" in x)
    assert line.startswith("FAIL") and "post_fork" in line
    assert "fix: " in result.stdout and "idleproof.gunicorn_conf" in result.stdout


def test_fails_when_the_database_is_unreachable(tmp_path: Path) -> None:
    url = f"mysql+pymysql://app:x@127.0.0.1:{free_port()}/app"
    result = kit("doctor", "--env-file", env_file(tmp_path, DATABASE_URL=url), "--json")
    assert result.returncode == 1
    assert rows(result.stdout)["database connection"]["status"] == "FAIL"


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["doctor"], {}, "DATABASE_URL is not set"),
        (["doctor", "--env-file", "/nonexistent/app.env"], {}, "--env-file /nonexistent/app.env"),
        (
            ["doctor"],
            {"DATABASE_URL": "mysql+pymysql://a@h/d", "DB_POOL_RECYCLE": "soon"},
            "DB_POOL_RECYCLE='soon' is not a number",
        ),
        (
            ["doctor", "--gunicorn-config", "nope.py"],
            {"DATABASE_URL": "mysql+pymysql://a@h/d"},
            "--gunicorn-config nope.py",
        ),
        (["probe-idle", "--parallel", "0"], {}, "--parallel"),
        (["probe-idle", "--max-seconds", "-1"], {}, "--max-seconds"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    args: list[str], env: dict[str, str], message: str
) -> None:
    result = kit(*args, env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr


def test_env_file_line_that_is_not_key_value(tmp_path: Path) -> None:
    path = tmp_path / "app.env"
    path.write_text("DATABASE_URL=mysql+pymysql://a@h/d\nthis is not a setting\n")
    result = kit("doctor", "--env-file", str(path))
    assert result.returncode == 2
    assert f"{path}:2: expected KEY=VALUE" in result.stderr


# --- judged by what the process will really do (issue: every bad input gets a clear answer)


def kit_env(tmp_path: Path, mariadb: LocalMariaDB, **values: str) -> str:
    return env_file(tmp_path, DATABASE_URL=mariadb.url, DB_IDLE_TIMEOUT=str(WAIT_TIMEOUT), **values)


def doctor_rows(*args: str, env: dict[str, str] | None = None) -> dict[str, dict[str, str]]:
    result = kit("doctor", "--json", *args, env=env)
    assert result.returncode in (0, 1), result.stdout + result.stderr
    return rows(result.stdout)


@pytest.mark.parametrize(
    ("config", "cmd_args", "verdict"),
    [
        # A dispose that never runs: the hook's source mentions dispose, the worker keeps
        # the master's pool.
        (
            "preload_app = True\nworkers = 2\ndef post_fork(server, worker):\n"
            "    if False:\n        from app.db import dispose_after_fork\n"
            "        dispose_after_fork(server.app.wsgi())\n",
            "",
            "left 1 of 1 engine(s)",
        ),
        # Preload switched on from the environment, a config file without post_fork.
        ("workers = 2\n", "--preload", "there is no post_fork hook"),
        # A hook that raises.
        (
            "preload_app = True\ndef post_fork(server, worker):\n    raise RuntimeError('boom')\n",
            "",
            "running post_fork failed: RuntimeError: boom",
        ),
    ],
    ids=["dispose-never-runs", "preload-from-cmd-args", "hook-raises"],
)
def test_post_fork_is_judged_by_running_it(
    tmp_path: Path, mariadb: LocalMariaDB, config: str, cmd_args: str, verdict: str
) -> None:
    path = tmp_path / "gunicorn.conf.py"
    path.write_text(config)
    f = kit_env(tmp_path, mariadb)
    found = doctor_rows(
        "--env-file", f, "--gunicorn-config", str(path), env={"GUNICORN_CMD_ARGS": cmd_args}
    )
    row = found["preload_app + post_fork"]
    assert row["status"] == "FAIL" and verdict in row["detail"], row


def test_the_kits_post_fork_disposes_when_run(tmp_path: Path, mariadb: LocalMariaDB) -> None:
    row = doctor_rows("--env-file", kit_env(tmp_path, mariadb))["preload_app + post_fork"]
    assert row["status"] == "PASS" and "disposed every engine of app.wsgi:app" in row["detail"]


@pytest.mark.parametrize(
    ("proxy_read", "shown"), [("30s", "proxy_read_timeout=30"), ("500ms", "proxy_read_timeout=0.5")]
)
def test_nginx_giving_up_before_gunicorn_fails(
    tmp_path: Path, mariadb: LocalMariaDB, proxy_read: str, shown: str
) -> None:
    nginx = tmp_path / "server.conf"
    nginx.write_text(f"listen 80;\nproxy_read_timeout {proxy_read};\n")
    result = kit(
        "doctor", "--json", "--env-file", kit_env(tmp_path, mariadb), "--nginx-conf", str(nginx)
    )
    assert result.returncode == 1, result.stdout + result.stderr
    row = rows(result.stdout)["nginx proxy_read_timeout"]
    assert row["status"] == "FAIL" and shown in row["detail"], row


def test_the_stop_timeout_in_force_comes_from_the_drop_ins(
    tmp_path: Path, mariadb: LocalMariaDB
) -> None:
    unit = tmp_path / "idle-proof.service"
    unit.write_text((ROOT / "systemd" / "idle-proof.service").read_text())
    (tmp_path / "idle-proof.service.d").mkdir()
    (tmp_path / "idle-proof.service.d" / "10-site.conf").write_text(
        "[Service]\nTimeoutStopSec=20\n"
    )
    row = doctor_rows("--env-file", kit_env(tmp_path, mariadb), "--systemd-unit", str(unit))[
        "systemd TimeoutStopSec"
    ]
    assert row["status"] == "FAIL" and "TimeoutStopSec=20" in row["detail"], row


def test_gunicorn_timeout_counts_connect_and_ping_before_the_query(
    tmp_path: Path, mariadb: LocalMariaDB
) -> None:
    f = kit_env(tmp_path, mariadb, DB_READ_TIMEOUT="30", GUNICORN_TIMEOUT="31")
    row = doctor_rows("--env-file", f)["Gunicorn timeout vs database waits"]
    assert row["status"] == "FAIL" and "DB_CONNECT_TIMEOUT=2" in row["detail"], row


def test_a_per_user_connection_limit_below_the_pools_fails(
    tmp_path: Path, mariadb: LocalMariaDB
) -> None:
    mariadb.execute(
        "CREATE USER IF NOT EXISTS 'limited'@'127.0.0.1' IDENTIFIED BY 'limited-pw' "
        "WITH MAX_USER_CONNECTIONS 3",
        f"GRANT SELECT ON `{mariadb.database}`.* TO 'limited'@'127.0.0.1'",
    )
    url = f"mysql+pymysql://limited:limited-pw@127.0.0.1:{mariadb.port}/{mariadb.database}"
    f = env_file(tmp_path, DATABASE_URL=url, DB_IDLE_TIMEOUT=str(WAIT_TIMEOUT))
    row = doctor_rows("--env-file", f)["max_user_connections"]
    assert row["status"] == "FAIL" and "MAX_USER_CONNECTIONS=3" in row["detail"], row


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: ["--nginx-conf", str(p / "missing.conf")], "--nginx-conf"),
        (lambda p: ["--systemd-unit", str(p / "missing.service")], "--systemd-unit"),
        (
            lambda p: ["--env-file", _bytes(p / "latin1.env", b"DATABASE_URL=caf\xe9\n")],
            "not UTF-8",
        ),
        (
            lambda p: [
                "--nginx-conf",
                _bytes(p / "latin1.conf", b"proxy_read_timeout 65s; # \xe9\n"),
            ],
            "not UTF-8",
        ),
        (
            lambda p: [
                "--env-file",
                _bytes(p / "v6.env", b"DATABASE_URL=mysql+pymysql://a:b@[::1:3306/app\n"),
            ],
            "Invalid IPv6 URL",
        ),
        (
            lambda p: [
                "--env-file",
                _bytes(p / "inf.env", b"DATABASE_URL=mysql+pymysql://a@h/d\nDB_READ_TIMEOUT=inf\n"),
            ],
            "is not a finite number",
        ),
        (
            lambda p: [
                "--env-file",
                _bytes(
                    p / "900.env",
                    b"DATABASE_URL=mysql+pymysql://a@h/d\nDB_READ_TIMEOUT=900\nGUNICORN_TIMEOUT=1000\n",
                ),
            ],
            "DB_READ_TIMEOUT=900 is too large",
        ),
    ],
    ids=["missing-nginx", "missing-unit", "latin1-env", "latin1-nginx", "ipv6", "inf", "read-900"],
)
def test_bad_input_is_one_line_and_exit_2_never_a_traceback(
    tmp_path: Path, mariadb: LocalMariaDB, make: Any, message: str
) -> None:
    args = make(tmp_path)
    if "--env-file" not in args:
        args += ["--env-file", kit_env(tmp_path, mariadb)]
    result = kit("doctor", *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def _bytes(path: Path, content: bytes) -> str:
    path.write_bytes(content)
    return str(path)


def test_a_recycle_above_the_network_idle_limit_is_a_failure_not_an_input_error(
    tmp_path: Path, mariadb: LocalMariaDB
) -> None:
    f = kit_env(tmp_path, mariadb, DB_NETWORK_IDLE_TIMEOUT="1", DB_POOL_RECYCLE="1.5")
    result = kit("doctor", "--json", "--env-file", f)
    assert result.returncode == 1, result.stdout + result.stderr
    failed = [c for c in json.loads(result.stdout)["checks"] if c["status"] == "FAIL"]
    assert [c["name"] for c in failed] == ["settings"], failed
    assert "DB_POOL_RECYCLE=1.5 must be below DB_NETWORK_IDLE_TIMEOUT=1" in failed[0]["detail"]
