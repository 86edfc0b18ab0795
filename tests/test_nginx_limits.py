"""One client cannot take the site down: slowloris, floods and slow bodies from one address.

A real nginx (harness/nginx.py) with the canonical site and the nginx.conf settings
the Ansible role manages, in front of a real Gunicorn and MariaDB. The attacker uses
127.0.0.2 (Linux routes all of 127/8 to loopback), the other client 127.0.0.1 or
127.0.0.3. The slowloris runs against the naive setup too (Debian's nginx.conf, a plain
proxy site), which must fail.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from harness.gunicorn import GunicornServer
from harness.nginx import SITE, NginxServer, role_main_settings, send_raw
from harness.slowloris import Slowloris, open_files
from tests.helpers import report

pytestmark = pytest.mark.slow

ATTACKER = "127.0.0.2"
OTHER = "127.0.0.3"
SLOWLORIS_SOCKETS = 2000

# Debian's nginx.conf and a plain proxy site: what the issue measured.
NAIVE_SITE = """
upstream naive_app { include /etc/nginx/idle-proof/upstream.conf; }
server {
    include /etc/nginx/idle-proof/server.conf;
    location / { proxy_pass http://naive_app; }
}
"""
DEBIAN_WORKER_CONNECTIONS = 768
# What nginx logs when a new connection finds no free slot: with ", reusing connections"
# it closed an idle one to make room (an attacker's socket that had sent nothing yet);
# without, it refused the new one.
NOT_ENOUGH = "worker_connections are not enough"
NONE_TO_REUSE = f"{NOT_ENOUGH}(?!, reusing)"
# Ample for 2000 sockets to reach nginx, however loaded the machine.
FILL_SECONDS = 30


@pytest.fixture(scope="module")
def gunicorn(kit_server: GunicornServer) -> str:
    """The address nginx proxies to."""
    return f"127.0.0.1:{kit_server.port}"


@pytest.fixture(scope="module", autouse=True)
def enough_files() -> Iterator[None]:
    """The attacker's 2000 sockets live in this process."""
    with open_files(SLOWLORIS_SOCKETS + 1000):
        yield


def probe_while_attacked(url: str, seconds: float) -> Counter[str]:
    """GET / from 127.0.0.1 every 0.25 s, each on a new connection: the outcomes."""
    outcomes: Counter[str] = Counter()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            outcomes[str(requests.get(f"{url}/", timeout=3).status_code)] += 1
        except requests.RequestException as exc:
            outcomes[type(exc).__name__] += 1
        time.sleep(0.25)
    return outcomes


def slowloris_against(
    nginx: NginxServer, seconds: float, until_full: bool = False, until_cut_off: bool = False
) -> tuple[Counter[str], Slowloris, float]:
    """Probe ``nginx`` for ``seconds`` under the attack: the outcomes, the attack, and
    how long the attack took to start (with ``until_full``: until every nginx worker has
    refused a connection for want of a slot it could free; on a loaded machine that can
    take longer than the 2 s otherwise given, and a probe sent while a worker can still
    make room would measure an nginx that was only half attacked; with
    ``until_cut_off``, the attack then goes on, for at most FILL_SECONDS, until the server
    has closed as many sockets as the attack holds: on a loaded machine the kernel drops
    some SYNs of the first burst, and their retries reach nginx seconds late)."""
    with Slowloris("127.0.0.1", nginx.port, ATTACKER, SLOWLORIS_SOCKETS) as attack:
        started = time.monotonic()
        time.sleep(2)  # all sockets connected and started
        while until_full and len(nginx.workers_logging(NONE_TO_REUSE)) < nginx.worker_processes:
            assert time.monotonic() - started < FILL_SECONDS, (
                f"the slowloris did not fill the connections of all {nginx.worker_processes}"
                f" nginx workers in {FILL_SECONDS} s (full: workers "
                f"{sorted(nginx.workers_logging(NONE_TO_REUSE))}; held {attack.held}, "
                f"{attack.connect_failures} failed to connect)"
            )
            time.sleep(0.25)
        took = time.monotonic() - started
        outcomes = probe_while_attacked(nginx.url, seconds)
        deadline = time.monotonic() + FILL_SECONDS
        while until_cut_off and attack.closed_by_server < attack.count:
            if time.monotonic() > deadline:
                break  # the caller's assertion says how many were cut off
            time.sleep(0.25)
    return outcomes, attack, took


def test_a_slowloris_from_one_address_does_not_stop_another(
    gunicorn: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    naive = NginxServer(
        tmp_path / "naive",
        gunicorn,
        site_text=NAIVE_SITE,
        worker_connections=DEBIAN_WORKER_CONNECTIONS,
        worker_rlimit_nofile=0,
    )
    with naive:
        naive_outcomes, naive_attack, filled_in = slowloris_against(
            naive, seconds=6, until_full=True
        )
    not_enough = naive.error_count(NOT_ENOUGH)
    report(
        request,
        "limits",
        f"naive (768 connections, 60 s header timeout): GET / from 127.0.0.1 {dict(naive_outcomes)}"
        f"; slowloris opened {naive_attack.opened} and filled nginx in {filled_in:.1f} s, nginx "
        f"logged 'worker_connections are not enough' {not_enough} times",
    )

    with NginxServer(tmp_path / "kit", gunicorn) as kit:
        # Longer than the header timeout (10 s): the attack is cut off and comes back.
        kit_outcomes, kit_attack, _ = slowloris_against(kit, seconds=14, until_cut_off=True)
    kit_not_enough = kit.error_count(NOT_ENOUGH)
    timed_out = kit.error_count("client timed out")
    report(
        request,
        "limits",
        f"kit ({kit.worker_connections} connections, 10 s header timeout): GET / from "
        f"127.0.0.1 {dict(kit_outcomes)}; slowloris opened {kit_attack.opened}, "
        f"{kit_attack.closed_by_server} closed by nginx (header timeout: {timed_out}), "
        f"'worker_connections are not enough' {kit_not_enough} times",
    )

    # The naive setup fails (the issue: every GET / failed), the kit serves every one.
    assert sum(naive_outcomes.values()) - naive_outcomes["200"] > naive_outcomes["200"]
    assert not_enough > 0
    assert set(kit_outcomes) == {"200"}, kit_outcomes
    assert kit_outcomes["200"] >= 20
    assert kit_not_enough == 0
    # Every attacking socket was cut off by the header timeout, not served.
    assert kit_attack.closed_by_server >= SLOWLORIS_SOCKETS


@pytest.fixture(scope="module")
def nginx(gunicorn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NginxServer]:
    with NginxServer(tmp_path_factory.mktemp("nginx"), gunicorn) as server:
        yield server


def test_a_flood_from_one_address_is_cut_to_its_rate_with_json_429s(
    nginx: NginxServer, request: pytest.FixtureRequest
) -> None:
    get = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    # Ten connections at a time, so the flood outruns 20 per second however slowly this
    # machine answers each request; the other address's requests go among them.
    sources = [OTHER if i % 10 == 0 else ATTACKER for i in range(330)]
    with ThreadPoolExecutor(max_workers=10) as pool:
        responses = list(pool.map(lambda source: send_raw(nginx.port, get, source), sources))
    flooded = [r for r, source in zip(responses, sources, strict=True) if source == ATTACKER]
    flood = Counter(response.status for response in flooded)
    too_many = next((response for response in flooded if response.status == 429), None)
    others = Counter(
        r.status for r, source in zip(responses, sources, strict=True) if source == OTHER
    )
    loopback = Counter(
        send_raw(nginx.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").status for _ in range(150)
    )
    report(
        request,
        "limits",
        f"300 GET / from {ATTACKER}, 10 at a time: {dict(flood)}; meanwhile {OTHER}: "
        f"{dict(others)}; 150 from 127.0.0.1 (exempt): {dict(loopback)}",
    )
    assert too_many is not None and flood[200] >= 60  # the burst, then 20 per second
    assert flood[429] > 100
    assert too_many.is_json and too_many.headers["retry-after"] == "1"
    body = json.loads(too_many.body)
    assert body["error"] == "too_many_requests"
    assert body["request_id"] == too_many.headers["x-request-id"]
    assert set(others) == {200}, others
    assert set(loopback) == {200}, loopback


def test_slow_bodies_from_one_address_are_capped_at_32(
    nginx: NginxServer, request: pytest.FixtureRequest
) -> None:
    """Requests whose body never comes hold their slot until client_body_timeout.

    From an address of its own: the flood test's address may still be over its rate.
    """
    slow = "127.0.0.4"
    started = b"POST /notes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    started += b"Content-Length: 100\r\n\r\n{"
    held: list[socket.socket] = []
    refused: Counter[int] = Counter()
    try:
        for _ in range(32):
            sock = socket.create_connection(
                ("127.0.0.1", nginx.port), timeout=5, source_address=(slow, 0)
            )
            sock.sendall(started)
            held.append(sock)
        time.sleep(0.5)  # nginx has read all their headers
        for _ in range(10):
            refused[send_raw(nginx.port, started, source=slow, timeout=5).status] += 1
        other = send_raw(nginx.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", source=OTHER)
        answered = 0
        for sock in held:
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                answered += bool(sock.recv(100))
    finally:
        for sock in held:
            sock.close()
    report(request, "limits", f"32 slow bodies from {slow} held; 10 more: {dict(refused)}")
    assert answered == 0  # the 32 are still waiting for their bodies
    assert refused == Counter({429: 10})
    assert other.status == 200


def test_the_site_documents_the_roles_nginx_conf_values() -> None:
    site = SITE.read_text()
    main = role_main_settings()
    assert f"worker_rlimit_nofile {main['worker_rlimit_nofile']};" in site
    assert f"worker_connections {main['worker_connections']};" in site
