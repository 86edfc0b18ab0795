#!/usr/bin/env python3
"""`make test`'s runner: every test, with each test-fleet module beside the rest.

A module marked ``fleet`` boots four systemd-nspawn hosts of its own (own names, bridge and
subnet: harness/fleet.py) and spends most of its time waiting on them, so the modules run as
pytest processes of their own. The other tests that converge a test host (marked
``ansible``: named hosts and free ports of their own too) wait on it the same way and form
one more process, and one process runs everything else; all of them at the same time.
Each process writes its own log under .run/tests/ and ends it with its slowest tests; a
log is printed whole when its process ends, and the exit status is the first failure's
(0 when all passed).

    scripts/run_tests.py                 # everything
    scripts/run_tests.py --slow          # all but the tests `make unit` ran (make test)
    scripts/run_tests.py tests/test_x.py # any pytest arguments: one plain pytest run instead
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTEST = [sys.executable, "-m", "pytest"]
LOGS = ROOT / ".run" / "tests"
# Where a group's time goes, at the end of its log.
DURATIONS = "--durations=10"


def fleet_modules() -> list[str]:
    """The test files holding tests marked ``fleet``, as pytest collects them."""
    listed = subprocess.run(
        [*PYTEST, "--collect-only", "-q", "-m", "fleet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sorted({line.split("::")[0] for line in listed.splitlines() if "::" in line})


def main(args: list[str]) -> int:
    # --slow: the tests that need no server already ran (make unit), leave them out.
    main_group = "slow and not fleet" if args[:1] == ["--slow"] else "not fleet"
    args = args[1:] if args[:1] == ["--slow"] else args
    if args:
        return subprocess.run([*PYTEST, *args], cwd=ROOT, check=False).returncode
    modules = fleet_modules()
    groups = {
        "main": ["-m", f"{main_group} and not ansible"],
        "ansible": ["-m", f"{main_group} and ansible"],
    } | {Path(m).stem: [m] for m in modules}
    LOGS.mkdir(parents=True, exist_ok=True)
    running: dict[str, tuple[subprocess.Popen[bytes], Path, float]] = {}
    for name, group_args in groups.items():
        log = LOGS / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [*PYTEST, DURATIONS, *group_args], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
            )
        running[name] = (process, log, time.monotonic())
        print(f"run_tests: {name} started ({' '.join(group_args)}), log {log}", flush=True)
    status = 0
    while running:
        time.sleep(2)
        for name, (process, log, started) in list(running.items()):
            if process.poll() is None:
                continue
            del running[name]
            took = time.monotonic() - started
            print(f"\n===== run_tests: {name}, exit {process.returncode}, {took:.0f} s =====")
            print(log.read_text(errors="replace"), flush=True)
            status = status or process.returncode
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
