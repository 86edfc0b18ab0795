"""The delaying relay the bench puts between the app and MariaDB (harness/delay.py): every
byte arrives, in order, never before its delay each way; a close is passed on."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from harness.delay import DelayRelay


@pytest.fixture
def echo() -> Iterator[int]:
    """A TCP echo server's port."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield listener.getsockname()[1]
    listener.close()


def received(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, f"closed after {len(data)} of {size} bytes"
        data += chunk
    return data


@pytest.mark.parametrize("delay_us", [0, 2000])
def test_every_byte_comes_back_in_order_and_never_early(echo: int, delay_us: int) -> None:
    with DelayRelay("127.0.0.1", echo) as relay:
        relay.set_delay(delay_us)
        with socket.create_connection(("127.0.0.1", relay.port)) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for size in (1, 100, 300_000):  # the last one spans many chunks
                message = os.urandom(size)
                started = time.perf_counter()
                sock.sendall(message)
                assert received(sock, size) == message
                # Held once each way: a round trip can be slower, never faster.
                assert time.perf_counter() - started >= 2 * delay_us / 1e6


def test_a_new_delay_applies_to_open_connections_and_a_close_is_passed_on(echo: int) -> None:
    with (
        DelayRelay("127.0.0.1", echo) as relay,
        socket.create_connection(("127.0.0.1", relay.port)) as sock,
    ):
        sock.sendall(b"ping")
        assert received(sock, 4) == b"ping"
        relay.set_delay(50_000)
        started = time.perf_counter()
        sock.sendall(b"pong")
        assert received(sock, 4) == b"pong"
        assert time.perf_counter() - started >= 0.1
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(1) == b"", "the echo server's close came back through the relay"
