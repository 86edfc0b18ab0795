"""``make bench``: what the kit's resilience costs and what it saves, measured side by side.

One MariaDB on loopback, every configuration under the same ``gunicorn.conf.py`` with the
same worker count, loaded by the same ``wrk`` command:

* ``bare``: default ``create_engine``, no pre-ping, no recycle, no teardown (the speed limit;
  ``tests.support.variants`` ``naive``);
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
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from tests.support.faults import StallProxy
from tests.support.scenarios import SCENARIOS, FaultContext, run_scenario
from tests.support.servers import ROOT, GunicornServer, LocalMariaDB, migrate, start_mariadb

BENCH = Path(__file__).resolve().parent
WRK_SCRIPT = BENCH / "wrk.lua"
README = ROOT / "README.md"
MARK_START, MARK_END = "<!-- bench:start -->", "<!-- bench:end -->"

# name -> (WSGI app, extra environment)
CONFIGS: dict[str, tuple[str, dict[str, str]]] = {
    "bare": ("tests.support.variants:app", {"KIT_VARIANT": "bare"}),
    "textbook": ("tests.support.variants:app", {"KIT_VARIANT": "textbook"}),
    "kit": ("app.wsgi:app", {}),
    "kit-noremove": ("tests.support.variants:app", {"KIT_VARIANT": "kit-noremove"}),
    "kit-close": ("tests.support.variants:app", {"KIT_VARIANT": "kit-close"}),
}
FAULT_CONFIGS = ("bare", "textbook", "kit")
ENDPOINTS = {"GET /": ("/", "get"), "POST /notes": ("/notes", "post")}
# Throughput: a server that never drops a connection mid-run (the benchmark's own
# idle gaps between a configuration's turns stay far below it).
THROUGHPUT_WAIT_TIMEOUT = 600
# Faults: the fault tests' server (a quiet night that fits in seconds).
FAULT_WAIT_TIMEOUT = 2
TARGET_RATIO = 0.98
MICRO_SLICES = 20


class Progress:
    def __init__(self, total: int):
        self.total, self.step, self.started = total, 0, time.monotonic()

    def __call__(self, message: str, count: bool = True) -> None:
        if count:
            self.step += 1
        elapsed = time.monotonic() - self.started
        label = f"{self.step}/{self.total}" if self.total else str(self.step)
        print(f"[bench {label} {elapsed:5.0f}s] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- load


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


CLK_TCK = os.sysconf("SC_CLK_TCK")


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


def app_env(
    db: LocalMariaDB, config: str, wait_timeout: int, port: int | None = None
) -> dict[str, str]:
    url = db.url.replace(f":{db.port}/", f":{port or db.port}/")
    return {"DATABASE_URL": url, "DB_IDLE_TIMEOUT": str(wait_timeout), **CONFIGS[config][1]}


def start_app(
    db: LocalMariaDB,
    config: str,
    raw: Path,
    workers: int,
    wait_timeout: int,
    port: int | None = None,
) -> GunicornServer:
    env = app_env(db, config, wait_timeout, port)
    log = raw / f"gunicorn-{config}.log"
    return GunicornServer(env, log, app=CONFIGS[config][0], workers=workers).start()


def throughput(
    db: LocalMariaDB, configs: list[str], args: argparse.Namespace, raw: Path, progress: Progress
) -> dict[str, dict[str, list[WrkRun]]]:
    """Interleaved rounds per endpoint, each endpoint on freshly started servers.

    Fresh servers per endpoint matter for ``bare``: a session that is never removed keeps
    its transaction, and so its REPEATABLE READ snapshot, from its last request on. Carried
    from the POST rounds into the GET rounds it would make every GET / skip the rows
    inserted since (measured: 3-10x MariaDB CPU per GET) and serve stale data.
    """
    runs: dict[str, dict[str, list[WrkRun]]] = {c: {e: [] for e in ENDPOINTS} for c in configs}
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
                    master = servers[config].proc.pid  # type: ignore[union-attr]
                    app0, db0 = cpu_seconds(parent=master), cpu_seconds(pid=db.pid())
                    run = run_wrk(servers[config].url + path, mode, args)
                    n = max(run.requests, 1)
                    run.app_cpu_us = (cpu_seconds(parent=master) - app0) / n * 1e6
                    run.db_cpu_us = (cpu_seconds(pid=db.pid()) - db0) / n * 1e6
                    runs[config][endpoint].append(run)
                    bad = f", {run.non2xx} non-2xx" if run.non2xx or run.socket_errors else ""
                    progress(
                        f"round {r + 1}/{args.rounds} {config:<15} {endpoint:<11} "
                        f"{run.rps:5.0f} req/s p50 {run.p50_ms:5.2f} ms p99 {run.p99_ms:5.2f} ms "
                        f"cpu/req {run.app_cpu_us:4.0f}+{run.db_cpu_us:3.0f} µs{bad}"
                    )
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


def summarize(runs: dict[str, dict[str, list[WrkRun]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for config, endpoints in runs.items():
        out[config] = {}
        for endpoint, rs in endpoints.items():
            out[config][endpoint] = {
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
    if "bare" in out:
        for endpoints in out.values():
            for endpoint, s in endpoints.items():
                base = out["bare"][endpoint]
                s["ratio_vs_bare"] = s["rps_median"] / base["rps_median"]
                paired = [a / b for a, b in zip(s["rps_rounds"], base["rps_rounds"], strict=True)]
                s["ratio_vs_bare_paired_median"] = statistics.median(paired)
                # Requests per CPU-second relative to bare: the throughput ratio a
                # CPU-bound machine of its own would show.
                s["cpu_ratio_vs_bare"] = base["cpu_us"] / s["cpu_us"]
    return out


# ------------------------------------------------------------- session removal cost


def removal_microbench(db: LocalMariaDB, iterations: int) -> dict[str, Any]:
    """Microseconds per GET /-like query, with and without ending the session after it.

    Runs in this process against the same server, interleaved in slices (fastest per case):
    the kit's ``Database`` (from ``create_app()``) keeping its session (as ``bare`` does),
    removing it (as the kit does at teardown), closing it (the same ``Session`` object next
    time), removing it with the ``ROLLBACK`` skipped (measurement only: splits the cost into
    ending the transaction and the rest), and a plain ``create_engine`` removing it; plus
    PyMySQL's bare ``ROLLBACK`` on a connection with no transaction open.
    """
    import pymysql
    import sqlalchemy
    from sqlalchemy import select
    from sqlalchemy.orm import scoped_session, sessionmaker

    from app import create_app
    from app.db import get_db
    from app.models import Note
    from app.settings import Settings

    settings = Settings.from_env(
        {"DATABASE_URL": db.url, "DB_IDLE_TIMEOUT": str(THROUGHPUT_WAIT_TIMEOUT)}
    )
    query = select(Note).order_by(Note.id.desc()).limit(20)
    # The kit exactly as create_app() wires it (guard, metrics, reset-on-return), and a
    # second one whose ROLLBACK is skipped: what ending the transaction itself costs.
    kit, unsafe = get_db(create_app(settings)), get_db(create_app(settings))
    unsafe.engine.dialect.do_rollback = lambda dbapi_connection: None  # type: ignore[method-assign]
    plain = scoped_session(sessionmaker(bind=sqlalchemy.create_engine(db.url)))

    def per_call(fn: Any, n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - started) / n * 1e6

    def kit_keep() -> None:
        kit.session.scalars(query).all()

    def kit_remove() -> None:
        kit.session.scalars(query).all()
        kit.remove_session()

    def kit_close() -> None:
        kit.session.scalars(query).all()
        kit.session.close()

    def kit_remove_without_rollback() -> None:
        unsafe.session.scalars(query).all()
        unsafe.remove_session()

    def plain_remove() -> None:
        plain.scalars(query).all()
        plain.remove()

    raw = pymysql.connect(host="127.0.0.1", port=db.port, user=db.user, password=db.password)
    cases = {
        "query_session_kept_us": kit_keep,
        "query_then_remove_kit_us": kit_remove,
        "query_then_close_kit_us": kit_close,
        "query_then_remove_without_rollback_us": kit_remove_without_rollback,
        "query_then_remove_plain_engine_us": plain_remove,
        "rollback_round_trip_us": raw.rollback,
    }
    samples: dict[str, list[float]] = {name: [] for name in cases}
    try:
        for fn in cases.values():
            per_call(fn, 50)  # warm-up
        # Interleaved slices: a busy neighbour hits every case alike.
        for _ in range(MICRO_SLICES):
            for name, fn in cases.items():
                samples[name].append(per_call(fn, max(1, iterations // MICRO_SLICES)))
    finally:
        raw.close()
        for database in (kit, unsafe):
            database.session.remove()
            database.engine.dispose()
        plain.remove()
    # The fastest slice: what the code costs when nothing else got in the way (timeit's rule).
    result: dict[str, Any] = {name: min(v) for name, v in samples.items()}
    result["iterations"] = iterations
    kept = result["query_session_kept_us"]
    result["removal_cost_kit_us"] = result["query_then_remove_kit_us"] - kept
    result["close_cost_kit_us"] = result["query_then_close_kit_us"] - kept
    # Pool checkin/checkout, a new Session, the guard and the metrics, without the round trip.
    result["lifecycle_cost_us"] = result["query_then_remove_without_rollback_us"] - kept
    result["transaction_end_cost_us"] = (
        result["query_then_remove_kit_us"] - result["query_then_remove_without_rollback_us"]
    )
    result["removal_cost_plain_engine_us"] = result["query_then_remove_plain_engine_us"] - kept
    return result


# ---------------------------------------------------------------------- fault matrix


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
            proxy = StallProxy(db.port) if scenario == "stall" else None
            server = start_app(
                db, config, raw, args.workers, FAULT_WAIT_TIMEOUT, proxy.port if proxy else None
            )
            try:
                ctx = FaultContext(db, server.url, FAULT_WAIT_TIMEOUT, proxy)
                result = run_scenario(scenario, ctx, requests_after=args.fault_requests)
            finally:
                server.stop()
                if proxy:
                    proxy.close()
            row = {
                "requests": len(result.after.statuses),
                "non2xx": result.after.failures,
                "slowest_s": round(result.after.slowest, 3),
                "statuses": [str(s) for s in result.after.statuses],
            }
            if result.during.statuses:
                row["during_statuses"] = [str(s) for s in result.during.statuses]
                row["during_slowest_s"] = round(result.during.slowest, 3)
            matrix[config][scenario] = row
            progress(
                f"faults {config:<9} {scenario:<8} {row['non2xx']}/{row['requests']} non-2xx, "
                f"slowest {row['slowest_s']:.2f} s"
            )
    return matrix


# ------------------------------------------------------------------------- deploy


def time_deploy(progress: Progress, raw: Path) -> dict[str, Any]:
    """What ``make deploy`` does, timed step by step on a fresh test host of its own.

    ``make deploy`` on the local inventory is ``scripts/testhost up`` followed by
    ``ansible-playbook site.yml``. The benchmark runs those steps through the deploy
    tests' ``NspawnHost`` (a host named for this run, on free ports) so that a test host
    someone is already using (``idle-proof-local``) is never torn down; then it converges
    again (the idempotent re-run) and removes its host.
    """
    from tests.testhost import NspawnHost, snapshot_release

    subprocess.run([sys.executable, ROOT / "scripts" / "install-collections"], check=True)
    with tempfile.TemporaryDirectory(prefix="bench-release-") as release:
        host = NspawnHost(
            name=f"ipk-bench-{os.getpid()}", source_dir=snapshot_release(Path(release))
        )
        try:
            started = time.monotonic()
            host.up()
            boot = time.monotonic() - started
            progress(f"fresh test host up: {boot:.0f} s")
            first = host.playbook()
            (raw / "deploy-first.log").write_text(first.output)
            if first.returncode != 0:
                raise RuntimeError(f"first converge failed: see {raw}/deploy-first.log")
            progress(f"first converge: {first.seconds:.0f} s, changed={first.changed}")
            second = host.playbook()
            (raw / "deploy-rerun.log").write_text(second.output)
            if second.returncode != 0:
                raise RuntimeError(f"re-run failed: see {raw}/deploy-rerun.log")
            progress(f"idempotent re-run: {second.seconds:.0f} s, changed={second.changed}")
        finally:
            host.down()
    return {
        "host_up_s": round(boot, 1),
        "fresh_s": round(boot + first.seconds, 1),
        "converge_s": round(first.seconds, 1),
        "fresh_changed": first.changed,
        "rerun_s": round(second.seconds, 1),
        "rerun_changed": second.changed,
        "rerun_changed_tasks": second.changed_tasks(),
    }


# --------------------------------------------------------------------- environment


def machine() -> dict[str, Any]:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {"cpu": model, "cores": os.cpu_count(), "kernel": platform.release()}


def versions() -> dict[str, str]:
    out = {"Python": platform.python_version()}
    for dist in ("SQLAlchemy", "PyMySQL", "gunicorn", "Flask"):
        out[dist] = metadata.version(dist)
    mariadbd = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
    text = subprocess.run([mariadbd, "--version"], capture_output=True, text=True).stdout
    match = re.search(r"Ver\s+(\S+)", text)
    out["MariaDB"] = match.group(1) if match else text.strip()
    text = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout
    match = re.search(r"wrk (\S+)", text)
    out["wrk"] = match.group(1) if match else "unknown"
    return out


# ------------------------------------------------------------------------- report


def markdown(results: dict[str, Any]) -> str:
    s = results["settings"]
    tp = results["throughput"]
    lines = [
        f"Measured {results['date']} in one run: {s['rounds']} interleaved rounds of "
        f"{s['duration']} s per configuration and endpoint, `wrk -t{s['threads']} "
        f"-c{s['connections']}`, Gunicorn with {s['workers']} sync workers each, one MariaDB, "
        "all on loopback, each endpoint on freshly started servers. Requests per second and "
        "latencies are medians of the rounds; "
        "x bare is the ratio of medians.",
        "",
        "| configuration | GET / req/s | x bare | p50 ms | p99 ms "
        "| POST /notes req/s | x bare | p50 ms | p99 ms |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for config, endpoints in tp.items():
        cells = [config]
        for endpoint in ENDPOINTS:
            e = endpoints[endpoint]
            ratio = e.get("ratio_vs_bare")
            cells += [
                f"{e['rps_median']:.0f}",
                f"{ratio:.3f}" if ratio is not None else "",
                f"{e['p50_ms']:.2f}",
                f"{e['p99_ms']:.2f}",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "CPU time per request (median of the rounds, from /proc: the Gunicorn workers + "
        "MariaDB), which a busy neighbour moves far less than requests per second; "
        "x bare = bare's CPU per request / this one's, the throughput ratio a CPU-bound "
        "machine of its own would show:",
        "",
        "| configuration | GET / app µs | + db µs | x bare | POST /notes app µs | + db µs "
        "| x bare |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for config, endpoints in tp.items():
        cells = [config]
        for endpoint in ENDPOINTS:
            e = endpoints[endpoint]
            ratio = e.get("cpu_ratio_vs_bare")
            cells += [
                f"{e['app_cpu_us']:.0f}",
                f"{e['db_cpu_us']:.0f}",
                f"{ratio:.3f}" if ratio is not None else "",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    errors = {
        c: sum(e["non2xx"] + e["socket_errors"] for e in eps.values()) for c, eps in tp.items()
    }
    lines += [
        "",
        "Non-2xx or socket errors under load: "
        + ", ".join(f"{c} {n}" for c, n in errors.items())
        + ".",
    ]
    if "kit" in tp and "bare" in tp:
        ratio = tp["kit"]["GET /"]["ratio_vs_bare"]
        verdict = "meets" if ratio >= TARGET_RATIO else "misses"
        kit = tp["kit"]["GET /"]
        lines += [
            "",
            f"**Target:** kit GET / ≥ {TARGET_RATIO} x bare (median of the rounds): measured "
            f"{ratio:.3f}, {verdict} it (paired per-round median "
            f"{kit['ratio_vs_bare_paired_median']:.3f}; by CPU per request "
            f"{kit['cpu_ratio_vs_bare']:.3f}).",
        ]
    st = results.get("statements")
    if st:
        lines += [
            "",
            "Statements sent to MariaDB per request (each one a network round trip):",
            "",
            "| configuration | GET / | POST /notes |",
            "|---|---|---|",
        ]
        for config, per in st.items():
            cells = [f"{len(v)}: {', '.join(v)}" for v in per.values()]
            lines.append(f"| {config} | " + " | ".join(cells) + " |")
    rm = results.get("removal")
    if rm:
        lines += ["", "**Per-request session removal** (`session.remove()` at teardown):"]
        if "kit-noremove" in tp and "kit" in tp:
            kit, keep = tp["kit"]["GET /"], tp["kit-noremove"]["GET /"]
            line = (
                f"- under load, CPU per GET / request: kit {kit['cpu_us']:.0f} µs, kit without "
                f"removal {keep['cpu_us']:.0f} µs: removal costs "
                f"{kit['cpu_us'] - keep['cpu_us']:.0f} µs (app "
                f"{kit['app_cpu_us'] - keep['app_cpu_us']:.0f}, MariaDB "
                f"{kit['db_cpu_us'] - keep['db_cpu_us']:.0f})"
            )
            if "kit-close" in tp:
                close = tp["kit-close"]["GET /"]
                line += (
                    f"; closing instead of removing {close['cpu_us']:.0f} µs "
                    f"({close['cpu_us'] - keep['cpu_us']:.0f} µs)"
                )
            lines.append(line + ";")
        lines.append(
            f"- in process ({rm['iterations']:.0f} calls, fastest of {MICRO_SLICES} interleaved "
            f"slices): the GET / query costs {rm['query_session_kept_us']:.0f} µs with the "
            f"session kept; removing it after each adds {rm['removal_cost_kit_us']:.0f} µs "
            f"(kit): {rm['transaction_end_cost_us']:.0f} µs for the `ROLLBACK` that ends the "
            f"read transaction, {rm['lifecycle_cost_us']:.0f} µs for the rest (pool "
            "checkin/checkout, a new `Session`, guard, metrics); closing instead of removing "
            f"adds {rm['close_cost_kit_us']:.0f} µs (same `Session` object), "
            f"removing it on a plain `create_engine` {rm['removal_cost_plain_engine_us']:.0f} µs "
            f"(two `ROLLBACK`s); a `ROLLBACK` with no transaction open costs "
            f"{rm['rollback_round_trip_us']:.0f} µs."
        )
    faults = results.get("faults")
    if faults:
        configs = list(faults)
        scenarios = list(next(iter(faults.values())))
        lines += [
            "",
            "Fault matrix (`tests/support/scenarios.py`, MariaDB `wait_timeout=2`): non-2xx "
            "of the requests sent once the database is reachable again, and the slowest one.",
            "",
            "| scenario | " + " | ".join(configs) + " |",
            "|---|" + "---|" * len(configs),
        ]
        for scenario in scenarios:
            cells = []
            for config in configs:
                row = faults[config][scenario]
                cells.append(f"{row['non2xx']}/{row['requests']}, {row['slowest_s']:.2f} s")
            lines.append(f"| {scenario} | " + " | ".join(cells) + " |")
        if "textbook" in faults:
            lines += [
                "",
                "Read the textbook's vanish and stall rows with care: its `pool_recycle` "
                "(0.9 x wait_timeout = 1.8 s, counted from connect) retires the warm-up "
                "connections at about the moment the requests resume, so a dead one is often "
                "dropped by age before `pool_pre_ping` meets it. With a production recycle of "
                "hours, that ping has no timeout and waits on a vanished peer until TCP gives "
                "up.",
            ]
        down = {c: faults[c]["down"] for c in configs if "down" in faults[c]}
        if down:
            lines += [
                "",
                "While the database is down: "
                + "; ".join(
                    f"{c} answered {', '.join(sorted(set(r['during_statuses'])))} "
                    f"(slowest {r['during_slowest_s']:.2f} s)"
                    for c, r in down.items()
                )
                + ".",
            ]
    d = results.get("deploy")
    lines.append("")
    if d and "error" in d:
        lines.append(f"`make deploy` timing: not measured, it failed: {d['error']}")
    elif d:
        lines.append(
            f"`make deploy` onto a fresh test host: {d['fresh_s']:.0f} s (host boot "
            f"{d['host_up_s']:.0f} s + converge {d['converge_s']:.0f} s, "
            f"changed={d['fresh_changed']}); idempotent re-run: {d['rerun_s']:.0f} s "
            f"(changed={d['rerun_changed']})."
        )
    else:
        lines.append("`make deploy` timing: not measured in this run (`--no-deploy`).")
    m, v = results["machine"], results["versions"]
    lines += [
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, Linux {m['kernel']}. "
        + "Versions: "
        + ", ".join(f"{k} {val}" for k, val in v.items())
        + ".",
    ]
    return "\n".join(lines) + "\n"


def chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tp = results["throughput"]
    configs = list(tp)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    width = 0.38
    for i, endpoint in enumerate(ENDPOINTS):
        xs = [x + (i - 0.5) * width for x in range(len(configs))]
        med = [tp[c][endpoint]["rps_median"] for c in configs]
        rounds = [tp[c][endpoint]["rps_rounds"] for c in configs]
        lo = [max(0.0, m - min(r)) for m, r in zip(med, rounds, strict=True)]
        hi = [max(0.0, max(r) - m) for m, r in zip(med, rounds, strict=True)]
        bars = axes[0].bar(xs, med, width, yerr=[lo, hi], capsize=3, label=endpoint)
        axes[0].bar_label(bars, fmt="%.0f", fontsize=7, padding=2)
        p50 = [tp[c][endpoint]["p50_ms"] for c in configs]
        p99 = [tp[c][endpoint]["p99_ms"] for c in configs]
        axes[1].bar(xs, p99, width, alpha=0.35, color=f"C{i}", label=f"{endpoint} p99")
        axes[1].bar(xs, p50, width, color=f"C{i}", label=f"{endpoint} p50")
        app = [tp[c][endpoint]["app_cpu_us"] for c in configs]
        db = [tp[c][endpoint]["db_cpu_us"] for c in configs]
        axes[2].bar(xs, app, width, color=f"C{i}", label=f"{endpoint} Gunicorn workers")
        axes[2].bar(
            xs, db, width, bottom=app, color=f"C{i}", alpha=0.35, label=f"{endpoint} MariaDB"
        )
    for ax in axes:
        ax.set_xticks(range(len(configs)), configs, fontsize=8)
        ax.legend(fontsize=7)
    axes[0].set_title("Throughput (median of rounds, whiskers min-max)", fontsize=10)
    axes[0].set_ylabel("requests / s")
    axes[1].set_title("Latency (median of rounds)", fontsize=10)
    axes[1].set_ylabel("ms")
    axes[2].set_title("CPU time per request (median of rounds)", fontsize=10)
    axes[2].set_ylabel("µs")
    s = results["settings"]
    fig.suptitle(
        f"{s['workers']} Gunicorn workers each, wrk -c{s['connections']}, "
        f"{s['rounds']} interleaved rounds of {s['duration']} s; {results['machine']['cpu']}, "
        f"{results['machine']['cores']} cores; {results['date']}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_readme(table: str, readme: Path) -> bool:
    """Replace what is between the markers; False when the markers are missing."""
    if not readme.exists():
        return False
    text = readme.read_text()
    if MARK_START not in text or MARK_END not in text:
        return False
    before, rest = text.split(MARK_START, 1)
    _, after = rest.split(MARK_END, 1)
    block = f"{MARK_START}\n{table}\n![benchmark chart](bench/results/chart.png)\n{MARK_END}"
    readme.write_text(before + block + after)
    return True


# --------------------------------------------------------------------------- main


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
        finally:
            db.stop()
    if args.deploy:
        try:
            results["deploy"] = time_deploy(progress, raw)
        except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
            # The measurements above stand on their own; say why this one is missing.
            results["deploy"] = {"error": str(exc).splitlines()[0][:300]}
            progress(f"deploy timing failed: {results['deploy']['error']}")
    results["elapsed_s"] = round(time.monotonic() - started, 1)

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
    return results


if __name__ == "__main__":
    main()
