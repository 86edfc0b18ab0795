"""A throwaway MariaDB server in a directory of its own, for ``make run``, tests and benchmarks.

It runs the distribution's ``mariadbd`` as a plain child process (no systemd, no system
datadir), on loopback and a free port. Its timeouts and ``max_connections`` are the mysql
role's (read from ``ansible/roles/mysql/defaults/main.yml``, their one source); what
differs from production is listed in :data:`TEST_ONLY` and :data:`DEV_WAIT_TIMEOUT`.
``stop`` ends exactly the process ``start`` began, by the pid it wrote.

    python -m harness.mariadb start --dir .run/mariadb [--port N] [--wait-timeout S]
    python -m harness.mariadb stop --dir .run/mariadb
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pymysql
import yaml

from harness import ROOT, free_port

MYSQL_ROLE_DEFAULTS = ROOT / "ansible" / "roles" / "mysql" / "defaults" / "main.yml"
# Server settings taken from the mysql role, as its template writes them into the server's
# configuration (mysql_<name> -> <name>). wait_timeout is not among them: production sets
# it from the inventory's db_idle_timeout, and every user of this server picks its own.
FROM_MYSQL_ROLE = ("net_read_timeout", "net_write_timeout", "connect_timeout", "max_connections")

# wait_timeout/interactive_timeout of `make run`'s server when none is given: short enough
# that a developer sees the pool recycle within minutes (production: db_idle_timeout).
DEV_WAIT_TIMEOUT = 600

# Only for a throwaway server, never in production: a small buffer pool and redo log so a
# test server starts in a second, no fsync per commit and no binary log (the data is
# thrown away with the directory).
TEST_ONLY: dict[str, object] = {
    "innodb_buffer_pool_size": "64M",
    "innodb_log_file_size": "16M",
    "innodb_flush_log_at_trx_commit": 2,
    "skip-log-bin": None,
}


def mysql_role_settings(path: Path = MYSQL_ROLE_DEFAULTS) -> dict[str, int]:
    """The :data:`FROM_MYSQL_ROLE` settings as the mysql role's defaults set them."""
    defaults = yaml.safe_load(path.read_text())
    settings = {}
    for name in FROM_MYSQL_ROLE:
        value = defaults.get(f"mysql_{name}") if isinstance(defaults, dict) else None
        # bool is an int too; a templated string cannot be resolved outside Ansible.
        if not isinstance(value, int) or isinstance(value, bool):
            raise RuntimeError(
                f"{path}: mysql_{name} is {value!r}; the harness needs a plain whole number "
                "there (its server copies the role's value)"
            )
        settings[name] = value
    return settings


def _binary(*names: str) -> str:
    for name in names:
        path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
        if path:
            return path
    raise SystemExit(
        f"{names[0]} not found: install MariaDB (apt-get install mariadb-server) or run make run"
    )


