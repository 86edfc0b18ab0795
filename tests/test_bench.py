"""Smoke run of ``make bench``: short, end to end, figures sane; never touches bench/results."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from bench.configs import BENCH, ENDPOINTS
from bench.run import main
from harness.scenarios import SCENARIOS

pytestmark = [pytest.mark.slow, pytest.mark.bench]

CONFIGS = ("bare", "textbook", "kit")


def _digest(directory: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.glob("*"))
        if p.is_file()
    }


def test_bench_smoke(tmp_path: Path) -> None:
    committed = _digest(BENCH / "results")
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- bench:start -->\nold\n<!-- bench:end -->\ntail\n")

    results = main(
        [
            "--rounds=1",
            "--duration=1",
            f"--configs={','.join(CONFIGS)}",
            "--fault-configs=kit",
            "--fault-requests=4",
            "--micro-iterations=200",
            f"--out={tmp_path / 'out'}",
            f"--readme={readme}",
            "--no-deploy",
        ]
    )

    tp = results["throughput"]
    assert list(tp) == list(CONFIGS)
    for config, endpoints in tp.items():
        assert list(endpoints) == list(ENDPOINTS)
        for endpoint, s in endpoints.items():
            where = f"{config} {endpoint}"
            assert s["rps_median"] > 0, where
            assert 0 < s["p50_ms"] <= s["p99_ms"], where
            assert s["non2xx"] == 0 and s["socket_errors"] == 0, where
            assert s["ratio_vs_bare"] > 0, where
    assert tp["bare"]["GET /"]["ratio_vs_bare"] == 1.0

    rm = results["removal"]
    assert rm["query_session_kept_us"] > 0 and rm["rollback_round_trip_us"] > 0
    assert rm["query_then_remove_kit_us"] > 0 and rm["query_then_close_kit_us"] > 0
    assert rm["query_then_remove_without_rollback_us"] > 0

    st = results["statements"]
    assert st["bare"]["GET /"] == ["SELECT"]
    assert st["kit"]["GET /"][0] == "SELECT" and "PING" not in st["kit"]["GET /"]
    assert st["textbook"]["GET /"][0] == "PING"

    faults = results["faults"]
    assert list(faults) == ["kit"]
    assert list(faults["kit"]) == list(SCENARIOS)
    for scenario, row in faults["kit"].items():
        assert row["requests"] == 4 and row["non2xx"] == 0, (scenario, row)
        assert 0 < row["slowest_s"] < 2.0, (scenario, row)
    assert set(faults["kit"]["down"]["during_statuses"]) == {"503"}

    out = tmp_path / "out"
    assert (out / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| kit |" in (out / "results.md").read_text()
    text = readme.read_text()
    assert "| kit |" in text and "old" not in text and text.endswith("tail\n")
    assert "bench/results/chart.png" in text
    assert "not measured" in text
    assert _digest(BENCH / "results") == committed, "the smoke run wrote into bench/results"
