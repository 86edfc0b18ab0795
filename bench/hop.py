"""Across a network hop: the configurations with MariaDB one hop away, where each statement
costs a round trip.

On loopback a round trip costs almost nothing; users put the database on another host.
Here MariaDB sits behind a relay that holds every byte for a set one-way delay each way
(:mod:`harness.delay`), and the same servers are loaded at each delay in turn, the
configurations interleaved: latency from one connection (``wrk -c1``: p50, p99) and
throughput at the throughput phase's load. The round trip the relay really gives is
measured at each delay (``SELECT 1`` on an open connection) and reported beside it.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.configs import ENDPOINTS, THROUGHPUT_WAIT_TIMEOUT, start_app
from bench.load import Served, WrkLoad, measured_run, start_all, stop_all, warm_all
from bench.progress import Progress
from harness.delay import DelayRelay, round_trip_us
from harness.mariadb import LocalMariaDB

# The kit, the textbook fix, the fast unsafe one, and one statement per request.
HOP_CONFIGS = ("kit", "fsa-preping", "fsa-recycle", "floor")
# One-way delays in microseconds: the relay alone, then a LAN's range.
HOP_DELAYS_US = (0, 100, 250, 500)


def across_a_hop(
    db: LocalMariaDB,
    configs: list[str],
    delays_us: list[int],
    load: WrkLoad,
    rounds: int,
    workers: int,
    raw: Path,
    progress: Progress,
    warm_up: int,
) -> dict[str, Any]:
    """Every configuration behind one relay, loaded at each delay; medians of the rounds."""
    runs: dict[str, dict[str, dict[int, list[dict[str, float]]]]] = {
        c: {e: {d: [] for d in delays_us} for e in ENDPOINTS} for c in configs
    }
    trips: dict[int, list[float]] = {d: [] for d in delays_us}
    with DelayRelay("127.0.0.1", db.port) as relay:

        def starter(config: str) -> Callable[[], Served]:
            return lambda: start_app(
                db, config, raw, workers, THROUGHPUT_WAIT_TIMEOUT, relay.port, label=f"hop-{config}"
            )

        servers = start_all({c: starter(c) for c in configs})
        try:
            warm_all(servers, ENDPOINTS, load, warm_up)
            for r in range(rounds):
                order = configs[r % len(configs) :] + configs[: r % len(configs)]
                for delay in delays_us:
                    relay.set_delay(delay)
                    trip = round_trip_us("127.0.0.1", relay.port, db.user, db.password)
                    trips[delay].append(trip)
                    for endpoint, (path, mode) in ENDPOINTS.items():
                        for config in order:
                            run = both(servers[config], db.pid(), path, mode, load)
                            runs[config][endpoint][delay].append(run)
                            progress(
                                f"round {r + 1}/{rounds} {delay:>3} µs {config:<11} {endpoint:<11} "
                                f"p50 {run['p50_ms']:5.2f} ms p99 {run['p99_ms']:5.2f} ms, "
                                f"{run['rps']:5.0f} req/s"
                            )
        finally:
            stop_all(servers)
    return {
        "delays_us": delays_us,
        "round_trip_us": {str(d): round(statistics.median(t)) for d, t in trips.items()},
        "direct_round_trip_us": round(round_trip_us("127.0.0.1", db.port, db.user, db.password)),
        "connections": load.connections,
        "workers": workers,
        "duration": load.duration,
        "rounds": rounds,
        "configs": {
            c: {e: {str(d): latency_medians(rs) for d, rs in per.items()} for e, per in eps.items()}
            for c, eps in runs.items()
        },
    }


def both(
    server: Served, db_pid: int | None, path: str, mode: str, load: WrkLoad
) -> dict[str, float]:
    """Latency from one connection, then throughput at ``load``."""
    one = replace(load, threads=1, connections=1)
    low = measured_run(server.url, server.master_pid, db_pid, path, mode, one)
    busy = measured_run(server.url, server.master_pid, db_pid, path, mode, load)
    errors = low.non2xx + low.socket_errors + busy.non2xx + busy.socket_errors
    return {"p50_ms": low.p50_ms, "p99_ms": low.p99_ms, "rps": busy.rps, "errors": errors}


def latency_medians(rs: list[dict[str, float]]) -> dict[str, float]:
    return {
        "p50_ms": statistics.median(r["p50_ms"] for r in rs),
        "p99_ms": statistics.median(r["p99_ms"] for r in rs),
        "rps": statistics.median(r["rps"] for r in rs),
        "errors": sum(r["errors"] for r in rs),
    }
