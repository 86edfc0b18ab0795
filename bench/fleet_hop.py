"""The hop's configurations one real network hop away: served on this machine, on the test
fleet's bridge, with db1's MariaDB as site.yml set it up (TLS, its tuned timeouts), the
app user granted from the bridge's address for the measurement (``client_vars``).

The same loads as the relayed hop (:mod:`bench.hop`): latency from one connection and
throughput, the configurations interleaved, medians of the rounds; the round trip to db1
measured beside them. MariaDB's CPU is not counted here (it runs inside db1).
"""

from __future__ import annotations

import shutil
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from bench.configs import CONFIGS, ENDPOINTS
from bench.hop import both, latency_medians
from bench.load import Served, WrkLoad, start_all, stop_all, warm_all
from bench.progress import Progress
from harness.delay import round_trip_us
from harness.fleet import Fleet
from harness.gunicorn import GunicornServer
from harness.incident import host_env


def client_vars(fleet: Fleet) -> dict[str, Any]:
    """Extra variables for site.yml: this machine (the bridge's address) may reach db1 as
    the app hosts do, through db1's firewall and grants."""
    apps = [fleet.address(h) for h in ("app1", "app2")]
    return {"db_client_addresses": [*apps, fleet.controller]}


def fleet_hop(
    fleet: Fleet,
    configs: list[str],
    load: WrkLoad,
    rounds: int,
    workers: int,
    raw: Path,
    progress: Progress,
    warm_up: int,
) -> dict[str, Any]:
    env = host_env(fleet, "app1")
    ca = raw / "fleet-db-ca.pem"
    shutil.copyfile(fleet.root("app1") / env["DB_TLS_CA"].lstrip("/"), ca)
    # The app hosts' database settings, and the Gunicorn timeout the rules check them against.
    settings = {k: v for k, v in env.items() if k.startswith("DB_") or k == "GUNICORN_TIMEOUT"}
    settings["DB_TLS_CA"] = str(ca)
    url = env["DATABASE_URL"]

    def starter(config: str) -> Callable[[], Served]:
        wsgi, extra = CONFIGS[config]
        # The kit reads DB_TLS_CA; the others take TLS from the URL, as their users write it.
        own = {"DATABASE_URL": url if wsgi.startswith("app.") else f"{url}?ssl_ca={ca}"}
        log = raw / f"gunicorn-fleet-hop-{config}.log"
        return GunicornServer({**settings, **extra, **own}, log, app=wsgi, workers=workers).start

    parts = urlsplit(url)
    assert parts.hostname and parts.username

    def round_trip() -> float:
        return round_trip_us(
            parts.hostname or "", parts.port or 3306, unquote(parts.username or ""),
            unquote(parts.password or ""), ssl_ca=str(ca),
        )  # fmt: skip

    runs: dict[str, dict[str, list[dict[str, float]]]] = {
        c: {e: [] for e in ENDPOINTS} for c in configs
    }
    trips = []
    servers = start_all({c: starter(c) for c in configs})
    try:
        warm_all(servers, ENDPOINTS, load, warm_up)
        for r in range(rounds):
            trips.append(round_trip())
            order = configs[r % len(configs) :] + configs[: r % len(configs)]
            for endpoint, (path, mode) in ENDPOINTS.items():
                for config in order:
                    run = both(servers[config], None, path, mode, load)
                    runs[config][endpoint].append(run)
                    progress(
                        f"fleet round {r + 1}/{rounds} {config:<11} {endpoint:<11} "
                        f"p50 {run['p50_ms']:5.2f} ms p99 {run['p99_ms']:5.2f} ms, "
                        f"{run['rps']:5.0f} req/s"
                    )
    finally:
        stop_all(servers)
    return {
        "round_trip_us": round(statistics.median(trips)),
        "connections": load.connections,
        "workers": workers,
        "duration": load.duration,
        "rounds": rounds,
        "configs": {
            c: {e: latency_medians(rs) for e, rs in eps.items()} for c, eps in runs.items()
        },
    }
