"""The fault matrix: :func:`harness.scenarios.run_scenario` (the fault tests' own scenarios)
against a fresh app per configuration and scenario."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bench.configs import FAULT_WAIT_TIMEOUT, start_app
from bench.progress import Progress
from harness.faults import StallProxy
from harness.mariadb import LocalMariaDB
from harness.scenarios import FaultContext, Result, run_scenario


def one_scenario(
    db: LocalMariaDB, config: str, scenario: str, args: argparse.Namespace, raw: Path
) -> Result:
    """``scenario`` against a freshly started ``config`` (through a proxy for ``stall``)."""
    proxy = StallProxy(db.port) if scenario == "stall" else None
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


def matrix_row(result: Result) -> dict[str, Any]:
    row: dict[str, Any] = {
        "requests": len(result.after.statuses),
        "non2xx": result.after.failures,
        "slowest_s": round(result.after.slowest, 3),
        "statuses": [str(s) for s in result.after.statuses],
    }
    if result.during.statuses:
        row["during_statuses"] = [str(s) for s in result.during.statuses]
        row["during_slowest_s"] = round(result.during.slowest, 3)
    return row


def fault_matrix(
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
                f"faults {config:<9} {scenario:<8} {row['non2xx']}/{row['requests']} non-2xx, "
                f"slowest {row['slowest_s']:.2f} s"
            )
    return matrix
