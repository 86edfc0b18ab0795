"""The harness's throwaway MariaDB is configured like the mysql role (fast: no server);
the load generator resends only what a browser would (a real socket server on loopback)."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from harness.mariadb import (
    FROM_MYSQL_ROLE,
    MYSQL_ROLE_DEFAULTS,
    TEST_ONLY,
    LocalMariaDB,
    mysql_role_settings,
)
from harness.traffic import Load


def written_config(tmp_path: Path, **options: object) -> dict[str, str | None]:
    LocalMariaDB(tmp_path, 3306).write_config(options)
    lines = (tmp_path / "my.cnf").read_text().splitlines()
    assert lines[0] == "[mariadbd]"
    pairs = [line.split(" = ", 1) for line in lines[1:]]
    return {p[0]: (p[1] if len(p) == 2 else None) for p in pairs}


def test_server_settings_come_from_the_mysql_role(tmp_path: Path) -> None:
    role = yaml.safe_load(MYSQL_ROLE_DEFAULTS.read_text())
    config = written_config(tmp_path)
    for name in FROM_MYSQL_ROLE:
        assert config[name] == str(role[f"mysql_{name}"]), name


def test_test_only_options_and_overrides_are_applied(tmp_path: Path) -> None:
    config = written_config(tmp_path, wait_timeout=2, interactive_timeout=2)
    assert config["wait_timeout"] == config["interactive_timeout"] == "2"
    for name, value in TEST_ONLY.items():
        assert config[name] == (None if value is None else str(value)), name


@pytest.mark.parametrize(
    ("value", "shown"),
    [("'{{ db_max_connections }}'", "'{{ db_max_connections }}'"), ("yes", "True"), ("", "None")],
)
def test_a_role_default_that_is_not_a_number_is_refused(
    tmp_path: Path, value: str, shown: str
) -> None:
    defaults = tmp_path / "main.yml"
    text = MYSQL_ROLE_DEFAULTS.read_text()
    defaults.write_text(
        "\n".join(
            f"mysql_max_connections: {value}" if line.startswith("mysql_max_connections:") else line
            for line in text.splitlines()
        )
    )
    with pytest.raises(RuntimeError, match=f"mysql_max_connections is {shown}; .*whole number"):
        mysql_role_settings(defaults)


@contextmanager
def closing_server(answered_per_connection: int) -> Iterator[str]:
    """An HTTP server on loopback that answers this many requests on each connection, then
    reads the next request and closes the connection without a byte of answer (what
    nginx's graceful reload does to a keep-alive connection a request is just reaching)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"

    def read_request(conn: socket.socket) -> bool:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return False
            data += chunk
        head, body = data.split(b"\r\n\r\n", 1)
        length = re.search(rb"(?i)content-length: *(\d+)", head)
        while length and len(body) < int(length[1]):
            body += conn.recv(65536)
        return True

    def serve(conn: socket.socket) -> None:
        with conn:
            for _ in range(answered_per_connection):
                if not read_request(conn):
                    return
                conn.sendall(answer)
            read_request(conn)

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        listener.close()


def test_the_load_resends_a_request_a_reused_connection_closed_unanswered() -> None:
    with (
        closing_server(answered_per_connection=1) as url,
        Load(url, threads=1, timeout=5, rate=20, resend=True) as load,
    ):
        time.sleep(1)
    # Each request after the first met a closed keep-alive connection and went again, once,
    # on a new one, which answered it.
    assert load.resent and load.failures == [], (load.resent, load.failures[:3])
    assert load.ok == len(load.resent) + 1


@pytest.mark.parametrize("resend", [False, True])
def test_the_load_counts_what_a_browser_would_not_resend(resend: bool) -> None:
    # A new connection closed unanswered is not the keep-alive race: never resent.
    with (
        closing_server(answered_per_connection=0) as url,
        Load(url, threads=1, timeout=5, rate=20, resend=resend) as load,
    ):
        time.sleep(0.5)
    assert load.failures and load.ok == 0 and load.resent == []
    # Without resend, the keep-alive race counts as lost.
    with (
        closing_server(answered_per_connection=1) as url,
        Load(url, threads=1, timeout=5, rate=20, resend=False) as load,
    ):
        time.sleep(0.5)
    assert load.failures and load.resent == []
