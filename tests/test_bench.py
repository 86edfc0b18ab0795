"""Smoke run of ``make bench``: short, end to end, figures sane; never touches bench/results.

Every configuration runs once on both endpoints, every Gunicorn setup of the scaling phase
once; the fault matrix runs the kit only, every idle scenario and the fast hot ones.
"""

from __future__ import annotations

import hashlib
import socket
import time
from pathlib import Path

import pytest

from bench.configs import BENCH, CONFIGS, ENDPOINTS
from bench.load import WrkLoad, measured_run
from bench.micro import CASES, PROFILED
from bench.run import main
from bench.scaling import WORKER_SETUPS
from harness.hot import READ_TIMEOUT
from harness.mariadb import LocalMariaDB
from harness.scenarios import SCENARIOS

pytestmark = [pytest.mark.slow, pytest.mark.bench]

HOT = ("vanish_busy", "failover")


def _digest(directory: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.glob("*"))
        if p.is_file()
    }


def _sane(where: str, s: dict[str, float]) -> None:
    assert s["rps_median"] > 0, where
    assert 0 < s["p50_ms"] <= s["p99_ms"], where
    assert s["non2xx"] == 0 and s["socket_errors"] == 0, where


def test_bench_smoke(tmp_path: Path) -> None:
    committed = _digest(BENCH / "results")
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- bench:start -->\nold\n<!-- bench:end -->\ntail\n")

    results = main(
        [
            "--rounds=1",
            "--duration=1",
            "--warmup=0",
            "--fault-configs=kit",
            "--fault-requests=4",
            f"--hot-scenarios={','.join(HOT)}",
            "--hot-requests=2",
            "--hop-configs=kit,floor",
            "--hop-delays=0,2000",
            "--profile",
            "--micro-iterations=75",
            "--scaling-rounds=1",
            f"--out={tmp_path / 'out'}",
            f"--readme={readme}",
        ]
    )

    tp = results["throughput"]
    assert list(tp) == list(CONFIGS)
    for config, endpoints in tp.items():
        assert list(endpoints) == list(ENDPOINTS)
        for endpoint, s in endpoints.items():
            _sane(f"{config} {endpoint}", s)
            assert s["kit_ratio"] > 0 and s["kit_ratio_cpu"] > 0, (config, endpoint)
    assert tp["kit"]["GET /"]["kit_ratio"] == 1.0

    st = results["statements"]
    assert list(st) == list(CONFIGS)
    assert st["kit"] == {"GET /": ["SELECT"], "POST /notes": ["BEGIN+INSERT", "COMMIT"]}
    assert st["floor"] == {"GET /": ["SELECT"], "POST /notes": ["INSERT"]}
    assert st["floor-orm"]["GET /"] == ["SELECT"]
    assert st["fsa-preping"]["GET /"][0] == "PING" and "PING" not in st["fsa-recycle"]["GET /"]

    hop = results["hop"]
    # The relay holds each byte 2 ms each way, never less: a round trip through it takes
    # 4 ms at least, whatever the machine's load (a direct one takes well under 1 ms).
    assert hop["round_trip_us"]["2000"] >= 4000, hop["round_trip_us"]
    assert list(hop["configs"]) == ["kit", "floor"]
    for config, endpoints in hop["configs"].items():
        for endpoint, delays in endpoints.items():
            for delay, h in delays.items():
                where = (config, endpoint, delay, h)
                assert 0 < h["p50_ms"] <= h["p99_ms"] and h["rps"] > 0 and not h["errors"], where

    in_process = results["in_process"]
    assert list(in_process["cases"]) == list(CASES)
    for case, endpoints in in_process["cases"].items():
        for endpoint, p in endpoints.items():
            assert 0 < p["cpu_us"] <= p["wall_us"], (case, endpoint, p)
    assert list(in_process["profile"]) == list(PROFILED)
    for case, endpoints in in_process["profile"].items():
        for endpoint, areas in endpoints.items():
            assert sum(areas.values()) > 0, (case, endpoint, areas)
    assert 0 < in_process["access_line"]["cpu_us"] <= in_process["access_line"]["wall_us"]

    sc = results["scaling"]
    assert list(sc["workers"]) == list(WORKER_SETUPS)
    for label, s in sc["workers"].items():
        _sane(label, s)
    assert list(sc["nginx"]["runs"]) == ["direct", "nginx"]
    for label, endpoints in sc["nginx"]["runs"].items():
        for endpoint, s in endpoints.items():
            _sane(f"{label} {endpoint}", s)
    for label, memory in sc["memory"].items():
        assert len(memory["workers"]) == 2, label
        w = memory["worker_median"]
        assert 0 < w["uss_kib"] <= w["pss_kib"] <= w["rss_kib"], (label, w)

    faults = results["faults"]
    assert list(faults) == ["kit"]
    assert list(faults["kit"]) == list(SCENARIOS)
    for scenario, row in faults["kit"].items():
        assert row["requests"] == 4 and row["non2xx"] == 0, (scenario, row)
        assert 0 < row["slowest_s"] < 2.0, (scenario, row)
    assert set(faults["kit"]["down"]["during_statuses"]) == {"503"}

    hot = results["hot_faults"]
    assert list(hot) == ["kit"] and list(hot["kit"]) == list(HOT)
    for scenario, row in hot["kit"].items():
        assert row["requests"] == 2 and row["non2xx"] == 0, (scenario, row)
        # The bounds are tests/test_hot_faults.py's; here, only that nothing waited for the
        # query bound (the naive configuration's requests wait for the client's timeout).
        assert row["slowest_s"] < READ_TIMEOUT, (scenario, row)
    phases = {"throughput", "statements", "hop", "in-process", "scaling", "hot faults",
              "idle faults"}  # fmt: skip
    assert phases <= set(results["phases"])

    out = tmp_path / "out"
    assert (out / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| kit |" in (out / "results.md").read_text()
    text = readme.read_text()
    assert "| req/s, the kit ÷" in text and "old" not in text and text.endswith("tail\n")
    assert "bench/results/chart.png" in text
    assert "one hop away (" in text
    assert _digest(BENCH / "results") == committed, "the smoke run wrote into bench/results"


def test_a_run_nothing_answers_is_made_longer_then_refused(mariadb: LocalMariaDB) -> None:
    """wrk against a server that takes connections and never answers (as a machine too busy
    to answer within a 1 s run does) gives no rate: the run is made again at 2, 4 and 8 s,
    then the bench stops saying why, instead of dividing by zero."""
    listener = socket.create_server(("127.0.0.1", 0))  # the kernel accepts; nobody reads
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(RuntimeError, match="answered no request in 8 s: the machine is too"):
            measured_run(
                url, None, mariadb.pid(), "/", "get", WrkLoad(threads=1, connections=1, duration=1)
            )
        assert time.monotonic() - started >= 1 + 2 + 4 + 8
    finally:
        listener.close()
