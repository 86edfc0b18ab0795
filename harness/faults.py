"""Ways a pooled MySQL connection dies, produced for real on loopback.

* :class:`StallProxy` - a TCP proxy that can stop forwarding the connections it holds
  without closing them: the peer that stalls (a hung proxy, a frozen VM).
* :func:`vanish` - iptables DROP on the established connections to a port, both ways:
  the peer that silently vanished (a NAT or firewall entry that expired, no RST, no FIN).
  New connections use new ports and get through, as they do after a NAT entry expires.
* :func:`partition` - iptables DROP on every packet to or from a port, new connections
  included: the host cut off (or powered off) while the app keeps trying.
* :meth:`StallProxy.retarget` - new connections go to another server, the open ones stay:
  a virtual IP or a database name that moved to a new primary after a failover.
"""

from __future__ import annotations

import contextlib
import select
import socket
import subprocess
import threading
from collections.abc import Iterator


class StallProxy:
    """Forwards 127.0.0.1:<port> to a target; ``stall()`` freezes the current connections."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1"):
        self.target = (target_host, target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: list[_Pair] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            pair = _Pair(client, upstream)
            with self._lock:
                self._pairs.append(pair)
            threading.Thread(target=pair.pump, daemon=True).start()

    def retarget(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        """Send new connections to another server; the open ones keep their old one."""
        self.target = (target_host, target_port)

    def stall(self) -> int:
        """Stop forwarding every connection open now; returns how many. New ones still work."""
        with self._lock:
            live = [p for p in self._pairs if not p.done]
            for pair in live:
                pair.stalled.set()
            return len(live)

    def close(self) -> None:
        self._closed = True
        self.listener.close()
        with self._lock:
            for pair in self._pairs:
                pair.close()


class _Pair:
    def __init__(self, client: socket.socket, upstream: socket.socket):
        self.client, self.upstream = client, upstream
        self.stalled = threading.Event()
        self.done = False

    def pump(self) -> None:
        peers = {self.client: self.upstream, self.upstream: self.client}
        try:
            while not self.stalled.is_set():
                readable, _, _ = select.select(list(peers), [], [], 0.05)
                if self.stalled.is_set():
                    break
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
            # Stalled: leave both sockets open (close() ends them) and never touch them again.
        except (OSError, ValueError):  # ValueError: select() on a socket closed meanwhile
            return
        finally:
            if not self.stalled.is_set():
                self.close()

    def close(self) -> None:
        self.done = True
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.close()


def established_client_ports(server_port: int) -> list[int]:
    """Local ports of the TCP connections to 127.0.0.1:<server_port> that are open now."""
    out = subprocess.run(
        ["ss", "-Htn", "state", "established", "dst", f"127.0.0.1:{server_port}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    ports = []
    for line in out.splitlines():
        local = line.split()[-2]
        ports.append(int(local.rsplit(":", 1)[1]))
    return sorted(set(ports))


@contextlib.contextmanager
def _dropping(rules: list[list[str]]) -> Iterator[None]:
    """The iptables DROP rules in force for the block, removed afterwards even on failure."""
    added = []
    try:
        for rule in rules:
            subprocess.run(["iptables", "-w", "-I", *rule, "-j", "DROP"], check=True)
            added.append(rule)
        yield
    finally:
        for rule in added:
            subprocess.run(["iptables", "-w", "-D", *rule, "-j", "DROP"], check=False)


@contextlib.contextmanager
def vanish(server_port: int) -> Iterator[int]:
    """Silently drop every packet of the connections to ``server_port`` open right now.

    Yields how many connections vanished; the rules are removed on exit.
    """
    ports = established_client_ports(server_port)
    # Both directions cross INPUT on loopback; DROP there, so senders see no error.
    rules = [
        ["INPUT", "-i", "lo", "-p", "tcp", direction, str(port)]
        for port in ports
        for direction in ("--sport", "--dport")
    ]
    with _dropping(rules):
        yield len(ports)


@contextlib.contextmanager
def partition(server_port: int) -> Iterator[None]:
    """Drop every packet to and from ``server_port`` on loopback, new connections too."""
    rules = [
        ["INPUT", "-i", "lo", "-p", "tcp", direction, str(server_port)]
        for direction in ("--dport", "--sport")
    ]
    with _dropping(rules):
        yield
