"""The report's cost sections: the targets, Gunicorn's access log, the statements each
configuration sends, and where the kit's time goes in process."""

from __future__ import annotations

from typing import Any

from bench.configs import ENDPOINTS, TARGETS
from bench.markdown import row
from bench.micro import CASES
from bench.profile import AREAS, PROFILE_SLICES


def targets(tp: dict[str, Any]) -> list[str]:
    lines = ["", "**Targets** (medians of this run; paired = median of the per-round ratios):"]
    for config, goal in TARGETS.items():
        if config not in tp:
            continue
        for endpoint in ENDPOINTS:
            e = tp[config][endpoint]
            verdict = "met" if e["kit_ratio"] >= goal else "**missed**"
            lines.append(
                f"- {endpoint}: kit ÷ {config} ≥ {goal:.2f}: {e['kit_ratio']:.2f}, {verdict} "
                f"(paired {e['kit_ratio_paired']:.2f}, by CPU per request "
                f"{e['kit_ratio_cpu']:.2f})"
            )
    return lines


def missed(results: dict[str, Any]) -> list[str]:
    """Where a missed target's gap is, in this run's own figures: worker CPU against round
    trips on loopback, the library's share of it, and the hop that pays it back."""
    tp = results["throughput"]
    gaps = [
        (config, endpoint)
        for config, goal in TARGETS.items()
        if config in tp
        for endpoint in ENDPOINTS
        if tp[config][endpoint]["kit_ratio"] < goal
    ]
    if not gaps:
        return []
    traced = results.get("statements") or {}
    parts = []
    for config, endpoint in gaps:
        cpu = tp["kit"][endpoint]["app_cpu_us"] - tp[config][endpoint]["app_cpu_us"]
        part = f"{endpoint} beside {config}: {cpu:+.0f} µs of worker CPU per request"
        if config in traced and "kit" in traced:
            trips = len(traced["kit"][endpoint]), len(traced[config][endpoint])
            part += f", {trips[0]} round trips against {trips[1]}"
        parts.append(part)
    text = "Where a target is missed, the gap is in the CPU table above: " + "; ".join(parts)
    profile = (results.get("in_process") or {}).get("profile")
    if profile:
        library = AREAS[0][0]
        own = ", ".join(
            f"{e} {profile['kit'][e][library] - profile['floor-orm'][e][library]:+.0f} µs"
            for e in ENDPOINTS
            if any(e == endpoint for _, endpoint in gaps)
        )
        text += (
            ". The profile below puts this much of it in the idleproof library's own code "
            f"beside floor-orm ({own}): the checkout guard, the write's transaction and retry "
            "bookkeeping, the metrics counts"
        )
    text += _hop_payback(results.get("hop"), gaps)
    return ["", text + "."]


def _hop_payback(hop: dict[str, Any] | None, gaps: list[tuple[str, str]]) -> str:
    """The smallest delay of the hop tables at which the kit outran every configuration it
    trailed on loopback, on that endpoint."""
    if not hop:
        return ""
    said = []
    for endpoint in ENDPOINTS:
        trailed = [c for c, e in gaps if e == endpoint and c in hop["configs"]]
        if not trailed:
            continue
        runs = {c: hop["configs"][c][endpoint] for c in ["kit", *trailed]}
        ahead = [
            d
            for d in map(str, hop["delays_us"])
            if all(runs["kit"][d]["rps"] >= runs[c][d]["rps"] for c in trailed)
        ]
        if ahead:
            d = ahead[0]
            said.append(
                f"{endpoint} ahead of {', '.join(trailed)} from {d} µs each way "
                f"({hop['round_trip_us'][d]} µs round trip)"
            )
        else:
            said.append(f"{endpoint} behind {', '.join(trailed)} at every delay measured")
    return ". Across a hop (the hop tables below): " + "; ".join(said) if said else ""


