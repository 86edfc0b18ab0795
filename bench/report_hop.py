"""The report's sections across a network hop: relayed (:mod:`bench.hop`) and real
(:mod:`bench.fleet_hop`)."""

from __future__ import annotations

from typing import Any

from bench.configs import ENDPOINTS
from bench.markdown import row


def cell(e: dict[str, Any]) -> str:
    """One configuration at one delay: p50 / p99 latency, throughput, errors if any."""
    errors = f", {e['errors']} errors" if e["errors"] else ""
    return f"{e['p50_ms']:.2f} / {e['p99_ms']:.2f} ms, {e['rps']:.0f}/s{errors}"


def hop_tables(hop: dict[str, Any] | None, statements: dict[str, Any] | None) -> list[str]:
    """Per endpoint: each delay's row, each configuration's latency and throughput."""
    if not hop:
        return []
    configs = list(hop["configs"])
    lines = [
        "",
        f"**Across a network hop** (`bench/hop.py`): MariaDB behind a relay that holds each "
        f"byte for the one-way delay given, each way; the round trip it really gave "
        f"(`SELECT 1`; straight to MariaDB: {hop['direct_round_trip_us']} µs) beside it. "
        f"Latency from one connection (`wrk -c1`: p50 / p99 ms), throughput at "
        f"`wrk -c{hop['connections']}` (req/s), {hop['workers']} sync workers; medians of "
        f"{hop['rounds']} round(s) of {hop['duration']} s, the configurations interleaved.",
    ]
    traced = statements or {}
    for endpoint in ENDPOINTS:
        counts = ", ".join(f"{c} {len(traced[c][endpoint])}" for c in configs if c in traced)
        lines += [
            "",
            f"`{endpoint}`" + (f" (round trips per request: {counts})" if counts else "") + ":",
            "",
            "| one-way delay | round trip | " + " | ".join(configs) + " |",
            "|--:|--:|" + "---|" * len(configs),
        ]
        for delay in map(str, hop["delays_us"]):
            cells = [f"{delay} µs", f"{hop['round_trip_us'][delay]} µs"]
            cells += [cell(hop["configs"][c][endpoint][delay]) for c in configs]
            lines.append(row(cells))
    return lines


def fleet_hop_table(fh: dict[str, Any] | None) -> list[str]:
    """The same loads one real hop away: this machine to db1 over a test fleet's bridge."""
    if not fh:
        return []
    if "error" in fh:
        return ["", f"One real hop away: not measured, it failed: {fh['error']}"]
    configs = list(fh["configs"])
    lines = [
        "",
        f"**One real hop away** (`bench/fleet_hop.py`): served on this machine, db1's MariaDB "
        f"across a test fleet's bridge as `site.yml` set it up (TLS), {fh['round_trip_us']} µs "
        f"round trip (`SELECT 1`); p50 / p99 ms from one connection, req/s at "
        f"`wrk -c{fh['connections']}`; medians of {fh['rounds']} round(s) of {fh['duration']} s:",
        "",
        "| endpoint | " + " | ".join(configs) + " |",
        "|---|" + "---|" * len(configs),
    ]
    for endpoint in ENDPOINTS:
        cells = [f"`{endpoint}`"]
        cells += [cell(fh["configs"][c][endpoint]) for c in configs]
        lines.append(row(cells))
    return lines


def net_timeout_line(n: dict[str, Any] | None) -> list[str]:
    """DB_NET_TIMEOUT at its floor on a busy LAN (:mod:`bench.net_timeout`)."""
    if not n:
        return []
    return [
        "",
        f"`DB_NET_TIMEOUT={n['net_timeout_s']:g}` on a healthy, busy LAN (`bench/net_timeout.py`: "
        f"{n['seconds']} s of GET and POST through web1 while db1's CPU and disk were saturated "
        f"and app2 pulled 4 MiB results across the bridge): {n['requests']} requests, "
        f"{n['non_2xx']} non-2xx, {n['lost_to_network']} connections declared dead; app1's "
        f"sockets to db1: worst smoothed round trip {n['worst_rtt_ms']:.1f} ms, "
        f"{n['retransmissions']} retransmissions.",
    ]
