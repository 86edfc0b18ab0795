"""The report's fault sections: the idle and the hot fault matrix, and what to read them with."""

from __future__ import annotations

from collections import Counter
from typing import Any

from harness.hot import CLIENT_TIMEOUT, HOT_ENV


def _kind(status: str) -> str:
    return "2xx" if status.isdigit() and 200 <= int(status) < 300 else status


def _counts(statuses: list[str]) -> str:
    counts = Counter(_kind(s) for s in statuses)  # in order of first appearance
    return " + ".join(f"{n} x {kind}" for kind, n in counts.items()) or "none"


def idle_table(faults: dict[str, Any]) -> list[str]:
    configs = list(faults)
    scenarios = list(next(iter(faults.values())))
    lines = [
        "",
        "**Fault matrix, idle connections** (`harness/scenarios.py`, MariaDB "
        "`wait_timeout=2`): non-2xx of the requests sent once the database is reachable "
        "again, and the slowest one.",
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


def idle_notes(faults: dict[str, Any]) -> list[str]:
    lines = []
    if "fsa-preping" in faults:
        lines += [
            "",
            "Read the pre-ping column's vanish and stall rows with care: its `pool_recycle` "
            "(0.9 x wait_timeout = 1.8 s, counted from connect) retires the warm-up "
            "connections at about the moment the requests resume, so a dead one is often "
            "dropped by age before `pool_pre_ping` meets it. With a production recycle of "
            "hours, that ping has no timeout and waits on a vanished peer until TCP gives "
            "up (the hot rows below show it).",
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


def hot_cell(row: dict[str, Any]) -> str:
    cell = f"{_counts(row['statuses'])}, slowest {row['slowest_s']:.1f} s"
    if row["gave_up"]:
        cell += " (gave up)"
    if {_kind(s) for s in row["after_statuses"]} != {"2xx"}:
        cell += f"; after: {_counts(row['after_statuses'])}"
    return cell


def hot_table(hot: dict[str, Any]) -> list[str]:
    configs = list(hot)
    scenarios = list(next(iter(hot.values())))
    settings = ", ".join(f"`{k}={v}`" for k, v in HOT_ENV.items() if k != "DB_WRITE_TIMEOUT")
    lines = [
        "",
        "**Fault matrix, busy connections** (`harness/hot.py`, the hot fault tests' "
        f"scenarios and settings: {settings}): the requests sent while the fault is in "
        f'force (client timeout {CLIENT_TIMEOUT:.0f} s), and the slowest; "after" when the '
        "requests once it is over (healed, or failed over) were not all 2xx. A "
        "configuration other than the kit gives up after its first failure.",
        "",
        "| scenario | " + " | ".join(configs) + " |",
        "|---|" + "---|" * len(configs),
    ]
    for scenario in scenarios:
        lines.append(
            f"| {scenario} | " + " | ".join(hot_cell(hot[c][scenario]) for c in configs) + " |"
        )
    partition = {c: hot[c]["partition"] for c in hot if "partition" in hot[c]}
    healthz = [
        f"{c} {', '.join(r['healthz_statuses'])}"
        for c, r in partition.items()
        if r.get("healthz_statuses")
    ]
    breaker = [
        f"{c}: {r['open_median_ms']} ms in the median after the first 503, the first 2xx "
        f"{r['healed_after_s']} s after healing"
        for c, r in partition.items()
        if "open_median_ms" in r and "healed_after_s" in r
    ]
    lines += [
        "",
        "What the kit must do (tests/test_hot_faults.py): vanish_busy 0 non-2xx within "
        "`DB_NET_TIMEOUT` + 1 s; partition a 503 for every request within `DB_NET_TIMEOUT` "
        "+ `DB_CONNECT_TIMEOUT` + 1 s, then 2xx once healed; stall_busy (TCP alive, "
        "nothing answers: the one fault only a query timeout bounds) a 503 after "
        "`DB_READ_TIMEOUT` for each busy connection, the rest 2xx; failover 0 non-2xx."
        + (f" `/healthz` during the partition: {'; '.join(healthz)}." if healthz else "")
        + (f" The breaker during the partition: {'; '.join(breaker)}." if breaker else ""),
    ]
    return lines


def fault_sections(faults: dict[str, Any] | None, hot: dict[str, Any] | None) -> list[str]:
    lines = []
    if faults:
        lines += idle_table(faults) + idle_notes(faults)
    if hot:
        lines += hot_table(hot)
    return lines
