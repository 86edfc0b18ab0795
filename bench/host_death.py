"""The database host dies under load, on a test fleet of its own (harness/fleet.py).

db1 is powered off hard (its wire cut, its container killed: no FIN, no RST, no shutdown)
while GET / and POST /notes run through web1 from 2 threads, stays off for twice the bound
the kit promises, and is powered on again from the disk the power cut left. Measured: the
worst latency, the 503s (each a JSON answer), the seconds from the power-on to the first
2xx, and whether every request after db1's MariaDB answered again was 2xx, with nothing
restarted. The same procedure as tests/test_fleet_incident.py, the figures kept.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.fleet_hop import client_vars
from bench.net_timeout import FLOOR, healthy_busy_lan
from bench.progress import Progress
from harness import ROOT
from harness.fleet import Fleet
from harness.incident import dead_host_bound, host_death, host_env
from harness.testhost import snapshot_release
from idleproof.settings import Settings


def time_host_death(
    progress: Progress, raw: Path, hop: Callable[[Fleet], dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Boot and converge a fleet, measure ``hop`` on it (:mod:`bench.fleet_hop`) and
    ``DB_NET_TIMEOUT``'s floor on a busy LAN (:mod:`bench.net_timeout`), power db1 off
    under load and on again; the figures, those two under "hop" and "net_timeout"."""
    subprocess.run([sys.executable, ROOT / "scripts" / "install_collections.py"], check=True)
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        fleet = Fleet.for_test(
            Path(tmp), source_dir=snapshot_release(Path(tmp) / "release"), name="ipkb"
        )
        try:
            boot = fleet.up()
            variables = client_vars(fleet) | {"app_db_net_timeout": FLOOR}
            converge = fleet.playbook("-e", json.dumps(variables))
            (raw / "host-death-converge.log").write_text(converge.output)
            if converge.returncode != 0:
                raise RuntimeError(
                    f"the fleet's converge failed: see {raw}/host-death-converge.log"
                )
            progress(f"fleet up {boot:.0f} s, converged {converge.seconds:.0f} s")
            measured = {"hop": hop(fleet)} if hop else {}
            measured["net_timeout"] = healthy_busy_lan(fleet, progress)
            bound = dead_host_bound(Settings.from_env(host_env(fleet, "app1")))
            death = host_death(fleet, "db1", down_seconds=2 * bound)
            progress(f"db1 powered off under load: {death.summary()}")
        finally:
            fleet.down()
    recovered = death.recovered_after
    return measured | {
        "requests": len(death.answers),
        "non_2xx": len(death.failed),
        "503_json": sum(a.status == 503 and a.error is not None for a in death.failed),
        "slowest_s": round(death.slowest, 2),
        "bound_s": bound,
        "outage_s": round(death.db_back - death.powered_off, 1),
        "boot_s": round(death.boot_seconds, 1),
        "recovered_s": None if recovered is None else round(recovered, 1),
        "after_requests": len(death.after),
        "after_non_2xx": sum(not a.ok for a in death.after),
        "healthz_non_200": sum(s != 200 for s in death.healthz),
    }
