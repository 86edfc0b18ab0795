"""The committed benchmark report is what ``bench.report`` renders from the committed figures.

Fast (no servers): it pins the report's format, so a change to the report code that would
alter ``make bench``'s output shows here, and the README block cannot drift from the run.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.configs import BENCH
from bench.report import MARK_END, MARK_START, markdown, write_readme
from harness import ROOT

RESULTS = BENCH / "results"


def test_results_md_is_rendered_from_results_json() -> None:
    results = json.loads((RESULTS / "results.json").read_text())
    assert markdown(results) == (RESULTS / "results.md").read_text()


def test_readme_block_is_the_committed_report(tmp_path: Path) -> None:
    table = (RESULTS / "results.md").read_text()
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
