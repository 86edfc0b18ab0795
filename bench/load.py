"""WrkLoad generation: ``wrk`` runs against real Gunicorn servers, with CPU accounting.

Rounds are interleaved (every server once per round, the order rotated each round) so
machine drift hits all alike. Each run also records the CPU time the Gunicorn workers and
MariaDB spent per request, read from ``/proc``.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from bench.configs import BENCH, ENDPOINTS, THROUGHPUT_WAIT_TIMEOUT, app_env, start_app
from bench.progress import Progress
from harness import ROOT
from harness.mariadb import LocalMariaDB

WRK_SCRIPT = BENCH / "wrk.lua"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# label -> endpoint -> one run per round
Runs = dict[str, dict[str, list["WrkRun"]]]


class Served(Protocol):
    """What a load run needs from a started server: where to send, whose CPU to count."""

    @property
    def url(self) -> str: ...

    @property
    def master_pid(self) -> int | None: ...

    def stop(self) -> None: ...


@dataclass
class WrkLoad:
    """One ``wrk`` command line: ``-t threads -c connections -d duration``; ``close``: a new
    connection per request, as nginx opens towards Gunicorn (a sync worker closes every
    connection anyway; a gthread worker would keep it alive for the next request)."""

    threads: int
    connections: int
    duration: int
    close: bool = False


@dataclass
class WrkRun:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non2xx: int
    socket_errors: int
    app_cpu_us: float = 0.0  # CPU time of the Gunicorn workers per request
    db_cpu_us: float = 0.0  # CPU time of MariaDB per request


def cpu_seconds(parent: int | None = None, pid: int | None = None) -> float:
    """User+system CPU seconds of ``pid``, or of every child of ``parent``, from /proc.

    Unlike requests per second, CPU time per request barely moves when a neighbour
    steals the cores: it is what each configuration costs, not how fast it got served.
    """
    ticks = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or (pid is not None and int(entry.name) != pid):
            continue
        try:
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if pid is not None or int(fields[1]) == parent:
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / CLK_TCK


def run_wrk(url: str, mode: str, load: WrkLoad) -> WrkRun:
    cmd = [
        "wrk",
        f"-t{load.threads}",
        f"-c{load.connections}",
        f"-d{load.duration}s",
        "--timeout",
        "5s",
        "-s",
        str(WRK_SCRIPT),
        url,
        "--",
        *mode.split(),
        *(["close"] if load.close else []),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    match = re.search(r"^BENCH_JSON (.*)$", out, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"wrk printed no result: {out[-500:]}")
    raw = json.loads(match.group(1))
    return WrkRun(
        rps=raw["requests"] / (raw["duration_us"] / 1e6),
        p50_ms=raw["p50_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        requests=raw["requests"],
        non2xx=raw["non2xx"],
        socket_errors=raw["socket_errors"],
    )


def measured_run(
    url: str, master: int | None, db_pid: int | None, path: str, mode: str, load: WrkLoad
) -> WrkRun:
    """One ``wrk`` run, with the CPU time the workers of ``master`` and MariaDB (``db_pid``,
    None: not counted) spent.

    wrk counts only the requests answered within its duration. A machine too busy to
    answer one in that time gives no rate at all: the run is made again, twice as long,
    up to 8 times the duration, then the bench stops saying so."""
    duration = load.duration
    while True:
        app0, db0 = cpu_seconds(parent=master), cpu_seconds(pid=db_pid)
        run = run_wrk(url + path, mode, replace(load, duration=duration))
        if run.requests > 0:
            break
        if duration >= 8 * load.duration:
            raise RuntimeError(
                f"{url}{path} answered no request in {duration} s: the machine is too busy "
                f"to measure; run the bench when it is quieter, or with a longer --duration"
            )
        duration *= 2
    run.app_cpu_us = (cpu_seconds(parent=master) - app0) / run.requests * 1e6
    run.db_cpu_us = (cpu_seconds(pid=db_pid) - db0) / run.requests * 1e6
    return run


def _run_line(round_: int, rounds: int, label: str, endpoint: str, run: WrkRun) -> str:
    bad = f", {run.non2xx + run.socket_errors} errors" if run.non2xx or run.socket_errors else ""
    return (
        f"round {round_ + 1}/{rounds} {label:<15} {endpoint:<11} "
        f"{run.rps:5.0f} req/s p50 {run.p50_ms:5.2f} ms p99 {run.p99_ms:6.2f} ms "
        f"cpu/req {run.app_cpu_us:4.0f}+{run.db_cpu_us:3.0f} µs{bad}"
    )


def start_all(starters: Mapping[str, Callable[[], Served]]) -> dict[str, Served]:
    """Start every server at once (imports dominate; the cores share them); all or none."""
    with ThreadPoolExecutor(max_workers=len(starters)) as pool:
        futures = {label: pool.submit(start) for label, start in starters.items()}
    servers, failed = {}, None
    for label, future in futures.items():
        try:
            servers[label] = future.result()
        except Exception as exc:  # stop the ones that did start, then report
            failed = failed or exc
    if failed is not None:
        stop_all(servers)
        raise failed
    return servers


def stop_all(servers: Mapping[str, Served]) -> None:
    """Stop every server at once (each may wait out Gunicorn's graceful timeout)."""
    if servers:
        with ThreadPoolExecutor(max_workers=len(servers)) as pool:
            for future in [pool.submit(server.stop) for server in servers.values()]:
                future.result()


def warm_all(
    servers: Mapping[str, Served],
    endpoints: Mapping[str, tuple[str, str]],
    load: WrkLoad,
    seconds: int,
) -> None:
    """``seconds`` of each endpoint's load on every server, all servers at once: pools,
    compiled statements and caches filled before anything is recorded."""

    def warm(server: Served) -> None:
        for path, mode in endpoints.values():
            run_wrk(
                server.url + path,
                mode,
                WrkLoad(load.threads, load.connections, seconds, load.close),
            )

    if seconds:
        with ThreadPoolExecutor(max_workers=len(servers)) as pool:
            for future in [pool.submit(warm, server) for server in servers.values()]:
                future.result()


def interleaved(
    db: LocalMariaDB,
    starters: Mapping[str, Callable[[], Served]],
    endpoints: Mapping[str, tuple[str, str]],
    load: WrkLoad,
    rounds: int,
    progress: Progress,
    warm_up: int,
) -> Runs:
    """Interleaved rounds: each round starts every server afresh, warms them, then loads
    each endpoint on each server once, in an order rotated every round.

    Fresh servers every round: two instances of the very same configuration differ by up
    to 10 % over their whole life here (where the scheduler put their workers, beside
    wrk and MariaDB), so a configuration must not keep one instance's luck for every round.
    """
    labels = list(starters)
    runs: Runs = {label: {e: [] for e in endpoints} for label in labels}
    for r in range(rounds):
        servers = start_all(starters)
        try:
            warm_all(servers, endpoints, load, warm_up)
            progress(f"round {r + 1}/{rounds}: started and warmed {', '.join(labels)}", False)
            order = labels[r % len(labels) :] + labels[: r % len(labels)]
            for endpoint, (path, mode) in endpoints.items():
                for label in order:
                    server = servers[label]
                    run = measured_run(server.url, server.master_pid, db.pid(), path, mode, load)
                    runs[label][endpoint].append(run)
                    progress(_run_line(r, rounds, label, endpoint, run))
        finally:
            stop_all(servers)
    return runs


def _trace(db: LocalMariaDB, config: str) -> dict[str, list[str]]:
    env = {**os.environ, **app_env(db, config, THROUGHPUT_WAIT_TIMEOUT)}
    proc = subprocess.run(
        [sys.executable, "-m", "bench.statements", config],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    traced: dict[str, list[str]] = json.loads(proc.stdout.strip().splitlines()[-1])
    return traced


def statements_per_request(db: LocalMariaDB, configs: list[str]) -> dict[str, dict[str, list[str]]]:
    """What each configuration sends to MariaDB for one request (``bench/statements.py``),
    one process per configuration, run side by side."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        traced = {config: pool.submit(_trace, db, config) for config in configs}
    return {config: future.result() for config, future in traced.items()}


def seed_notes(db: LocalMariaDB, count: int = 200) -> None:
    """Enough rows that GET / returns its full page of 20 from the first request on."""
    values = ", ".join(f"('seed {i}')" for i in range(count))
    db.execute(f"INSERT INTO `{db.database}`.notes (text) VALUES {values}")


def medians(rs: list[WrkRun]) -> dict[str, Any]:
    return {
        "rps_median": statistics.median(r.rps for r in rs),
        "rps_rounds": [r.rps for r in rs],  # unrounded: the paired ratios divide by them
        "p50_ms": statistics.median(r.p50_ms for r in rs),
        "p99_ms": statistics.median(r.p99_ms for r in rs),
        "requests": sum(r.requests for r in rs),
        "non2xx": sum(r.non2xx for r in rs),
        "socket_errors": sum(r.socket_errors for r in rs),
        "app_cpu_us": statistics.median(r.app_cpu_us for r in rs),
        "db_cpu_us": statistics.median(r.db_cpu_us for r in rs),
        "cpu_us": statistics.median(r.app_cpu_us + r.db_cpu_us for r in rs),
    }


def _add_ratios_to_kit(out: dict[str, Any]) -> None:
    """How the kit compares with each configuration: kit / this, so ≥ 1 means the kit wins.

    Three ways: the ratio of the medians; the median of the per-round ratios (both ran in
    the same round, so a busy neighbour hits them alike); and by CPU per request (this
    one's CPU per request / the kit's: the throughput ratio a CPU-bound machine of its own
    would show).
    """
    for endpoints in out.values():
        for endpoint, s in endpoints.items():
            kit = out["kit"][endpoint]
            s["kit_ratio"] = kit["rps_median"] / s["rps_median"]
            paired = [a / b for a, b in zip(kit["rps_rounds"], s["rps_rounds"], strict=True)]
            s["kit_ratio_paired"] = statistics.median(paired)
            s["kit_ratio_cpu"] = s["cpu_us"] / kit["cpu_us"]


def summarize(runs: Runs) -> dict[str, Any]:
    out: dict[str, Any] = {
        label: {endpoint: medians(rs) for endpoint, rs in endpoints.items()}
        for label, endpoints in runs.items()
    }
    if "kit" in out:
        _add_ratios_to_kit(out)
    return out


def throughput(
    db: LocalMariaDB,
    configs: list[str],
    load: WrkLoad,
    rounds: int,
    workers: int,
    raw: Path,
    progress: Progress,
    warm_up: int,
) -> dict[str, Any]:
    """Every configuration on both endpoints, ``workers`` sync workers each."""

    def starter(config: str) -> Callable[[], Served]:
        return lambda: start_app(db, config, raw, workers, THROUGHPUT_WAIT_TIMEOUT)

    starters = {c: starter(c) for c in configs}
    runs = interleaved(db, starters, ENDPOINTS, load, rounds, progress, warm_up)
    return summarize(runs)
