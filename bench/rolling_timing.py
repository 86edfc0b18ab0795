"""Rolling deploys timed on a test fleet of its own (db1, app1, app2, web1), under GET and
POST load through web1: a new release, then a release that cannot get ready."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.progress import Progress
from harness import ROOT
from harness.fleet import Fleet
from harness.rolling import Rolled, release_variant, under_load
from harness.testhost import snapshot_release


def figures(rolled: Rolled) -> dict[str, Any]:
    # A resend not right after an nginx reload is a request a client that does not resend
    # would have lost: counted as lost, not as resent.
    stray = len(rolled.resent_apart_from_reloads())
    return {
        "seconds": round(rolled.run.seconds, 1),
        "ok": rolled.answered,
        "lost": len(rolled.lost) + stray,
        "duplicated": rolled.duplicated,
        "lost_writes": rolled.missing,
        "resent": len(rolled.resent) - stray,
        "returncode": rolled.run.returncode,
    }


def time_rolling(progress: Progress, raw: Path) -> dict[str, Any]:
    """Boot and converge a fleet, then time a rolling redeploy of a new release and one of a
    broken release (which must stop on the first host); the fleet is removed afterwards."""
    subprocess.run([sys.executable, ROOT / "scripts" / "install_collections.py"], check=True)
    with tempfile.TemporaryDirectory(prefix="bench-rolling-") as tmp:
        work = Path(tmp)
        source = snapshot_release(work / "v1")
        fleet = Fleet.for_test(work, source_dir=source)
        try:
            boot = fleet.up()
            cold = fleet.playbook()
            (raw / "rolling-converge.log").write_text(cold.output)
            if cold.returncode != 0:
                raise RuntimeError(f"fleet converge failed: see {raw}/rolling-converge.log")
            progress(f"fleet up {boot:.0f} s, converged {cold.seconds:.0f} s")
            v2 = release_variant(source, work / "v2", note="bench")
            new = under_load(fleet, extra={"app_source_dir": str(v2)})
            (raw / "rolling-new-release.log").write_text(new.run.output)
            if new.run.returncode != 0:
                raise RuntimeError(f"the new release failed: see {raw}/rolling-new-release.log")
            progress(f"rolling redeploy of a new release: {new.summary()}")
            fleet.source_dir = v2
            broken = release_variant(v2, work / "broken", broken=True)
            bad = under_load(fleet, extra={"app_source_dir": str(broken)})
            (raw / "rolling-broken-release.log").write_text(bad.run.output)
            if bad.run.returncode == 0 or "current is back on" not in bad.run.output:
                raise RuntimeError(
                    f"the broken release was not stopped and rolled back on app1: "
                    f"see {raw}/rolling-broken-release.log"
                )
            progress(f"broken release (stops on app1, rolled back): {bad.summary()}")
        finally:
            fleet.down()
    return {"app_hosts": 2, "new_release": figures(new), "broken_release": figures(bad)}
