"""Every error a client can meet is JSON, whichever layer answers it.

A real nginx (harness/nginx.py) serves the canonical site in front of a real
Gunicorn and MariaDB; requests are raw bytes, as an attacker sends them.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from harness import free_port
from harness.gunicorn import GunicornServer
from harness.nginx import NginxServer, RawResponse, send_raw

pytestmark = pytest.mark.slow

HOST = b"Host: x\r\n"
CLOSE = b"Connection: close\r\n"


@pytest.fixture(scope="module")
def gunicorn(kit_server: GunicornServer) -> str:
    """The address nginx proxies to."""
    return f"127.0.0.1:{kit_server.port}"


@pytest.fixture(scope="module")
def nginx(gunicorn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NginxServer]:
    with NginxServer(tmp_path_factory.mktemp("nginx"), gunicorn) as server:
        yield server


def assert_json_error(response: RawResponse, status: int) -> dict[str, str]:
    shown = (response.status, response.headers, response.body[:300])
    assert response.status == status, shown
    assert response.is_json, shown
    body: dict[str, str] = json.loads(response.body)
    assert body["error"] and body["message"], body
    assert body["request_id"] == response.headers["x-request-id"], shown
    return body


# What the issue measured as HTML (from nginx or from Gunicorn behind it), and what else
# nginx refuses itself. The id names the layer that answered before the change.
ERRORS = [
    ("nginx-trace", b"TRACE / HTTP/1.1\r\n" + HOST + b"\r\n", 405),
    ("nginx-bad-request-line", b"GET\r\n\r\n", 400),
    ("nginx-lowercase-method", b"get / HTTP/1.1\r\n" + HOST + b"\r\n", 400),
    ("nginx-http-2.0", b"GET / HTTP/2.0\r\n" + HOST + b"\r\n", 505),
    ("nginx-uri-9000", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n" + HOST + b"\r\n", 414),
    ("nginx-header-9000", b"GET / HTTP/1.1\r\n" + HOST + b"X-A: " + b"a" * 9000 + b"\r\n\r\n", 431),
    ("nginx-te-gzip", b"POST /notes HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: gzip\r\n\r\n", 501),
    ("nginx-no-host", b"GET / HTTP/1.1\r\n\r\n", 400),
    ("nginx-options-asterisk", b"OPTIONS * HTTP/1.1\r\n" + HOST + b"\r\n", 400),
    (
        "nginx-two-content-lengths",
        b"POST /notes HTTP/1.1\r\n" + HOST + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        400,
    ),
    (
        "nginx-bad-chunk",
        b"POST /notes HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
        400,
    ),
    (
        "nginx-body-over-1m",
        b"POST /notes HTTP/1.1\r\n" + HOST + b"Content-Length: 2000000\r\n" + CLOSE + b"\r\n",
        413,
    ),
    ("nginx-internal-location", b"GET /.idle-proof-error HTTP/1.1\r\n" + HOST + b"\r\n", 404),
    ("gunicorn-uri-5000", b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\n" + HOST + b"\r\n", 414),
    ("gunicorn-uri-bytes", b"GET /caf\xc3\xa9 HTTP/1.1\r\n" + HOST + b"\r\n", 400),
    ("gunicorn-two-letter-method", b"AB / HTTP/1.1\r\n" + HOST + b"\r\n", 501),
    ("gunicorn-21-letter-method", b"A" * 21 + b" / HTTP/1.1\r\n" + HOST + b"\r\n", 501),
    (
        "gunicorn-control-char-content-type",
        b"POST /notes HTTP/1.1\r\n" + HOST + b"Content-Type: application/json\x01\r\n"
        b"Content-Length: 2\r\n\r\n{}",
        400,
    ),
    # The app's own errors pass through nginx untouched.
    ("app-not-found", b"GET /nope HTTP/1.1\r\n" + HOST + b"\r\n", 404),
    ("app-method-not-allowed", b"PUT / HTTP/1.1\r\n" + HOST + b"Content-Length: 0\r\n\r\n", 405),
    (
        "app-bad-note",
        b"POST /notes HTTP/1.1\r\n" + HOST + b"Content-Type: application/json\r\n"
        b'Content-Length: 19\r\n\r\n{"text":"x\\ud800y"}',
        400,
    ),
]


@pytest.mark.parametrize(
    ("request_bytes", "status"), [c[1:] for c in ERRORS], ids=[c[0] for c in ERRORS]
)
def test_every_error_is_json_with_the_request_id(
    nginx: NginxServer, request_bytes: bytes, status: int
) -> None:
    assert_json_error(send_raw(nginx.port, request_bytes), status)


# What Gunicorn refused with an HTML 400/431 while nginx let it through: nginx now passes
# only the headers the app reads, so these are served.
SERVED = [
    ("100-headers", b"".join(b"X-%d: y\r\n" % i for i in range(100))),
    ("control-char-header", b"X-A: a\x01b\r\n"),
    ("duplicate-content-type", b"Content-Type: text/plain\r\nContent-Type: text/plain\r\n"),
    ("underscore-header", b"X_A: 1\r\n"),
    ("expect-unknown", b"Expect: something\r\n"),
]


@pytest.mark.parametrize("headers", [c[1] for c in SERVED], ids=[c[0] for c in SERVED])
def test_headers_gunicorn_would_refuse_never_reach_it(nginx: NginxServer, headers: bytes) -> None:
    response = send_raw(nginx.port, b"GET / HTTP/1.1\r\n" + HOST + headers + b"\r\n")
    assert response.status == 200, (response.status, response.body[:300])
    assert response.is_json


def test_nginx_refuses_the_request_line_before_gunicorn_would(nginx: NginxServer) -> None:
    """The longest line nginx takes reaches the app; one byte more is nginx's JSON 414."""

    def line_of(length: int) -> bytes:
        path = b"/" + b"a" * (length - len(b"GET  HTTP/1.1") - 1)
        return b"GET " + path + b" HTTP/1.1\r\n" + HOST + b"\r\n"

    longest = 4094  # Gunicorn's limit_request_line, without the CRLF
    at_limit = send_raw(nginx.port, line_of(longest))
    assert assert_json_error(at_limit, 404)["error"] == "not_found"  # the app's 404
    assert assert_json_error(send_raw(nginx.port, line_of(longest + 1)), 414)["error"] == (
        "uri_too_long"
    )


