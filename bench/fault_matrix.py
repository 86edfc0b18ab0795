"""The fault matrix: the fault tests' own scenarios against a fresh app per configuration and
scenario.

* idle faults (:mod:`harness.scenarios`): the connections sit idle when the fault strikes;
  MariaDB runs with ``wait_timeout=2``;
* hot faults (:mod:`harness.hot`): the connections are busy when the host dies or is cut
  off, the server stalls or fails over to a standby (a second MariaDB with the same app
  password); the app gets the hot fault tests' settings (``HOT_ENV``). A configuration
  other than the kit gives up after its first failure, as the tests' naive column does:
  one that hangs costs the client timeout (12 s) once, not once per request.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench.configs import FAULT_WAIT_TIMEOUT, THROUGHPUT_WAIT_TIMEOUT, start_app
from bench.progress import Progress
from harness.faults import StallProxy
from harness.gunicorn import migrate
from harness.hot import HOT_ENV, HotContext, HotResult, run_hot
from harness.mariadb import LocalMariaDB, start_mariadb
from harness.scenarios import FaultContext, Result, Tally, run_scenario

PROXIED = ("stall", "stall_busy", "failover")


def one_scenario(
    db: LocalMariaDB, config: str, scenario: str, args: argparse.Namespace, raw: Path
) -> Result:
    """``scenario`` against a freshly started ``config`` (through a proxy for ``stall``)."""
    proxy = StallProxy(db.port) if scenario in PROXIED else None
    server = start_app(
        db, config, raw, args.workers, FAULT_WAIT_TIMEOUT, proxy.port if proxy else None
    )
    try:
        ctx = FaultContext(db, server.url, FAULT_WAIT_TIMEOUT, proxy)
        return run_scenario(scenario, ctx, requests_after=args.fault_requests)
    finally:
        server.stop()
        if proxy:
            proxy.close()


def _statuses(outcome: Tally) -> list[str]:
    return [str(s) for s in outcome.statuses]


def matrix_row(result: Result) -> dict[str, Any]:
    row: dict[str, Any] = {
        "requests": len(result.after.statuses),
        "non2xx": result.after.failures,
        "slowest_s": round(result.after.slowest, 3),
        "statuses": _statuses(result.after),
    }
    if result.during.statuses:
        row["during_statuses"] = _statuses(result.during)
        row["during_slowest_s"] = round(result.during.slowest, 3)
    return row


def idle_matrix(
    db: LocalMariaDB,
    configs: list[str],
    scenarios: list[str],
    args: argparse.Namespace,
    raw: Path,
    progress: Progress,
) -> dict[str, dict[str, dict[str, Any]]]:
    matrix: dict[str, dict[str, dict[str, Any]]] = {}
    for config in configs:
        matrix[config] = {}
        for scenario in scenarios:
            row = matrix_row(one_scenario(db, config, scenario, args, raw))
            matrix[config][scenario] = row
            progress(
                f"faults {config:<11} {scenario:<11} {row['non2xx']}/{row['requests']} "
                f"non-2xx, slowest {row['slowest_s']:.2f} s"
            )
    return matrix


def start_standby(primary: LocalMariaDB, directory: Path) -> LocalMariaDB:
    """A second server with the schema and the primary's app password (a replica would
    know the primary's users), for the failover scenario."""
    standby = start_mariadb(directory)
    migrate(standby.url)
    standby.execute(f"ALTER USER '{standby.user}'@'127.0.0.1' IDENTIFIED BY '{primary.password}'")
    return standby


def hot_row(result: HotResult, gave_up: bool) -> dict[str, Any]:
    row: dict[str, Any] = {
        "requests": len(result.during.statuses),
        "non2xx": result.during.failures,
        "slowest_s": round(result.during.slowest, 3),
        "statuses": _statuses(result.during),
        "after_statuses": _statuses(result.after),
        "gave_up": gave_up and result.during.failures > 0,
    }
    if result.healthz:
        row["healthz_statuses"] = sorted({str(s) for s in result.healthz})
    later = result.during.durations[1:] + result.burst.durations
    if result.scenario == "partition" and later and not gave_up:
        # What the breaker is for: the requests after the first answered without waiting
        # on the network, and how soon after healing the first one was served.
        row["open_median_ms"] = round(statistics.median(later) * 1000, 1)
        if result.first_2xx_after is not None:
            row["healed_after_s"] = round(result.first_2xx_after, 3)
    return row


def one_hot_scenario(
    db: LocalMariaDB,
    standby: LocalMariaDB,
    config: str,
    scenario: str,
    args: argparse.Namespace,
    raw: Path,
) -> dict[str, Any]:
    proxy = StallProxy(db.port) if scenario in PROXIED else None
    server = start_app(
        db,
        config,
        raw,
        args.workers,
        THROUGHPUT_WAIT_TIMEOUT,
        proxy.port if proxy else None,
        extra=HOT_ENV,
        label=f"hot-{config}",
    )
    give_up = None if config == "kit" else 1
    try:
        ctx = HotContext(db, server.url, THROUGHPUT_WAIT_TIMEOUT, proxy, standby=standby)
        result = run_hot(scenario, ctx, count=args.hot_requests, give_up_after=give_up)
        return hot_row(result, give_up is not None)
    finally:
        server.stop()
        if proxy:
            proxy.close()


def hot_matrix(
    db: LocalMariaDB,
    configs: list[str],
    scenarios: list[str],
    args: argparse.Namespace,
    raw: Path,
    progress: Progress,
) -> dict[str, dict[str, dict[str, Any]]]:
    matrix: dict[str, dict[str, dict[str, Any]]] = {c: {} for c in configs}
    with tempfile.TemporaryDirectory(prefix="bench-standby-", dir=raw) as tmp:
        standby = start_standby(db, Path(tmp)) if "failover" in scenarios else db
        try:
            for config in configs:
                for scenario in scenarios:
                    row = one_hot_scenario(db, standby, config, scenario, args, raw)
                    matrix[config][scenario] = row
                    progress(
                        f"hot faults {config:<11} {scenario:<11} "
                        f"{row['non2xx']}/{row['requests']} non-2xx, "
                        f"slowest {row['slowest_s']:.2f} s"
                    )
        finally:
            if standby is not db:
                standby.stop()
    return matrix
