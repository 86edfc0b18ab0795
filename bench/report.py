"""The report: ``results.md`` (markdown, one small function per section), and the README's
block (:mod:`bench.report_summary`).

Every section reads the results dictionary that ``results.json`` holds, so a report can be
rendered again from a saved run. What the kit costs and why (targets, statements, the
in-process figures) is in :mod:`bench.report_costs`, the faults in :mod:`bench.report_faults`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.configs import DESCRIPTIONS, ENDPOINTS
from bench.markdown import row
from bench.report_costs import access_log, in_process, missed, statements_table, targets
from bench.report_faults import fault_sections
from bench.report_hop import fleet_hop_table, hop_tables, net_timeout_line
from harness import ROOT

README = ROOT / "README.md"
MARK_START, MARK_END = "<!-- bench:start -->", "<!-- bench:end -->"


def intro(results: dict[str, Any]) -> list[str]:
    s = results["settings"]
    lines = [
        f"Measured {results['date']} in one run: {s['rounds']} interleaved rounds of "
        f"{s['duration']} s per configuration and endpoint, `wrk -t{s['threads']} "
        f"-c{s['connections']}`, Gunicorn with {s['workers']} sync workers each under the "
        "kit's `gunicorn.conf.py`, one MariaDB, all on loopback; the `GET /` rounds, then "
        "the `POST /notes` rounds. Every configuration serves the same `notes` model with the same "
        "ORM query for `GET /` and the same `POST /notes` handler (`floor` excepted: no ORM).",
        "",
        "| configuration | what it is |",
        "|---|---|",
    ]
    lines += [row([f"`{c}`", DESCRIPTIONS.get(c, "")]) for c in results["throughput"]]
    return lines


def throughput_table(tp: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "Requests per second and latencies are medians of the rounds; kit ÷ this is the "
        "kit's median over this configuration's (above 1: the kit is faster).",
        "",
        "| configuration | GET / req/s | kit ÷ this | p50 ms | p99 ms "
        "| POST /notes req/s | kit ÷ this | p50 ms | p99 ms |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for config, endpoints in tp.items():
        cells = [config]
        for endpoint in ENDPOINTS:
            e = endpoints[endpoint]
            cells += [
                f"{e['rps_median']:.0f}",
                f"{e['kit_ratio']:.2f}",
                f"{e['p50_ms']:.2f}",
                f"{e['p99_ms']:.2f}",
            ]
        lines.append(row(cells))
    return lines


def cpu_table(tp: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "CPU time per request (median of the rounds, from /proc: the Gunicorn workers, then "
        "MariaDB), which a busy neighbour moves far less than requests per second; kit ÷ "
        "this = this one's CPU per request over the kit's, the throughput ratio a CPU-bound "
        "machine of its own would show:",
        "",
        "| configuration | GET / app µs | + db µs | kit ÷ this | POST /notes app µs | + db µs "
        "| kit ÷ this |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for config, endpoints in tp.items():
        cells = [config]
        for endpoint in ENDPOINTS:
            e = endpoints[endpoint]
            cells += [
                f"{e['app_cpu_us']:.0f}",
                f"{e['db_cpu_us']:.0f}",
                f"{e['kit_ratio_cpu']:.2f}",
            ]
        lines.append(row(cells))
    errors = {
        c: sum(e["non2xx"] + e["socket_errors"] for e in eps.values()) for c, eps in tp.items()
    }
    lines += [
        "",
        "Non-2xx or socket errors under load: "
        + ", ".join(f"{c} {n}" for c, n in errors.items())
        + ".",
    ]
    return lines


def scaling_tables(sc: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"**Scaling** (the kit, `GET /`, `wrk -t1 -c{sc['connections']}` with a new "
        "connection per request, as nginx opens them towards Gunicorn; interleaved rounds, "
        "medians; gthread NxT = N workers of T threads):",
        "",
        "| Gunicorn workers | req/s | p50 ms | p99 ms | app CPU µs/req |",
        "|---|--:|--:|--:|--:|",
    ]
    for label, s in sc["workers"].items():
        lines.append(
            row(
                [
                    label,
                    f"{s['rps_median']:.0f}",
                    f"{s['p50_ms']:.2f}",
                    f"{s['p99_ms']:.2f}",
                    f"{s['app_cpu_us']:.0f}",
                ]
            )
        )
    ng = sc["nginx"]
    lines += [
        "",
        f"At {ng['connections']} connections (`wrk -t{ng.get('threads', 1)}`), "
        f"{ng['workers']} sync workers, "
        "straight to Gunicorn on TCP and through a real nginx with the canonical site "
        "(Gunicorn on a unix socket, as deployed):",
        "",
        "| path | GET / req/s | p50 ms | p99 ms | POST /notes req/s | p50 ms | p99 ms |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for label, endpoints in ng["runs"].items():
        cells = [label]
        for endpoint in ENDPOINTS:
            e = endpoints[endpoint]
            cells += [f"{e['rps_median']:.0f}", f"{e['p50_ms']:.2f}", f"{e['p99_ms']:.2f}"]
        lines.append(row(cells))
    return lines + memory_table(sc["memory"])


def memory_table(mem: dict[str, Any]) -> list[str]:
    def mib(kib: float) -> str:
        return f"{kib / 1024:.1f}"

    lines = [
        "",
        "Memory after a short load on both endpoints (MiB, from `/proc/PID/smaps_rollup`; "
        "per worker: the median of the workers; USS = private pages, what one more worker "
        "adds; PSS shares the shared pages out):",
        "",
        "| `preload_app` | master RSS | worker RSS | worker PSS | worker USS |",
        "|---|--:|--:|--:|--:|",
    ]
    for label, m in mem.items():
        w = m["worker_median"]
        on = "on (shipped)" if label == "preload" else "off"
        lines.append(
            row(
                [
                    on,
                    mib(m["master"]["rss_kib"]),
                    mib(w["rss_kib"]),
                    mib(w["pss_kib"]),
                    mib(w["uss_kib"]),
                ]
            )
        )
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
    return [
        "",
        "`make deploy` timing, rolling deploys and the database host's death: measured on "
        "test fleets by `make bench BENCH_ARGS=--fleet`, not in this run.",
    ]


def host_death_line(d: dict[str, Any] | None) -> list[str]:
    if not d:  # not measured in this run: deploy_line says so
        return []
    if "error" in d:
        return ["", f"Database host death: not measured, it failed: {d['error']}"]
    recovered = "never" if d["recovered_s"] is None else f"{d['recovered_s']:.0f} s"
    return [
        "",
        f"Database host death (db1 of a test fleet powered off hard under load through web1, "
        f"{d['outage_s']:.0f} s off): {d['requests']} requests, {d['non_2xx']} non-2xx of "
        f"which {d['503_json']} 503 JSON, worst latency {d['slowest_s']:.1f} s (bound "
        f"{d['bound_s']:g} s); first 2xx {recovered} after the power-on (boot "
        f"{d['boot_s']:.0f} s); after MariaDB answered again {d['after_non_2xx']} non-2xx of "
        f"{d['after_requests']}.",
    ]


def rolling_line(r: dict[str, Any] | None) -> list[str]:
    if r and "error" in r:
        return ["", f"Rolling deploys: not measured, they failed: {r['error']}"]
    if not r:  # not measured in this run: deploy_line says so
        return []
    new, bad = r["new_release"], r["broken_release"]
    resent = sum(x.get("resent", 0) for x in (new, bad))
    return [
        "",
        f"Rolling deploys on a test fleet ({r['app_hosts']} app hosts behind web1, GET and "
        f"POST load through web1): a new release {new['seconds']:.0f} s, {new['ok']} requests "
        f"2xx, {new['lost']} lost, {new['duplicated']} duplicated writes, {new['lost_writes']} "
        f"lost writes; a broken release stopped on the first host and rolled back in "
        f"{bad['seconds']:.0f} s, {bad['ok']} requests 2xx, {bad['lost']} lost."
        + (
            f" {resent} requests were resent, as a browser would, on a keep-alive connection "
            f"that an nginx reload closed as they were sent."
            if resent
            else ""
        ),
    ]


def apps_table(costs: dict[str, Any] | None) -> list[str]:
    """The plugin and the kit's Gunicorn config on other people's applications."""
    if not costs:
        return []
    lines = [
        "",
        "**Applications no one here wrote** (`bench/apps.py`, installed unmodified from the "
        "index): each one's busiest read, as its documentation deploys it and with "
        "`?plugin=idleproof` and `--config python:idleproof.gunicorn_conf`, in interleaved "
        "rounds (medians; kit ÷ documented above 1: the kit is faster).",
        "",
        "| application | read | documented req/s | kit req/s | kit ÷ documented "
        "| documented p50 ms | kit p50 ms | documented CPU µs/req | kit CPU µs/req |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for name, runs in costs.items():
        (read,) = runs["kit"]
        kit, documented = runs["kit"][read], runs["as documented"][read]
        lines.append(
            row(
                [
                    name,
                    f"`GET {read}`",
                    f"{documented['rps_median']:.0f}",
                    f"{kit['rps_median']:.0f}",
                    f"{documented['kit_ratio']:.2f}",
                    f"{documented['p50_ms']:.2f}",
                    f"{kit['p50_ms']:.2f}",
                    f"{documented['app_cpu_us']:.0f}",
                    f"{kit['app_cpu_us']:.0f}",
                ]
            )
        )
    return lines


def run_line(results: dict[str, Any]) -> list[str]:
    m, v = results["machine"], results["versions"]
    phases = ", ".join(f"{name} {s:.0f} s" for name, s in results.get("phases", {}).items())
    return [
        "",
        f"This run took {results['elapsed_s'] / 60:.1f} min ({phases}). "
        f"Machine: {m['cpu']}, {m['cores']} cores, Linux {m['kernel']}. "
        + "Versions: "
        + ", ".join(f"{k} {val}" for k, val in v.items())
        + ".",
    ]


def markdown(results: dict[str, Any]) -> str:
    tp = results["throughput"]
    lines = intro(results) + throughput_table(tp) + cpu_table(tp)
    if "kit" in tp:
        lines += targets(tp) + missed(results) + access_log(tp, results.get("in_process"))
    if results.get("statements"):
        lines += statements_table(results["statements"])
    if results.get("in_process"):
        lines += in_process(results["in_process"])
    lines += hop_tables(results.get("hop"), results.get("statements"))
    lines += fleet_hop_table(results.get("fleet_hop"))
    if results.get("scaling"):
        lines += scaling_tables(results["scaling"])
    lines += fault_sections(results.get("faults"), results.get("hot_faults"))
    lines += apps_table(results.get("apps"))
    lines += deploy_line(results.get("deploy")) + rolling_line(results.get("rolling"))
    lines += net_timeout_line(results.get("net_timeout"))
    lines += host_death_line(results.get("host_death"))
    lines += run_line(results)
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
    block = f"{MARK_START}\n{table}{MARK_END}"
    readme.write_text(before + block + after)
    return True
