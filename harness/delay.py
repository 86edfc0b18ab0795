"""A network hop on loopback: a TCP relay that holds every byte for a set one-way delay,
each way, in order.

This kernel's traffic control has no ``netem``, so a hop's latency cannot come from ``tc``;
the relay adds it in user space instead. It runs in a process of its own (its threads
never share a GIL with the bench that loads the servers) and takes its delay from its
standard input, so the connections a pool already holds see a new delay at once::

    relay = DelayRelay("127.0.0.1", 3306)      # relay.port forwards to 127.0.0.1:3306
    relay.set_delay(250)                       # microseconds, each way
    relay.close()

The relay itself costs a few tens of microseconds per passage on top of the delay: the
bench measures the round trip it really gives (:func:`round_trip_us`) and reports that
beside the delay asked for.
"""

from __future__ import annotations

import contextlib
import ctypes
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from types import TracebackType

import pymysql

PR_SET_TIMERSLACK = 29
# Linux's SO_TIMESTAMPNS (asm-generic/socket.h; Python's socket module does not name it):
# each received chunk comes with the kernel's time of arrival, a struct timespec.
SO_TIMESTAMPNS = 35


class DelayRelay:
    """The relay's process: 127.0.0.1:``port`` forwards to ``host``:``target_port``."""

    def __init__(self, host: str, target_port: int):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "harness.delay", host, str(target_port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=_root(),
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("port "):
            self.close()
            raise RuntimeError(f"the delay relay did not start: {line!r}")
        self.port = int(line.split()[1])
        self.delay_us = 0

    def set_delay(self, one_way_us: int) -> None:
        """Hold every byte ``one_way_us`` microseconds each way from now on."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{one_way_us}\n")
        self.proc.stdin.flush()
        if self.proc.stdout.readline().strip() != f"delay {one_way_us}":
            raise RuntimeError("the delay relay did not take its new delay")
        self.delay_us = one_way_us

    def close(self) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> DelayRelay:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def round_trip_us(
    host: str, port: int, user: str, password: str, ssl_ca: str | None = None, count: int = 200
) -> float:
    """The median time of ``SELECT 1`` on one open connection to ``host``:``port``, in
    microseconds: the round trip a request's statement pays there."""
    conn = pymysql.connect(host=host, port=port, user=user, password=password, ssl_ca=ssl_ca)
    try:
        times = []
        with conn.cursor() as cur:
            for _ in range(count):
                started = time.perf_counter_ns()
                cur.execute("SELECT 1")
                cur.fetchall()
                times.append(time.perf_counter_ns() - started)
        return statistics.median(times) / 1000
    finally:
        conn.close()


def _root() -> str:
    from harness import ROOT

    return str(ROOT)


# The relay's process.


def _forward(src: socket.socket, dst: socket.socket, delay_ns: list[int]) -> None:
    """One way of one connection, in one thread: each chunk is sent when it is due, counted
    from the moment the kernel received it (SO_TIMESTAMPNS), so a chunk that waited in the
    socket while the one before it was held is not held twice. Chunks are due in the order
    they arrived: holding them one after another keeps their order and their timing."""
    try:
        while True:
            data, ancillary, _, _ = src.recvmsg(65536, socket.CMSG_SPACE(16))
            arrived = time.time_ns()
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    seconds, nanoseconds = struct.unpack("qq", value[:16])
                    arrived = seconds * 1_000_000_000 + nanoseconds
            wait = arrived + delay_ns[0] - time.time_ns()
            if wait > 0:
                time.sleep(wait / 1e9)
            if not data:  # the peer closed: pass it on, as a FIN would be
                dst.shutdown(socket.SHUT_WR)
                return
            dst.sendall(data)
    except OSError:
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _serve(host: str, target_port: int) -> None:
    # The kernel's default 50 µs of timer slack would add itself to every short sleep.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)
    delay_ns = [0]  # shared by every direction: a new delay applies to open connections
    listener = socket.create_server(("127.0.0.1", 0))

    def accept() -> None:
        while True:
            client, _ = listener.accept()
            try:
                upstream = socket.create_connection((host, target_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=_forward, args=(src, dst, delay_ns), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    print(f"port {listener.getsockname()[1]}", flush=True)
    for line in sys.stdin:
        delay_ns[0] = int(line) * 1000
        print(f"delay {int(line)}", flush=True)
    # Standard input closed: the relay's owner is done with it.


if __name__ == "__main__":
    _serve(sys.argv[1], int(sys.argv[2]))
