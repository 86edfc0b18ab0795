"""Load generation: ``wrk`` runs against real Gunicorn servers, with CPU accounting.

Throughput rounds are interleaved (every configuration once per round, the order rotated
each round) so machine drift hits all alike. Each run also records the CPU time the
Gunicorn workers and MariaDB spent per request, read from ``/proc``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.configs import BENCH, ENDPOINTS, THROUGHPUT_WAIT_TIMEOUT, app_env, start_app
from bench.progress import Progress
from harness import ROOT
from harness.gunicorn import GunicornServer
from harness.mariadb import LocalMariaDB

WRK_SCRIPT = BENCH / "wrk.lua"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# config -> endpoint -> one run per round
Runs = dict[str, dict[str, list["WrkRun"]]]


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


def run_wrk(url: str, mode: str, args: argparse.Namespace) -> WrkRun:
    cmd = [
        "wrk",
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{args.duration}s",
        "--timeout",
        "5s",
        "-s",
        str(WRK_SCRIPT),
        url,
        "--",
        mode,
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
    server: GunicornServer, db: LocalMariaDB, path: str, mode: str, args: argparse.Namespace
) -> WrkRun:
    """One ``wrk`` run, with the CPU time its workers and MariaDB spent per request."""
    if server.proc is None:
        raise RuntimeError(f"the server for {server.app} was never started")
    master = server.proc.pid
    app0, db0 = cpu_seconds(parent=master), cpu_seconds(pid=db.pid())
    run = run_wrk(server.url + path, mode, args)
    n = max(run.requests, 1)
    run.app_cpu_us = (cpu_seconds(parent=master) - app0) / n * 1e6
    run.db_cpu_us = (cpu_seconds(pid=db.pid()) - db0) / n * 1e6
    return run


def _run_line(round_: int, rounds: int, config: str, endpoint: str, run: WrkRun) -> str:
    bad = f", {run.non2xx} non-2xx" if run.non2xx or run.socket_errors else ""
    return (
        f"round {round_ + 1}/{rounds} {config:<15} {endpoint:<11} "
        f"{run.rps:5.0f} req/s p50 {run.p50_ms:5.2f} ms p99 {run.p99_ms:5.2f} ms "
        f"cpu/req {run.app_cpu_us:4.0f}+{run.db_cpu_us:3.0f} µs{bad}"
    )


def throughput(
    db: LocalMariaDB, configs: list[str], args: argparse.Namespace, raw: Path, progress: Progress
) -> Runs:
    """Interleaved rounds per endpoint, each endpoint on freshly started servers.

    Fresh servers per endpoint matter for ``bare``: a session that is never removed keeps
    its transaction, and so its REPEATABLE READ snapshot, from its last request on. Carried
    from the POST rounds into the GET rounds it would make every GET / skip the rows
    inserted since (measured: 3-10x MariaDB CPU per GET) and serve stale data.
    """
    runs: Runs = {c: {e: [] for e in ENDPOINTS} for c in configs}
    warm_up = argparse.Namespace(**{**vars(args), "duration": 1})
    for endpoint, (path, mode) in ENDPOINTS.items():
        servers = {c: start_app(db, c, raw, args.workers, THROUGHPUT_WAIT_TIMEOUT) for c in configs}
        progress(f"started {', '.join(configs)} ({args.workers} workers each)", count=False)
        try:
            for server in servers.values():  # warm-up, not recorded: pools, imports, caches
                run_wrk(server.url + path, mode, warm_up)
            for r in range(args.rounds):
                order = configs[r % len(configs) :] + configs[: r % len(configs)]
                for config in order:
                    run = measured_run(servers[config], db, path, mode, args)
                    runs[config][endpoint].append(run)
                    progress(_run_line(r, args.rounds, config, endpoint, run))
        finally:
            for server in servers.values():
                server.stop()
    return runs


def statements_per_request(db: LocalMariaDB, configs: list[str]) -> dict[str, dict[str, list[str]]]:
    """What each configuration sends to MariaDB for one request (``bench/statements.py``)."""
    out = {}
    for config in configs:
        env = {**os.environ, **app_env(db, config, THROUGHPUT_WAIT_TIMEOUT)}
        proc = subprocess.run(
            [sys.executable, "-m", "bench.statements", config],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        out[config] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def seed_notes(db: LocalMariaDB, count: int = 200) -> None:
    """Enough rows that GET / returns its full page of 20 from the first request on."""
    values = ", ".join(f"('seed {i}')" for i in range(count))
    db.execute(f"INSERT INTO `{db.database}`.notes (text) VALUES {values}")


def _medians(rs: list[WrkRun]) -> dict[str, Any]:
    return {
        "rps_median": statistics.median(r.rps for r in rs),
        "rps_rounds": [round(r.rps, 1) for r in rs],
        "p50_ms": statistics.median(r.p50_ms for r in rs),
        "p99_ms": statistics.median(r.p99_ms for r in rs),
        "requests": sum(r.requests for r in rs),
        "non2xx": sum(r.non2xx for r in rs),
        "socket_errors": sum(r.socket_errors for r in rs),
        "app_cpu_us": statistics.median(r.app_cpu_us for r in rs),
        "db_cpu_us": statistics.median(r.db_cpu_us for r in rs),
        "cpu_us": statistics.median(r.app_cpu_us + r.db_cpu_us for r in rs),
    }


def _add_ratios_vs_bare(out: dict[str, Any]) -> None:
    for endpoints in out.values():
        for endpoint, s in endpoints.items():
            base = out["bare"][endpoint]
            s["ratio_vs_bare"] = s["rps_median"] / base["rps_median"]
            paired = [a / b for a, b in zip(s["rps_rounds"], base["rps_rounds"], strict=True)]
            s["ratio_vs_bare_paired_median"] = statistics.median(paired)
            # Requests per CPU-second relative to bare: the throughput ratio a
            # CPU-bound machine of its own would show.
            s["cpu_ratio_vs_bare"] = base["cpu_us"] / s["cpu_us"]


def summarize(runs: Runs) -> dict[str, Any]:
    out: dict[str, Any] = {
        config: {endpoint: _medians(rs) for endpoint, rs in endpoints.items()}
        for config, endpoints in runs.items()
    }
    if "bare" in out:
        _add_ratios_vs_bare(out)
    return out
