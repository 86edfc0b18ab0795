"""``kit doctor`` against the real MariaDB (wait_timeout=2) and real config files."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from harness import ROOT, VENV_BIN, free_port
from harness.mariadb import LocalMariaDB
from tests.conftest import WAIT_TIMEOUT

pytestmark = pytest.mark.slow

REPO_FILES = [
    "--nginx-conf",
    str(ROOT / "nginx/idle-proof/server.conf"),
    "--systemd-unit",
    str(ROOT / "systemd/idle-proof.service"),
]


def kit(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "kit"), *args],
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
    assert "fix: " in result.stdout and "dispose_after_fork" in result.stdout


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
