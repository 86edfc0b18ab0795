"""``make bench``: what the kit's resilience costs and what it saves, measured side by side.

One MariaDB on loopback, every configuration under the same ``gunicorn.conf.py`` with the
same worker count, loaded by the same ``wrk`` command:

* ``bare``: default ``create_engine``, no pre-ping, no recycle, no teardown (the speed limit;
  ``harness.variants`` ``naive``);
* ``textbook``: ``pool_pre_ping=True``, ``pool_recycle``, teardown remove, dispose after fork;
* ``kit``: ``app.wsgi:app`` unchanged;
* ``kit-noremove``: the kit minus the teardown that removes the session, to price the
  per-request session removal on its own (with an in-process microbenchmark beside it);
* ``kit-close``: the kit closing the session at teardown instead of removing it.

Throughput rounds are interleaved (every configuration once per round, the order rotated
each round) so machine drift hits all alike; figures are medians of the rounds and ratios
are taken against ``bare`` from the same run. Then the fault matrix (``run_scenario`` from
the fault tests) per configuration, and ``make deploy`` timings (``--no-deploy`` skips).

    .venv/bin/python -m bench.run [--rounds 7] [--duration 3] [--out bench/results]

The parts: :mod:`bench.load` (wrk runs, CPU accounting, throughput rounds),
:mod:`bench.micro` (the in-process removal microbenchmark), :mod:`bench.fault_matrix`,
:mod:`bench.deploy_timing`, :mod:`bench.report` and :mod:`bench.chart` (the output).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

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
from bench.fault_matrix import fault_matrix
from bench.load import seed_notes, statements_per_request, summarize, throughput
from bench.micro import removal_microbench
from bench.progress import Progress
from bench.report import README, markdown, write_readme
from harness.gunicorn import migrate
from harness.mariadb import LocalMariaDB, start_mariadb
from harness.scenarios import SCENARIOS


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    p.add_argument("--duration", type=int, default=3, help="seconds per wrk run (default 3)")
    p.add_argument("--workers", type=int, default=2, help="Gunicorn workers, all configs")
    p.add_argument("--connections", type=int, default=4, help="wrk connections (default 4)")
    p.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    p.add_argument("--configs", default=",".join(CONFIGS), help="throughput configurations")
    p.add_argument("--fault-configs", default=",".join(FAULT_CONFIGS), help="'' skips faults")
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument("--fault-requests", type=int, default=6, help="requests after each fault")
    p.add_argument("--micro-iterations", type=int, default=3000)
    p.add_argument(
        "--no-deploy",
        dest="deploy",
        action="store_false",
        help="skip timing make deploy on a fresh systemd-nspawn test host (about 2-3 min)",
    )
    p.add_argument("--out", type=Path, default=BENCH / "results")
    p.add_argument("--readme", type=Path, default=README, help="README with bench markers")
    p.add_argument("--no-readme", action="store_true", help="leave the README alone")
    args = p.parse_args(argv)
    for name in ("configs", "fault_configs", "scenarios"):
        items = [x for x in getattr(args, name).split(",") if x]
        known = CONFIGS if name != "scenarios" else SCENARIOS
        unknown = [x for x in items if x not in known]
        if unknown:
            p.error(f"--{name.replace('_', '-')}: unknown {', '.join(unknown)}")
        setattr(args, name, items)
    return args


def measure_on_mariadb(
    db: LocalMariaDB, args: argparse.Namespace, raw: Path, progress: Progress
) -> dict[str, Any]:
    """Throughput, the removal microbenchmark, statements, then the fault matrix."""
    results: dict[str, Any] = {}
    migrate(db.url)
    seed_notes(db)
    runs = throughput(db, args.configs, args, raw, progress)
    results["throughput"] = summarize(runs)
    results["removal"] = removal_microbench(db, args.micro_iterations)
    progress(
        f"session removal microbenchmark: {results['removal']['removal_cost_kit_us']:.0f}"
        " µs per removal"
    )
    results["statements"] = statements_per_request(db, args.configs)
    progress("traced the statements each configuration sends per request", count=False)
    if args.fault_configs:
        # The fault tests' server: wait_timeout=2 (restart re-reads this config).
        timeouts = {"wait_timeout": FAULT_WAIT_TIMEOUT, "interactive_timeout": 2}
        db.write_config(timeouts)
        db.restart()
        progress(f"MariaDB restarted with wait_timeout={FAULT_WAIT_TIMEOUT}", count=False)
        results["faults"] = fault_matrix(
            db, args.fault_configs, args.scenarios, args, raw, progress
        )
    return results


def deploy_timing(raw: Path, progress: Progress) -> dict[str, Any]:
    try:
        return time_deploy(progress, raw)
    except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
        # The measurements above stand on their own; say why this one is missing.
        failed = {"error": str(exc).splitlines()[0][:300]}
        progress(f"deploy timing failed: {failed['error']}")
        return failed


def write_outputs(results: dict[str, Any], args: argparse.Namespace, progress: Progress) -> None:
    table = markdown(results)
    (args.out / "results.md").write_text(table)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    chart(results, args.out / "chart.png")
    if not args.no_readme:
        where = "README.md" if write_readme(table, args.readme) else "results.md only"
        progress(
            f"README: {'updated' if where == 'README.md' else 'markers missing, ' + where}",
            count=False,
        )
    progress(f"done in {results['elapsed_s']:.0f} s: {args.out}/results.md, chart.png", count=False)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    started = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)
    raw = args.out / "raw"
    raw.mkdir(exist_ok=True)
    steps = (
        args.rounds * len(args.configs) * len(ENDPOINTS)
        + 1
        + len(args.fault_configs) * len(args.scenarios)
        + (3 if args.deploy else 0)
    )
    progress = Progress(steps)
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "settings": {
            k: getattr(args, k) for k in ("rounds", "duration", "workers", "connections", "threads")
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
    if args.deploy:
        results["deploy"] = deploy_timing(raw, progress)
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    write_outputs(results, args, progress)
    return results


if __name__ == "__main__":
    main()