def access_log(tp: dict[str, Any], micro: dict[str, Any] | None) -> list[str]:
    if "kit-accesslog" not in tp:
        return []
    parts = []
    if micro:
        line, kit = micro["access_line"]["cpu_us"], micro["cases"]["kit"]["GET /"]["cpu_us"]
        parts.append(
            f"in process, one access line (`Logger.access()` with the kit's format, to a "
            f"file) costs {line:.0f} µs of CPU, {line / kit * 100:.0f} % of the kit's "
            "in-process CPU per `GET /`"
        )
    for endpoint in ENDPOINTS:
        kit, logged = tp["kit"][endpoint], tp["kit-accesslog"][endpoint]
        parts.append(
            f"under load on {endpoint}, `kit-accesslog` beside `kit` in the same rounds: "
            f"{(1 - 1 / logged['kit_ratio']) * 100:.0f} % of the throughput (paired "
            f"{(1 - 1 / logged['kit_ratio_paired']) * 100:.0f} %), "
            f"{logged['app_cpu_us'] - kit['app_cpu_us']:+.0f} µs of worker CPU per request"
        )
    return [
        "",
        "**Gunicorn's access log**: "
        + "; ".join(parts)
        + ". Under systemd the journal then does its own work for every line (not counted "
        "here).",
    ]


def statements_table(st: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "Round trips to MariaDB per request and the statements each carries "
        "(`BEGIN+INSERT`: sent together, one round trip; `bench/statements.py`):",
        "",
        "| configuration | GET / | POST /notes |",
        "|---|---|---|",
    ]
    for config, per in st.items():
        lines.append(row([config] + [f"{len(v)}: {', '.join(v)}" for v in per.values()]))
    return lines


def _timings(micro: dict[str, Any]) -> list[str]:
    cases = micro["cases"]
    lines = [
        "",
        "**Where the kit's time goes**, in process (`bench/micro.py`: one WSGI call of the app, "
        f"no server; fastest of {micro['slices']} interleaved slices of "
        f"{micro['iterations'] // micro['slices']} calls; metrics written to files as under "
        "Gunicorn). CPU is this thread's, wall adds the wait for MariaDB:",
        "",
        "| case | GET / CPU µs | wall µs | POST /notes CPU µs | wall µs |",
        "|---|--:|--:|--:|--:|",
    ]
    for case, endpoints in cases.items():
        cells = [f"`{case}`: {CASES.get(case, '')}"]
        for endpoint in ENDPOINTS:
            cells += [
                f"{endpoints[endpoint]['cpu_us']:.0f}",
                f"{endpoints[endpoint]['wall_us']:.0f}",
            ]
        lines.append(row(cells))

    def gap(other: str, endpoint: str, clock: str) -> float:
        return float(cases["kit"][endpoint][clock] - cases[other][endpoint][clock])

    if {"kit", "floor-orm", "session-kept", "no-begin"} <= set(cases):
        begin = gap("no-begin", "POST /notes", "wall_us")
        lines += [
            "",
            f"The kit spends {gap('floor-orm', 'GET /', 'cpu_us'):+.0f} µs of CPU per `GET /` "
            f"and {gap('floor-orm', 'POST /notes', 'cpu_us'):+.0f} µs per `POST /notes` "
            "beside the ORM floor (wall "
            f"{gap('floor-orm', 'GET /', 'wall_us'):+.0f} and "
            f"{gap('floor-orm', 'POST /notes', 'wall_us'):+.0f} µs). Removing the session "
            f"after each `GET /` costs {gap('session-kept', 'GET /', 'cpu_us'):+.0f} µs of "
            "CPU (the pool's checkin and checkout with the guard and metrics on both, a new "
            f"`Session`); the write transaction's `BEGIN` and `COMMIT` round trips cost "
            f"{begin:+.0f} µs of wall time per `POST /notes`.",
        ]
    return lines


def _profile(profile: dict[str, Any]) -> list[str]:
    kit, floor = profile["kit"], profile["floor-orm"]
    lines = [
        "",
        "A profile of the same calls (`bench/profile.py`: cProfile, own time by area, µs per "
        f"request, the smallest of {PROFILE_SLICES} interleaved slices per area; cProfile "
        "slows every Python "
        "call down, so compare the areas, not the totals with the timings above):",
        "",
        "| area | GET / kit | floor-orm | Δ | POST /notes kit | floor-orm | Δ |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for name in [name for name, _ in AREAS] + ["total"]:
        cells = [f"**{name}**" if name == "total" else name]
        for endpoint in ENDPOINTS:
            a, b = kit[endpoint], floor[endpoint]
            mine = sum(a.values()) if name == "total" else a.get(name, 0.0)
            theirs = sum(b.values()) if name == "total" else b.get(name, 0.0)
            cells += [f"{mine:.0f}", f"{theirs:.0f}", f"{mine - theirs:+.0f}"]
        lines.append(row(cells))
    return lines


def in_process(micro: dict[str, Any]) -> list[str]:
    return _timings(micro) + (_profile(micro["profile"]) if micro.get("profile") else [])
