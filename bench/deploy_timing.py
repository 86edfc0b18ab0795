"""``make deploy`` timed step by step on a fresh systemd-nspawn test host of its own."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.progress import Progress
from harness import ROOT
from harness.testhost import NspawnHost, PlaybookRun, snapshot_release


def converge(host: NspawnHost, raw: Path, label: str, what: str) -> PlaybookRun:
    """One ``site.yml`` run, its output kept in ``raw/deploy-<label>.log``."""
    run = host.playbook()
    (raw / f"deploy-{label}.log").write_text(run.output)
    if run.returncode != 0:
        raise RuntimeError(f"{what} failed: see {raw}/deploy-{label}.log")
    return run


def time_deploy(progress: Progress, raw: Path) -> dict[str, Any]:
    """What ``make deploy`` does, timed step by step on a fresh test host of its own.

    ``make deploy`` on the local inventory is ``scripts/testhost up`` followed by
    ``ansible-playbook site.yml``. The benchmark runs those steps through the deploy
    tests' ``NspawnHost`` (a host named for this run, on free ports) so that a test host
    someone is already using (``idle-proof-local``) is never torn down; then it converges
    again (the idempotent re-run) and removes its host.
    """
    subprocess.run([sys.executable, ROOT / "scripts" / "install_collections.py"], check=True)
    with tempfile.TemporaryDirectory(prefix="bench-release-") as release:
        host = NspawnHost(
            name=f"ipk-bench-{os.getpid()}", source_dir=snapshot_release(Path(release))
        )
        try:
            started = time.monotonic()
            host.up()
            boot = time.monotonic() - started
            progress(f"fresh test host up: {boot:.0f} s")
            first = converge(host, raw, "first", "first converge")
            progress(f"first converge: {first.seconds:.0f} s, changed={first.changed}")
            second = converge(host, raw, "rerun", "re-run")
            progress(f"idempotent re-run: {second.seconds:.0f} s, changed={second.changed}")
        finally:
            host.down()
    return {
        "host_up_s": round(boot, 1),
        "fresh_s": round(boot + first.seconds, 1),
        "converge_s": round(first.seconds, 1),
        "fresh_changed": first.changed,
        "rerun_s": round(second.seconds, 1),
        "rerun_changed": second.changed,
        "rerun_changed_tasks": second.changed_tasks(),
    }
