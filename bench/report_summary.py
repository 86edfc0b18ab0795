"""The README's block: a few lines of the run's figures, the rest linked (results.md)."""

from __future__ import annotations

from typing import Any

from bench.configs import ENDPOINTS
from bench.markdown import row

LABELS = {
    "fsa-recycle": "Flask-SQLAlchemy, recycle only",
    "fsa-preping": "Flask-SQLAlchemy, pre-ping",
    "kit": "the kit",
}


def idle_cell(scenarios: dict[str, Any]) -> str:
    failed = sum(s["non2xx"] for s in scenarios.values())
    sent = sum(s["requests"] for s in scenarios.values())
    slowest = max(s["slowest_s"] for s in scenarios.values())
    return f"{failed} non-2xx of {sent}, slowest {slowest:.2f} s"


def hot_cell(scenarios: dict[str, Any]) -> str:
    hung = sum(1 for s in scenarios.values() if "timeout" in s["statuses"])
    errors = sum(s["non2xx"] for s in scenarios.values())
    sent = sum(s["requests"] for s in scenarios.values())
    slowest = max(s["slowest_s"] for s in scenarios.values())
    if hung:
        return f"hung in {hung} of {len(scenarios)} (client gave up at {slowest:.0f} s)"
    json_503 = sum(s["statuses"].count("503") for s in scenarios.values())
    return f"{sent - errors} 2xx, {json_503} 503 JSON of {sent}, slowest {slowest:.1f} s"


def fault_rows(results: dict[str, Any]) -> list[str]:
    idle, hot = results.get("faults") or {}, results.get("hot_faults") or {}
    configs = [c for c in LABELS if c in idle or c in hot]
    if not configs:
        return []
    lines = ["| fault | " + " | ".join(LABELS[c] for c in configs) + " |"]
    lines.append("|---|" + "---|" * len(configs))
    if idle:
        names = ", ".join(next(iter(idle.values())))
        lines.append(row([f"idle connections ({names})"] + [idle_cell(idle[c]) for c in configs]))
    if hot:
        names = ", ".join(next(iter(hot.values())))
        lines.append(row([f"busy connections ({names})"] + [hot_cell(hot[c]) for c in configs]))
    return lines


def speed_rows(results: dict[str, Any]) -> list[str]:
    tp = results.get("throughput") or {}
    lines = ["", "| medians of one interleaved run | " + " | ".join(ENDPOINTS) + " |"]
    lines.append("|---|" + "--:|" * len(ENDPOINTS))
    for config, label in (("fsa-recycle", LABELS["fsa-recycle"]), ("floor-orm", "the ORM floor")):
        if config in tp and "kit" in tp:
            ratios = [f"{tp[config][e]['kit_ratio']:.2f}" for e in ENDPOINTS]
            lines.append(row([f"req/s, the kit ÷ {label}", *ratios]))
    hop = results.get("hop")
    if hop:
        delay = str(hop["delays_us"][-1])
        shown = [c for c in ("kit", "fsa-preping", "fsa-recycle") if c in hop["configs"]]
        cells = [
            " · ".join(f"{hop['configs'][c][e][delay]['p50_ms']:.2f}" for c in shown)
            for e in ENDPOINTS
        ]
        label = " · ".join(LABELS[c] for c in shown)
        trip = hop["round_trip_us"][delay]
        lines.append(row([f"p50 ms one hop away ({trip} µs round trip): {label}", *cells]))
    for name, runs in (results.get("apps") or {}).items():
        (read,) = runs["kit"]
        ratio = runs["as documented"][read]["kit_ratio"]
        lines.append(
            row([f"req/s, {name} with the kit ÷ as documented (`GET {read}`)", f"{ratio:.2f}", ""])
        )
    return lines if len(lines) > 3 else []


def summary(results: dict[str, Any]) -> str:
    lines = [
        f"Measured {results['date']} by `make bench` on {results['machine']['cores']} cores "
        "(the [full report](bench/results/results.md) and its [chart](bench/results/chart.png): "
        "every configuration, latency, CPU per request, a network hop, each fault):",
        "",
        *fault_rows(results),
        *speed_rows(results),
    ]
    return "\n".join(lines) + "\n"
