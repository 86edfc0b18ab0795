"""``results/chart.png``: one figure: throughput and CPU per request of every configuration,
latency against a network hop's round trip (when measured), how the kit scales (workers)
and what nginx in front costs (with ``--profile``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.configs import ENDPOINTS

WIDTH = 0.38


def _throughput(ax: Any, tp: dict[str, Any]) -> None:
    configs = list(tp)
    for i, endpoint in enumerate(ENDPOINTS):
        xs = [x + (i - 0.5) * WIDTH for x in range(len(configs))]
        med = [tp[c][endpoint]["rps_median"] for c in configs]
        rounds = [tp[c][endpoint]["rps_rounds"] for c in configs]
        lo = [max(0.0, m - min(r)) for m, r in zip(med, rounds, strict=True)]
        hi = [max(0.0, max(r) - m) for m, r in zip(med, rounds, strict=True)]
        bars = ax.bar(xs, med, WIDTH, yerr=[lo, hi], capsize=3, label=endpoint)
        ax.bar_label(bars, fmt="%.0f", fontsize=7, padding=2)
    ax.set_xticks(range(len(configs)), configs, fontsize=8)
    ax.set_title("Throughput (median of rounds, whiskers min-max)", fontsize=10)
    ax.set_ylabel("requests / s")
    ax.legend(fontsize=7)


def _cpu(ax: Any, tp: dict[str, Any]) -> None:
    configs = list(tp)
    for i, endpoint in enumerate(ENDPOINTS):
        xs = [x + (i - 0.5) * WIDTH for x in range(len(configs))]
        app = [tp[c][endpoint]["app_cpu_us"] for c in configs]
        db = [tp[c][endpoint]["db_cpu_us"] for c in configs]
        ax.bar(xs, app, WIDTH, color=f"C{i}", label=f"{endpoint} Gunicorn workers")
        ax.bar(xs, db, WIDTH, bottom=app, color=f"C{i}", alpha=0.35, label=f"{endpoint} MariaDB")
    ax.set_xticks(range(len(configs)), configs, fontsize=8)
    ax.set_title("CPU time per request (median of rounds)", fontsize=10)
    ax.set_ylabel("µs")
    ax.legend(fontsize=7)


def _scaling(ax: Any, sc: dict[str, Any]) -> None:
    setups = list(sc["workers"])
    rps = [sc["workers"][s]["rps_median"] for s in setups]
    p99 = [sc["workers"][s]["p99_ms"] for s in setups]
    bars = ax.bar(range(len(setups)), rps, 0.6, color="C2", label="req/s")
    ax.bar_label(bars, fmt="%.0f", fontsize=7, padding=2)
    ax.set_xticks(range(len(setups)), setups, fontsize=8)
    ax.set_ylabel("requests / s")
    twin = ax.twinx()
    twin.plot(range(len(setups)), p99, "o-", color="C3", label="p99 ms")
    twin.set_ylabel("p99 ms")
    twin.set_ylim(bottom=0)
    ax.set_title(f"The kit, GET /, wrk -c{sc['connections']}: Gunicorn workers", fontsize=10)
    handles = [bars, *twin.get_lines()]
    ax.legend(handles, ["req/s", "p99 ms"], fontsize=7, loc="upper left")


def _nginx(ax: Any, sc: dict[str, Any]) -> None:
    runs = sc["nginx"]["runs"]
    paths = list(runs)
    for i, endpoint in enumerate(ENDPOINTS):
        xs = [x + (i - 0.5) * WIDTH for x in range(len(paths))]
        p50 = [runs[p][endpoint]["p50_ms"] for p in paths]
        p99 = [runs[p][endpoint]["p99_ms"] for p in paths]
        tails = ax.bar(xs, p99, WIDTH, alpha=0.35, color=f"C{i}", label=f"{endpoint} p99")
        ax.bar(xs, p50, WIDTH, color=f"C{i}", label=f"{endpoint} p50")
        ax.bar_label(tails, fmt="%.0f", fontsize=7, padding=2)
    ax.set_xticks(range(len(paths)), ["straight to Gunicorn", "through nginx"], fontsize=8)
    ax.set_title(
        f"{sc['nginx']['connections']} connections, {sc['nginx']['workers']} sync workers: latency",
        fontsize=10,
    )
    ax.set_ylabel("ms")
    ax.legend(fontsize=7)


def _hop(ax: Any, hop: dict[str, Any], endpoint: str) -> None:
    delays = [str(d) for d in hop["delays_us"]]
    trips = [hop["round_trip_us"][d] / 1000 for d in delays]
    for i, (config, endpoints) in enumerate(hop["configs"].items()):
        per = endpoints[endpoint]
        ax.plot(trips, [per[d]["p50_ms"] for d in delays], "o-", color=f"C{i}", label=config)
        ax.plot(trips, [per[d]["p99_ms"] for d in delays], ":", color=f"C{i}", alpha=0.6)
    ax.set_title(f"{endpoint} one hop away: latency, wrk -c1 (p50 solid, p99 dotted)", fontsize=10)
    ax.set_xlabel("round trip to MariaDB, ms (measured)")
    ax.set_ylabel("ms")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7)


def chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tp, hop, sc = results["throughput"], results.get("hop"), results.get("scaling")
    rows = 1 + bool(hop) + bool(sc)
    fig, axes = plt.subplots(rows, 2, figsize=(15, 4.6 * rows), squeeze=False)
    _throughput(axes[0][0], tp)
    _cpu(axes[0][1], tp)
    if hop:
        for ax, endpoint in zip(axes[1], ENDPOINTS, strict=True):
            _hop(ax, hop, endpoint)
    if sc:
        _scaling(axes[-1][0], sc)
        _nginx(axes[-1][1], sc)
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
