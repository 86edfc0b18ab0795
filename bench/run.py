"""``make bench``: the kit beside what users pick instead and what its protection saves,
measured side by side in one run.

One MariaDB on loopback, every configuration under the same ``gunicorn.conf.py`` with the
same worker count, loaded by the same ``wrk`` command (``bench/configs.py`` lists them:
the kit with and without Gunicorn's access log, Flask-SQLAlchemy with pre-ping and with
recycle only, the plain autocommit engine with the kit's ORM views and without the ORM).

Phases, each timed: throughput (interleaved rounds, both endpoints), the statements each
configuration sends, the same across a network hop of several delays, applications no
one here wrote (as documented and with the kit), the hot fault matrix (busy
connections), the idle fault matrix (MariaDB restarted with ``wait_timeout=2``). On
request: ``--profile`` adds where the kit's time goes (in process) and scaling (worker
counts and classes, nginx in front, memory per worker); ``--fleet`` adds ``make deploy``
timings, rolling deploys and the database host's death on test fleets.

    .venv/bin/python -m bench.run [--rounds 5] [--duration 3] [--profile] [--fleet]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from bench.apps import app_costs
from bench.chart import chart
from bench.configs import (
    BENCH,
    CONFIGS,
    ENDPOINTS,
    FAULT_CONFIGS,
    FAULT_WAIT_TIMEOUT,
    THROUGHPUT_WAIT_TIMEOUT,
)
from bench.deploy_timing import time_deploy
from bench.environment import machine, versions
from bench.fault_matrix import hot_matrix, idle_matrix
from bench.fleet_hop import fleet_hop
from bench.hop import HOP_CONFIGS, HOP_DELAYS_US, across_a_hop
from bench.host_death import time_host_death
from bench.load import WrkLoad, seed_notes, statements_per_request, throughput
from bench.micro import where_time_goes
from bench.progress import Progress
from bench.report import README, markdown, write_readme
from bench.report_summary import summary
from bench.rolling_timing import time_rolling
from bench.scaling import WORKER_SETUPS, scaling
from harness.gunicorn import migrate
from harness.hot import HOT_SCENARIOS
from harness.mariadb import LocalMariaDB, start_mariadb
from harness.scenarios import SCENARIOS

LISTS = {
    "configs": CONFIGS,
    "fault_configs": CONFIGS,
    "scenarios": SCENARIOS,
    "hot_scenarios": HOT_SCENARIOS,
    "hop_configs": CONFIGS,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    p.add_argument("--duration", type=int, default=3, help="seconds per wrk run (default 3)")
    p.add_argument("--workers", type=int, default=2, help="Gunicorn workers, all configs")
    p.add_argument("--connections", type=int, default=4, help="wrk connections (default 4)")
    p.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    p.add_argument("--warmup", type=int, default=1, help="seconds of load before the rounds")
    p.add_argument("--configs", default=",".join(CONFIGS), help="throughput configurations")
    p.add_argument("--fault-configs", default=",".join(FAULT_CONFIGS), help="'' skips faults")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="idle fault scenarios")
    p.add_argument("--hot-scenarios", default=",".join(HOT_SCENARIOS), help="'' skips them")
    p.add_argument("--fault-requests", type=int, default=6, help="requests after an idle fault")
    p.add_argument("--hot-requests", type=int, default=6, help="requests during a hot fault")
    p.add_argument("--hop-configs", default=",".join(HOP_CONFIGS), help="across a hop")
    p.add_argument(
        "--hop-delays",
        default=",".join(map(str, HOP_DELAYS_US)),
        help="one-way delays in µs across the relayed hop ('' skips the hop)",
    )
    p.add_argument("--hop-rounds", type=int, default=1, help="rounds across the hop")
    p.add_argument("--hop-duration", type=int, default=2, help="seconds per wrk run there")
    p.add_argument("--app-rounds", type=int, default=2, help="third-party apps; 0 skips them")
    p.add_argument(
        "--profile",
        action="store_true",
        help="also where the kit's time goes, in process, and how it scales (about 6 min)",
    )
    p.add_argument("--micro-iterations", type=int, default=1500, help="with --profile")
    p.add_argument("--scaling-rounds", type=int, default=5, help="with --profile")
    p.add_argument("--scaling-connections", type=int, default=16)
    p.add_argument(
        "--fleet",
        action="store_true",
        help="also on test fleets of systemd-nspawn hosts: make deploy's timing, rolling "
        "deploys, the hop to db1 and db1's death under load (about 15 min)",
    )
    p.add_argument("--out", type=Path, default=BENCH / "results")
    p.add_argument("--readme", type=Path, default=README, help="README with bench markers")
    p.add_argument("--no-readme", action="store_true", help="leave the README alone")
    args = p.parse_args(argv)
    for name, known in LISTS.items():
        items = [x for x in getattr(args, name).split(",") if x]
        unknown = [x for x in items if x not in known]
        if unknown:
            p.error(
                f"--{name.replace('_', '-')}: unknown {', '.join(unknown)}; "
                f"choose from {', '.join(known)}"
            )
        setattr(args, name, items)
    try:
        args.hop_delays = [int(d) for d in args.hop_delays.split(",") if d]
    except ValueError:
        p.error(f"--hop-delays: {args.hop_delays!r}: give microseconds, e.g. 0,100,250,500")
    if not args.profile:
        args.micro_iterations = args.scaling_rounds = 0
    if "kit" not in args.configs:
        p.error("--configs: every ratio is against the kit: include kit")
    return args


def total_steps(args: argparse.Namespace) -> int:
    scaling_runs = args.scaling_rounds * (len(WORKER_SETUPS) + 2 * len(ENDPOINTS))
    faults = len(args.fault_configs) * (len(args.scenarios) + len(args.hot_scenarios))
    return int(
        args.rounds * len(args.configs) * len(ENDPOINTS)
        + scaling_runs
        + args.hop_rounds * len(args.hop_delays) * len(args.hop_configs) * len(ENDPOINTS)
        + args.app_rounds * 2 * 2
        + faults
        + ((9 + args.hop_rounds * len(args.hop_configs) * len(ENDPOINTS)) if args.fleet else 0)
    )


def measure_on_mariadb(
    db: LocalMariaDB, args: argparse.Namespace, raw: Path, progress: Progress
) -> dict[str, Any]:
    """Every phase that needs the server, in the order that needs no restart until the end."""
    results: dict[str, Any] = {}
    migrate(db.url)
    seed_notes(db)
    load = WrkLoad(args.threads, args.connections, args.duration)
    with progress.phase("throughput"):
        results["throughput"] = throughput(
            db, args.configs, load, args.rounds, args.workers, raw, progress, args.warmup
        )
    with progress.phase("statements"):
        results["statements"] = statements_per_request(
            db, list(dict.fromkeys(args.configs + args.hop_configs))
        )
    if args.hop_delays and args.hop_configs and args.hop_rounds:
        with progress.phase("hop"):
            hop_load = replace(load, duration=args.hop_duration)
            results["hop"] = across_a_hop(
                db, args.hop_configs, args.hop_delays, hop_load, args.hop_rounds, args.workers,
                raw, progress, args.warmup,
            )  # fmt: skip
    if args.micro_iterations:
        with progress.phase("in-process"):
            results["in_process"] = where_time_goes(db, args.micro_iterations)
    if args.scaling_rounds:
        with progress.phase("scaling"):
            wide = WrkLoad(1, args.scaling_connections, args.duration, close=True)
            results["scaling"] = scaling(
                db, wide, args.scaling_rounds, args.workers, raw, progress, args.warmup
            )
    if args.app_rounds:
        with progress.phase("apps"):
            results["apps"] = app_costs(db, load, args.app_rounds, progress, args.warmup)
    if args.fault_configs and args.hot_scenarios:
        with progress.phase("hot faults"):
            results["hot_faults"] = hot_matrix(
                db, args.fault_configs, args.hot_scenarios, args, raw, progress
            )
    if args.fault_configs and args.scenarios:
        with progress.phase("idle faults"):
            # The fault tests' server: wait_timeout=2 (restart re-reads this config).
            db.write_config(
                {"wait_timeout": FAULT_WAIT_TIMEOUT, "interactive_timeout": FAULT_WAIT_TIMEOUT}
            )
            db.restart()
            results["faults"] = idle_matrix(
                db, args.fault_configs, args.scenarios, args, raw, progress
            )
    return results


def deploy_timing(raw: Path, progress: Progress) -> dict[str, Any]:
    return fleet_figures(time_deploy, raw, progress)


def fleet_figures(
    measure: Callable[[Progress, Path], dict[str, Any]], raw: Path, progress: Progress
) -> dict[str, Any]:
    try:
        return measure(progress, raw)
    except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
        # The measurements above stand on their own; say why this one is missing.
        failed = {"error": str(exc).splitlines()[0][:300]}
        progress(f"{measure.__name__} failed: {failed['error']}")
        return failed


def write_outputs(results: dict[str, Any], args: argparse.Namespace, progress: Progress) -> None:
    table = markdown(results)
    (args.out / "results.md").write_text(table)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    chart(results, args.out / "chart.png")
    if not args.no_readme:
        updated = write_readme(summary(results), args.readme)
        progress(
            f"README: {'updated' if updated else 'markers missing, results.md only'}", count=False
        )
    phases = ", ".join(f"{name} {s:.0f} s" for name, s in results["phases"].items())
    progress(f"done in {results['elapsed_s']:.0f} s ({phases}): {args.out}", count=False)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    started = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)
    raw = args.out / "raw"
    raw.mkdir(exist_ok=True)
    progress = Progress(total_steps(args))
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "settings": {
            k: getattr(args, k)
            for k in (
                "rounds",
                "duration",
                "workers",
                "connections",
                "threads",
                "scaling_rounds",
                "scaling_connections",
                "fault_requests",
                "hot_requests",
            )
        },
        "machine": machine(),
        "versions": versions(),
    }
    with tempfile.TemporaryDirectory(prefix="bench-mariadb-", dir=raw) as tmp:
        progress("starting MariaDB", count=False)
        db = start_mariadb(
            Path(tmp),
            options={
                "wait_timeout": THROUGHPUT_WAIT_TIMEOUT,
                "interactive_timeout": THROUGHPUT_WAIT_TIMEOUT,
            },
        )
        try:
            results.update(measure_on_mariadb(db, args, raw, progress))
        finally:
            db.stop()
    if args.fleet:
        with progress.phase("deploy"):
            results["deploy"] = deploy_timing(raw, progress)
            results["rolling"] = fleet_figures(time_rolling, raw, progress)
        with progress.phase("fleet hop, host death"):
            hop = partial(
                fleet_hop, configs=args.hop_configs, rounds=args.hop_rounds,
                load=WrkLoad(args.threads, args.connections, args.hop_duration),
                workers=args.workers, raw=raw, progress=progress, warm_up=args.warmup,
            )  # fmt: skip
            figures = fleet_figures(partial(time_host_death, hop=hop), raw, progress)
            results["fleet_hop"] = figures.pop("hop", None)
            results["net_timeout"] = figures.pop("net_timeout", None)
            results["host_death"] = figures
    results["phases"] = progress.phases
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    write_outputs(results, args, progress)
    return results


if __name__ == "__main__":
    main()
