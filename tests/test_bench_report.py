"""The committed benchmark report is what ``bench.report`` renders from the committed figures.

Fast (no servers): it pins the report's format, so a change to the report code that would
alter ``make bench``'s output shows here, and the README block cannot drift from the run.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.configs import BENCH
from bench.report import MARK_END, MARK_START, host_death_line, markdown, write_readme
from bench.report_costs import missed
from bench.report_summary import summary
from harness import ROOT

RESULTS = BENCH / "results"


def test_results_md_is_rendered_from_results_json() -> None:
    results = json.loads((RESULTS / "results.json").read_text())
    assert markdown(results) == (RESULTS / "results.md").read_text()


def test_readme_block_is_the_committed_runs_summary(tmp_path: Path) -> None:
    table = summary(json.loads((RESULTS / "results.json").read_text()))
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{MARK_START}\nold\n{MARK_END}\ntail\n")
    assert write_readme(table, readme)
    block = readme.read_text().split(MARK_START)[1].split(MARK_END)[0]
    assert block in (ROOT / "README.md").read_text()


def test_write_readme_leaves_a_readme_without_markers_alone(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    assert not write_readme("| table |\n", readme)
    assert readme.read_text() == "# no markers\n"


def test_host_death_line_says_what_was_measured_or_why_not() -> None:
    figures = {
        "requests": 40,
        "non_2xx": 6,
        "503_json": 6,
        "slowest_s": 7.4,
        "bound_s": 8.0,
        "outage_s": 24.0,
        "boot_s": 6.0,
        "recovered_s": 9.0,
        "after_requests": 12,
        "after_non_2xx": 0,
        "healthz_non_200": 0,
    }
    line = host_death_line(figures)[1]
    assert "6 non-2xx of which 6 503 JSON, worst latency 7.4 s (bound 8 s)" in line
    assert "first 2xx 9 s after the power-on" in line
    assert "it failed: boom" in host_death_line({"error": "boom"})[1]
    assert host_death_line(None) == []


def test_a_missed_target_is_explained_and_a_met_one_is_not() -> None:
    results = json.loads((RESULTS / "results.json").read_text())
    tp = results["throughput"]
    for config, endpoint in [("fsa-recycle", "POST /notes"), ("floor-orm", "GET /")]:
        tp[config][endpoint]["kit_ratio"] = 0.5
    said = missed(results)[-1]
    assert "POST /notes beside fsa-recycle" in said and "GET / beside floor-orm" in said, said
    assert "idleproof library's own code" in said and "Across a hop" in said, said
    for config in tp:
        for endpoint in tp[config]:
            tp[config][endpoint]["kit_ratio"] = 1.5
    assert missed(results) == []
