"""``DB_NET_TIMEOUT`` at its floor on a healthy LAN that is as busy as this machine can make
it: does the kernel ever give up on a live database host?

``DB_NET_TIMEOUT`` is how long the kernel waits for the database host's kernel to
acknowledge data or answer a keepalive probe before it declares the host dead
(:func:`idleproof.connection.watch_for_dead_peer`). Keepalive counts whole seconds: one
second of silence, then one probe that must be answered within a second, so 2 s is the
lowest value that means anything. A live host's kernel answers within a round trip
however slow MariaDB is, so the question is only whether a LAN ever goes silent that
long while nothing is wrong.

On a converged test fleet whose app hosts run with ``DB_NET_TIMEOUT=2``, for
``seconds``: GET and POST through web1, while db1's CPU is saturated (busy loops and a
disk being filled and synced) and app2 pulls 4 MiB results from db1's MariaDB as fast as
the bridge carries them. Counted: the requests and the non-2xx; the connections the kit
found dead with the cause ``network`` (both app hosts' ``/metrics``); and, sampled every
second on app1's sockets to db1 (``ss -ti``), the worst smoothed round trip and the
retransmissions.
"""

from __future__ import annotations

import re
import time
from typing import Any

from bench.progress import Progress
from harness.fleet import Fleet
from harness.incident import APP_ENV, RELEASE, host_env, load

FLOOR = 2

_BULK = f"""
import pymysql
from sqlalchemy.engine import make_url
pairs = (l.split("=", 1) for l in open({APP_ENV!r}).read().splitlines() if "=" in l)
env = {{k: v for k, v in pairs if not k.startswith("#")}}
url = make_url(env["DATABASE_URL"])
conn = pymysql.connect(host=url.host, port=url.port or 3306, user=url.username,
                       password=url.password, ssl_ca=env["DB_TLS_CA"] or None)
with conn.cursor() as cur:
    while True:
        cur.execute("SELECT REPEAT('x', 4194304)")
        cur.fetchall()
"""
_FILL = "while :; do dd if=/dev/zero of=/var/tmp/bench-fill bs=1M count=256 conv=fsync; done"
_STRESS = {
    "db1": [
        ("bench-cpu-1", ["python3", "-c", "while True: pass"]),
        ("bench-cpu-2", ["python3", "-c", "while True: pass"]),
        ("bench-disk", ["sh", "-c", _FILL]),
    ],
    "app2": [("bench-bulk", [f"{RELEASE}/venv/bin/python", "-c", _BULK])],
}
_RTT = re.compile(r"\brtt:([\d.]+)/")
_RETRANS = re.compile(r"\bretrans:\d+/(\d+)")


def lost_to_network(fleet: Fleet, host: str) -> float:
    """Connections the kit on ``host`` found dead with cause network (its /metrics)."""
    url = f"http://{fleet.address(host)}:8000/metrics"
    read = f"import urllib.request as u; print(u.urlopen({url!r}, timeout=10).read().decode())"
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in fleet.run(host, "python3", "-c", read).stdout.splitlines()
        if 'cause="network"' in line and not line.startswith("#")
    )


def sockets_to_db(fleet: Fleet, host: str) -> list[tuple[float, int]]:
    """(smoothed round trip ms, retransmissions) of each TCP connection from ``host`` to db1."""
    out = fleet.run(host, "ss", "-tin", "dst", fleet.address("db1"), "dport", "=", ":3306").stdout
    found = []
    for line in out.splitlines():
        rtt = _RTT.search(line)
        if rtt:
            retrans = _RETRANS.search(line)
            found.append((float(rtt.group(1)), int(retrans.group(1)) if retrans else 0))
    return found


def healthy_busy_lan(fleet: Fleet, progress: Progress, seconds: int = 60) -> dict[str, Any]:
    for host in ("app1", "app2"):
        value = host_env(fleet, host)["DB_NET_TIMEOUT"]
        if float(value) != FLOOR:
            raise RuntimeError(f"{host} runs DB_NET_TIMEOUT={value}, not {FLOOR}: converge so")
    before = {h: lost_to_network(fleet, h) for h in ("app1", "app2")}
    worst_rtt, retrans = 0.0, 0
    for host, units in _STRESS.items():
        for unit, argv in units:
            fleet.run(host, "systemd-run", f"--unit={unit}", "--quiet", *argv)
    try:
        with load(fleet.url, threads=2) as traffic:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                sampled = sockets_to_db(fleet, "app1")
                worst_rtt = max([worst_rtt, *(rtt for rtt, _ in sampled)])
                retrans = max(retrans, sum(r for _, r in sampled))
                time.sleep(1)
    finally:
        for host, units in _STRESS.items():
            fleet.run(host, "systemctl", "stop", *(unit for unit, _ in units), check=False)
        fleet.run("db1", "rm", "-f", "/var/tmp/bench-fill", check=False)
    lost = sum(lost_to_network(fleet, h) - before[h] for h in before)
    figures = {
        "net_timeout_s": FLOOR,
        "seconds": seconds,
        "requests": len(traffic.answers),
        "non_2xx": len(traffic.failures),
        "lost_to_network": int(lost),
        "worst_rtt_ms": worst_rtt,
        "retransmissions": retrans,
    }
    progress(f"DB_NET_TIMEOUT={FLOOR} on a busy LAN: {figures}")
    return figures
