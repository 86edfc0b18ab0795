"""``results/chart.png``: throughput, latency and CPU per request, side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.configs import ENDPOINTS


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