@dataclass
class LocalMariaDB:
    directory: Path
    port: int
    database: str = "app"
    user: str = "app"
    password: str = ""

    @property
    def socket_path(self) -> Path:
        # Unix socket paths are limited to 107 bytes; keep it short.
        return self.directory / "sock"

    @property
    def pid_path(self) -> Path:
        return self.directory / "mariadbd.pid"

    @property
    def url(self) -> str:
        return f"mysql+pymysql://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    def write_config(self, options: Mapping[str, object]) -> None:
        settings: dict[str, object] = {
            **mysql_role_settings(),
            "wait_timeout": DEV_WAIT_TIMEOUT,
            "interactive_timeout": DEV_WAIT_TIMEOUT,
            **TEST_ONLY,
            **options,
            "datadir": self.directory / "data",
            "socket": self.socket_path,
            "pid-file": self.pid_path,
            "log-error": self.directory / "error.log",
            "port": self.port,
            "bind-address": "127.0.0.1",
            "skip-name-resolve": None,
            "local-infile": 0,
        }
        lines = ["[mariadbd]"]
        for key, value in settings.items():
            lines.append(key if value is None else f"{key} = {value}")
        (self.directory / "my.cnf").write_text("\n".join(lines) + "\n")

    def install(self) -> None:
        data = self.directory / "data"
        if (data / "mysql").is_dir():
            return
        data.mkdir(parents=True, exist_ok=True)
        cmd = [
            _binary("mariadb-install-db", "mysql_install_db"),
            f"--defaults-file={self.directory / 'my.cnf'}",
            "--auth-root-authentication-method=socket",
            "--skip-test-db",
        ]
        if os.geteuid() == 0:
            cmd.append("--user=root")
        _run(cmd, "mariadb-install-db")

    def start_server(self, timeout: float = 30) -> None:
        cmd = [_binary("mariadbd", "mysqld"), f"--defaults-file={self.directory / 'my.cnf'}"]
        if os.geteuid() == 0:
            cmd.append("--user=root")
        log = (self.directory / "stdout.log").open("ab")
        subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.admin().close()
                return
            except pymysql.err.OperationalError:
                time.sleep(0.1)
        raise RuntimeError(f"MariaDB did not start in {timeout}s; see {self.directory}/error.log")

    def admin(self) -> pymysql.connections.Connection[pymysql.cursors.Cursor]:
        """A root connection over the unix socket (root has no password: socket auth)."""
        return pymysql.connect(
            unix_socket=str(self.socket_path), user="root", connect_timeout=2, autocommit=True
        )

    def execute(self, *statements: str) -> list[tuple[object, ...]]:
        conn = self.admin()
        try:
            rows: list[tuple[object, ...]] = []
            with conn.cursor() as cur:
                for statement in statements:
                    cur.execute(statement)
                    rows = list(cur.fetchall())
            return rows
        finally:
            conn.close()

    @contextlib.contextmanager
    def wait_timeout(self, seconds: float) -> Iterator[None]:
        """The server's global wait_timeout (what new connections get) set to ``seconds``,
        and put back to what it was on exit."""
        ((before,),) = self.execute("SELECT @@GLOBAL.wait_timeout")
        self.execute(f"SET GLOBAL wait_timeout = {seconds}")
        try:
            yield
        finally:
            self.execute(f"SET GLOBAL wait_timeout = {before}")

    def create_app_database(self) -> None:
        secret_file = self.directory / "app-password"
        if not secret_file.exists():
            secret_file.write_text(secrets.token_urlsafe(18))
            secret_file.chmod(0o600)
        self.password = secret_file.read_text().strip()
        self.execute(
            f"CREATE DATABASE IF NOT EXISTS `{self.database}` CHARACTER SET utf8mb4",
            f"CREATE USER IF NOT EXISTS '{self.user}'@'127.0.0.1' IDENTIFIED BY '{self.password}'",
            f"GRANT ALL PRIVILEGES ON `{self.database}`.* TO '{self.user}'@'127.0.0.1'",
        )

    def pid(self) -> int | None:
        try:
            return int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return None

    def stop(self, timeout: float = 30) -> None:
        pid = self.pid()
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            _reap(pid)
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
        _reap(pid)

    def restart(self) -> None:
        self.stop()
        self.start_server()

    def app_connection_count(self, since: int = 0) -> int:
        """The app user's connections; with ``since`` (a :meth:`newest_connection_id`), only
        those opened after it: not one a blackholed network left open on the server."""
        rows = self.execute(
            "SELECT COUNT(*) FROM information_schema.processlist "
            f"WHERE user = '{self.user}' AND id > {int(since)}"
        )
        return int(str(rows[0][0]))

    def newest_connection_id(self) -> int:
        """The id of a connection opened now: every later one has a greater id."""
        return int(str(self.execute("SELECT CONNECTION_ID()")[0][0]))

    def kill_app_connections(self) -> int:
        """KILL every connection of the app user, and wait until the server has closed
        them all (KILL only marks a thread; on a loaded machine it closes its socket
        later, and a client would meet an open connection): returns how many."""
        rows = self.execute(
            f"SELECT id FROM information_schema.processlist WHERE user = '{self.user}'"
        )
        ids = [int(str(thread_id)) for (thread_id,) in rows]
        for thread_id in ids:
            # It may have ended on its own meanwhile.
            with contextlib.suppress(pymysql.err.OperationalError):
                self.execute(f"KILL {thread_id}")
        deadline = time.monotonic() + 30
        listed = ",".join(map(str, ids)) or "0"
        while self.execute(f"SELECT id FROM information_schema.processlist WHERE id IN ({listed})"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"threads {listed} were killed but still listed after 30 s")
            time.sleep(0.05)
        return len(ids)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _run(cmd: list[str], what: str) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed: {(result.stderr or result.stdout).strip()[-500:]}")


def start_mariadb(
    directory: Path, port: int | None = None, options: Mapping[str, object] | None = None
) -> LocalMariaDB:
    """Create (once) and start a server in ``directory``; returns it with the app user made."""
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    db = LocalMariaDB(directory, port or free_port())
    db.write_config(options or {})
    db.install()
    db.start_server()
    db.create_app_database()
    return db


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.mariadb", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("start", help="start the server and print the app's environment")
    up.add_argument("--dir", type=Path, required=True)
    up.add_argument("--port", type=int)
    up.add_argument("--wait-timeout", type=int, default=DEV_WAIT_TIMEOUT)
    up.add_argument("--env-file", type=Path, help="also write the app's environment here")
    down = sub.add_parser("stop", help="stop the server started in --dir")
    down.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args(argv)

    if args.command == "stop":
        directory = args.dir.resolve()
        LocalMariaDB(directory, 0).stop()
        return 0
    timeouts = {"wait_timeout": args.wait_timeout, "interactive_timeout": args.wait_timeout}
    db = start_mariadb(args.dir, args.port, timeouts)
    # One source of truth: the app's idle timeout is the server's wait_timeout.
    env = f"DATABASE_URL={db.url}\nDB_IDLE_TIMEOUT={args.wait_timeout}\n"
    if args.env_file:
        args.env_file.write_text(env)
        args.env_file.chmod(0o600)
    sys.stdout.write(env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
