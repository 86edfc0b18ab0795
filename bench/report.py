"""The report: ``results.md`` (markdown, one small function per section) and the README block.

Every section reads the results dictionary that ``results.json`` holds, so a report can be
rendered again from a saved run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.configs import ENDPOINTS
from bench.micro import MICRO_SLICES
from harness import ROOT

README = ROOT / "README.md"
MARK_START, MARK_END = "<!-- bench:start -->", "<!-- bench:end -->"
TARGET_RATIO = 0.98


def _ratio(value: float | None) -> str:
    return f"{value:.3f}" if value is not None else ""


def throughput_table(results: dict[str, Any]) -> list[str]:
    s = results["settings"]
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
    for config, endpoints in results["throughput"].items():
        cells = [config]
        for endpoint in ENDPOINTS:
            e = endpoints[endpoint]
            cells += [
                f"{e['rps_median']:.0f}",
                _ratio(e.get("ratio_vs_bare")),
                f"{e['p50_ms']:.2f}",
                f"{e['p99_ms']:.2f}",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def cpu_table(tp: dict[str, Any]) -> list[str]:
    lines = [
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
            cells += [
                f"{e['app_cpu_us']:.0f}",
                f"{e['db_cpu_us']:.0f}",
                _ratio(e.get("cpu_ratio_vs_bare")),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def errors_and_target(tp: dict[str, Any]) -> list[str]:
    errors = {
        c: sum(e["non2xx"] + e["socket_errors"] for e in eps.values()) for c, eps in tp.items()
    }
    lines = [
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
    return lines


def statements_table(st: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "Statements sent to MariaDB per request (each one a network round trip):",
        "",
        "| configuration | GET / | POST /notes |",
        "|---|---|---|",
    ]
    for config, per in st.items():
        cells = [f"{len(v)}: {', '.join(v)}" for v in per.values()]
        lines.append(f"| {config} | " + " | ".join(cells) + " |")
    return lines


def removal_under_load(tp: dict[str, Any]) -> str:
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
    return line + ";"


def removal_in_process(rm: dict[str, Any]) -> str:
    return (
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


def removal_section(tp: dict[str, Any], rm: dict[str, Any]) -> list[str]:
    lines = ["", "**Per-request session removal** (`session.remove()` at teardown):"]
    if "kit-noremove" in tp and "kit" in tp:
        lines.append(removal_under_load(tp))
    lines.append(removal_in_process(rm))
    return lines


def fault_table(faults: dict[str, Any]) -> list[str]:
    configs = list(faults)
    scenarios = list(next(iter(faults.values())))
    lines = [
        "",
        "Fault matrix (`harness/scenarios.py`, MariaDB `wait_timeout=2`): non-2xx "
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
    return lines


def fault_notes(faults: dict[str, Any]) -> list[str]:
    lines = []
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
    down = {c: faults[c]["down"] for c in faults if "down" in faults[c]}
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
    return lines


def deploy_line(d: dict[str, Any] | None) -> list[str]:
    if d and "error" in d:
        return ["", f"`make deploy` timing: not measured, it failed: {d['error']}"]
    if d:
        return [
            "",
            f"`make deploy` onto a fresh test host: {d['fresh_s']:.0f} s (host boot "
            f"{d['host_up_s']:.0f} s + converge {d['converge_s']:.0f} s, "
            f"changed={d['fresh_changed']}); idempotent re-run: {d['rerun_s']:.0f} s "
            f"(changed={d['rerun_changed']}).",
        ]
    return ["", "`make deploy` timing: not measured in this run (`--no-deploy`)."]


def machine_line(results: dict[str, Any]) -> list[str]:
    m, v = results["machine"], results["versions"]
    return [
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, Linux {m['kernel']}. "
        + "Versions: "
        + ", ".join(f"{k} {val}" for k, val in v.items())
        + ".",
    ]


def markdown(results: dict[str, Any]) -> str:
    tp = results["throughput"]
    lines = throughput_table(results) + cpu_table(tp) + errors_and_target(tp)
    if results.get("statements"):
        lines += statements_table(results["statements"])
    if results.get("removal"):
        lines += removal_section(tp, results["removal"])
    if results.get("faults"):
        lines += fault_table(results["faults"]) + fault_notes(results["faults"])
    lines += deploy_line(results.get("deploy")) + machine_line(results)
    return "\n".join(lines) + "\n"


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