def test_405_carries_allow_through_nginx(nginx: NginxServer, gunicorn: str) -> None:
    for url in (nginx.url, f"http://{gunicorn}"):
        response = requests.delete(f"{url}/notes", timeout=10)
        assert response.status_code == 405
        assert response.headers["Content-Type"] == "application/json"
        assert set(response.headers["Allow"].replace(" ", "").split(",")) == {"POST", "OPTIONS"}
        assert response.json()["request_id"]


def test_metrics_from_another_address_is_a_json_403(nginx: NginxServer) -> None:
    request_bytes = b"GET /metrics HTTP/1.1\r\n" + HOST + CLOSE + b"\r\n"
    assert assert_json_error(send_raw(nginx.port, request_bytes, source="127.0.0.2"), 403)
    assert send_raw(nginx.port, request_bytes).status == 200


def test_no_app_is_a_json_502_with_retry_after(tmp_path: Path) -> None:
    with NginxServer(tmp_path, f"127.0.0.1:{free_port()}") as nginx:
        response = send_raw(nginx.port, b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
    assert assert_json_error(response, 502)["error"] == "bad_gateway"
    assert response.headers["retry-after"] == "2"


def test_an_app_that_never_answers_is_a_json_504(tmp_path: Path) -> None:
    """proxy_read_timeout cut to 1 s here (the kit's is above Gunicorn's timeout)."""
    silent = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    acceptor = threading.Thread(target=lambda: accepted.append(silent.accept()[0]), daemon=True)
    acceptor.start()
    conf = "server_name _;\nproxy_connect_timeout 1s;\nproxy_read_timeout 1s;\n"
    try:
        upstream = f"127.0.0.1:{silent.getsockname()[1]}"
        with NginxServer(tmp_path, upstream, server_conf_text=conf) as nginx:
            response = send_raw(nginx.port, b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
    finally:
        silent.close()
        for conn in accepted:
            conn.close()
    assert assert_json_error(response, 504)["error"] == "gateway_timeout"


# Any request line, headers and body: whatever the status, an error is JSON. A
# well-formed request with up to three parts replaced by arbitrary ones, so that many
# reach Gunicorn and the app.
token = st.text(st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcxyz_-#!."), max_size=24)
printable = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40)
no_newline = st.binary(max_size=40).map(lambda b: b.replace(b"\n", b""))
odd_parts = {
    "method": st.sampled_from([b"PUT", b"DELETE", b"OPTIONS", b"TRACE", b"PATCH", b"HEAD"])
    | token.map(str.encode),
    "target": st.sampled_from([b"/nope", b"/metrics", b"*", b"", b"//x", b"/notes?x=1#y"])
    | printable.map(lambda t: b"/" + t.encode())
    | no_newline.map(lambda b: b"/" + b),
    "version": st.sampled_from([b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.9", b"HTTP/11", b"x", b""]),
    "host": st.sampled_from([b"", b"Host: a\x7fb", b"Host: x\r\nHost: y"])
    | no_newline.map(lambda b: b"Host: " + b),
    "content_type": st.sampled_from([b"text/plain", b"application/json; charset=latin-1"])
    | printable.map(str.encode)
    | no_newline,
    "framing": st.sampled_from(
        [
            b"Content-Length: 99",
            b"Content-Length: -1",
            b"Transfer-Encoding: chunked",
            b"Transfer-Encoding: gzip",
            b"Expect: 100-continue",
            b"Expect: x",
        ]
    ),
    "header": st.tuples(
        token.filter(bool).map(str.encode) | no_newline.map(lambda b: b.replace(b":", b"")),
        printable.map(str.encode) | no_newline,
    ).map(lambda nv: nv[0] + b": " + nv[1]),
    "body": st.binary(max_size=60),
}


@st.composite
def requests_with_odd_parts(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """(method, the request's bytes)."""
    odd = draw(st.lists(st.sampled_from(sorted(odd_parts)), max_size=3, unique=True))
    part = {name: draw(odd_parts[name]) for name in odd}
    body = part.get("body", b'{"text": "fuzz"}')
    method = part.get("method", b"POST")
    headers = [
        part.get("host", b"Host: x"),
        b"Content-Type: " + part.get("content_type", b"application/json"),
        part.get("framing", b"Content-Length: %d" % len(body)),
        part.get("header", b"Connection: close"),
    ]
    line = method + b" " + part.get("target", b"/notes") + b" " + part.get("version", b"HTTP/1.1")
    return method, b"\r\n".join([line, *headers]) + b"\r\n\r\n" + body


@settings(
    max_examples=600,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(request=requests_with_odd_parts())
# A method nginx takes and Gunicorn refuses, on the location that only loopback may ask.
@example(
    request=(
        b"A",
        b"A /metrics HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 16\r\nConnection: close\r\n\r\n{"text": "fuzz"}',
    )
)
def test_any_request_gets_json_for_any_error(
    nginx: NginxServer, request: tuple[bytes, bytes]
) -> None:
    method, request_bytes = request
    # An incomplete request is given up after 0.2 s, not nginx's 10 s body timeout.
    response = send_raw(nginx.port, request_bytes, end_after=0.2)
    event(f"status {response.status}")  # pytest --hypothesis-show-statistics
    if response.status >= 400 and method == b"HEAD":
        assert response.is_json and not response.body  # a HEAD answer has no body
    elif response.status >= 400:
        assert_json_error(response, response.status)
    elif response.status == 0 and response.body:
        json.loads(response.body)  # an HTTP/0.9 answer: the body alone
