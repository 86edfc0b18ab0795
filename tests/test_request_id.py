"""One id follows a request: nginx's access log, Gunicorn's access line, the app's own log
lines and the error body all carry nginx's $request_id, with the client's address.

A real nginx (harness/nginx.py) with the canonical site in front of a real Gunicorn
(over TCP and over a unix socket, as deployed) and MariaDB. The client is 127.0.0.2.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import requests

from harness import free_port
from harness.gunicorn import GunicornServer
from harness.mariadb import LocalMariaDB
from harness.nginx import NginxServer, send_raw
from idleproof.proxy import ProxyHeaders
from tests.helpers import WAIT_TIMEOUT, AppFactory

pytestmark = pytest.mark.slow

CLIENT = "127.0.0.2"


def request_from_client(nginx: NginxServer, line: bytes, body: bytes = b"") -> tuple[int, str]:
    """(status, request id) of one request sent from CLIENT."""
    headers = b"Host: x\r\nContent-Type: application/json\r\n"
    headers += b"Content-Length: %d\r\n" % len(body) if body else b""
    response = send_raw(nginx.port, line + b"\r\n" + headers + b"\r\n" + body, source=CLIENT)
    request_id = response.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    if response.status >= 400:
        assert response.is_json
        assert f'"request_id":"{request_id}"' in response.body.decode().replace(" ", "")
    return response.status, request_id


def wait_for_line(path: Path, pattern: str, timeout: float = 5) -> str:
    """The first line of ``path`` matching ``pattern`` (logs are written asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text(errors="replace") if path.exists() else ""
        found = re.search(f"^.*{pattern}.*$", text, re.M)
        if found:
            return found.group(0)
        if time.monotonic() > deadline:
            raise AssertionError(f"no line matching {pattern!r} in {path}:\n{text[-2000:]}")
        time.sleep(0.1)


def assert_followed(nginx: NginxServer, gunicorn_log: Path, status: int, rid: str) -> None:
    nginx_line = wait_for_line(nginx.access_log, f"request_id={rid}")
    assert nginx_line.startswith(f"{CLIENT} "), nginx_line
    assert f'" {status} ' in nginx_line, nginx_line
    access_line = wait_for_line(gunicorn_log, f"request_id={rid} ")
    # The client's address, not nginx's (127.0.0.1) nor nothing (a unix socket).
    assert access_line.startswith(f"{CLIENT} request_id={rid} "), access_line
    assert f'" {status} ' in access_line, access_line


@pytest.mark.parametrize("bind", ["tcp", "unix"])
def test_one_id_from_nginx_to_gunicorn_and_the_error_body(
    bind: str, mariadb: LocalMariaDB, tmp_path: Path
) -> None:
    log = tmp_path / "gunicorn.log"
    env = {
        "DATABASE_URL": mariadb.url,
        "DB_IDLE_TIMEOUT": str(WAIT_TIMEOUT),
        "GUNICORN_ACCESSLOG": "-",
    }
    if bind == "unix":
        env["GUNICORN_BIND"] = f"unix:{tmp_path / 'gunicorn.sock'}"
    server = GunicornServer(env, log)
    upstream = env["GUNICORN_BIND"] if bind == "unix" else f"127.0.0.1:{server.port}"
    with NginxServer(tmp_path / "nginx", upstream) as nginx:
        if bind == "unix":
            server.url = nginx.url  # wait for it through nginx: 502 until it listens
        server.start()
        try:
            cases = [
                (b"GET /nope HTTP/1.1", b"", 404),
                (b"POST /notes HTTP/1.1", b'{"text": "x\\ud800y"}', 400),
                (b"DELETE / HTTP/1.1", b"", 405),
                (b"GET / HTTP/1.1", b"", 200),
            ]
            for line, body, expected in cases:
                status, rid = request_from_client(nginx, line, body)
                assert status == expected
                assert_followed(nginx, log, status, rid)
        finally:
            server.stop()


def test_the_apps_own_log_line_carries_the_id_and_the_client(
    start_app: AppFactory, tmp_path: Path
) -> None:
    app = start_app(port=free_port(), GUNICORN_ACCESSLOG="-")  # no database there
    with NginxServer(tmp_path / "nginx", f"127.0.0.1:{app.port}") as nginx:
        status, rid = request_from_client(nginx, b"GET / HTTP/1.1")
    assert status == 503
    line = wait_for_line(app.log_path, "database unavailable")
    assert line.endswith(f"request_id={rid} client={CLIENT}"), line


def test_forwarded_for_is_taken_only_from_a_trusted_proxy(start_app: AppFactory) -> None:
    """A peer outside forwarded_allow_ips cannot name another client."""
    app = start_app(GUNICORN_ACCESSLOG="-", GUNICORN_FORWARDED_ALLOW_IPS="10.9.9.9")
    headers = {"X-Forwarded-For": "203.0.113.9", "X-Request-Id": "given-by-the-client"}
    assert requests.get(f"{app.url}/nope", headers=headers, timeout=10).status_code == 404
    forged = {"X-Forwarded-For": "203.0.113.9", "X-Request-Id": "bad id; forged=1"}
    answer = requests.get(f"{app.url}/nope", headers=forged, timeout=10).json()
    assert re.fullmatch(r"[0-9a-f]{32}", answer["request_id"])  # a new one, not the bad one
    line = wait_for_line(app.log_path, "request_id=given-by-the-client ")
    assert line.startswith("127.0.0.1 request_id=given-by-the-client "), line
    text = app.log_path.read_text()
    assert "203.0.113.9" not in text and "forged=1" not in text


def test_the_middleware_trusts_a_unix_socket_peer_and_the_last_hop_only() -> None:
    seen: dict[str, str] = {}

    def wsgi(environ: dict[str, str], start_response: object) -> list[bytes]:
        seen["addr"] = environ["REMOTE_ADDR"]
        return []

    middleware = ProxyHeaders(wsgi, ["10.0.0.0/8"])
    cases = [
        ("", "6.6.6.6, 192.0.2.1", "192.0.2.1"),  # unix socket: trusted; last hop only
        ("10.1.2.3", "2001:db8::1", "2001:db8::1"),
        ("192.0.2.7", "6.6.6.6", "192.0.2.7"),  # not a trusted proxy
        ("10.1.2.3", "not-an-address", "10.1.2.3"),
    ]
    for peer, forwarded, expected in cases:
        middleware({"REMOTE_ADDR": peer, "HTTP_X_FORWARDED_FOR": forwarded}, None)
        assert seen["addr"] == expected, (peer, forwarded)
