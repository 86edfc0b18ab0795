"""The Prometheus alerting rules (deploy/prometheus/): promtool checks them and runs their unit
tests; each test case is shown able to fail; every series they read is one the kit exports
(src/idleproof/metrics.py), with label values it can take, or one of the two external
series; every alert has a runbook section.

The unit tests' own cases are in deploy/prometheus/idleproof.rules.test.yml. Here each alert
is broken on purpose twice: made never to fire (the file's cases that expect it must fail),
and made to fire always (its cases on healthy series, past its ``for``, must fail).
"""

from __future__ import annotations

import copy
import functools
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.utils import floatToGoString

from harness import ROOT
from idleproof import flask as idleproof_flask
from idleproof import metrics
from idleproof.guard import CAUSES, LOST_CAUSES
from tests.helpers import report

RULES = ROOT / "deploy" / "prometheus" / "idleproof.rules.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "idleproof.rules.test.yml"
RUNBOOK = ROOT / "deploy" / "RUNBOOK.md"
# Series the kit's units on the database hosts write for node_exporter's textfile collector
# (replication, backup, copy), not the app's metrics.
EXTERNAL = {
    "idleproof_replication_seconds_behind_primary",
    "idleproof_replication_running",
    "idleproof_replication_unacknowledged_commits_total",
    "idleproof_db_writable",
    "idleproof_backup_last_success_timestamp_seconds",
    "idleproof_backup_copy_last_success_timestamp_seconds",
}
# The values each label the rules match on can take in the kit.
LABEL_VALUES = {
    ("idleproof_db_connections_lost_total", "cause"): set(LOST_CAUSES),
    ("idleproof_db_connections_replaced_total", "cause"): set(CAUSES),
    ("idleproof_http_503_responses_total", "error"): {
        cls.__name__ for cls in idleproof_flask.UNAVAILABLE
    },
    ("idleproof_db_checkout_wait_seconds_bucket", "le"): {
        floatToGoString(b)  # type: ignore[no-untyped-call]
        for b in metrics.CHECKOUT_WAIT._upper_bounds
    },
}
SELECTOR = re.compile(r"\b((?:idleproof|mysql)_\w+)(\{[^}]*\})?")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')
NEVER, ALWAYS = "vector(0) > 1", "vector(1)"


def promtool(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    if shutil.which("promtool") is None:
        pytest.fail(
            "promtool not found: run scripts/install-system-deps test (Debian's prometheus)"
        )
    return subprocess.run(
        ["promtool", *map(str, args)], capture_output=True, text=True, timeout=60, cwd=cwd
    )


@functools.cache
def parsed(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load(path: Path) -> Any:
    """The YAML file's content, a copy of its own for the caller to change."""
    return copy.deepcopy(parsed(path))


def alerts() -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in load(RULES)["groups"] for r in g["rules"] if "alert" in r}


def seconds(duration: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    parts = re.findall(r"(\d+)([smhd])", duration)
    assert "".join(n + u for n, u in parts) == duration, f"unsupported duration {duration!r}"
    return sum(int(n) * units[u] for n, u in parts)


def exported() -> dict[str, MetricWrapperBase]:
    """Each series name the kit's /metrics can carry, and the metric that writes it."""
    names = {}
    for metric in vars(metrics).values():
        if isinstance(metric, MetricWrapperBase):
            for family in metric.describe():
                suffixes = {
                    "counter": ["_total"],
                    "gauge": [""],
                    "histogram": ["_bucket", "_count", "_sum"],
                }[family.type]
                names.update({family.name + s: metric for s in suffixes})
    return names


def test_promtool_checks_the_rules(request: pytest.FixtureRequest) -> None:
    result = promtool("check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in result.stdout, result.stdout
    report(request, "alerts", f"promtool check rules: {len(alerts())} alerts")


def test_promtool_unit_tests_pass(request: pytest.FixtureRequest) -> None:
    result = promtool("test", "rules", RULE_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    cases = [c for t in load(RULE_TESTS)["tests"] for c in t["alert_rule_test"]]
    firing = sum(1 for c in cases if c["exp_alerts"])
    report(request, "alerts", f"promtool test rules: {firing} firing, {len(cases) - firing} quiet")


def run_broken(tmp_path: Path, name: str, expr: str, cases: dict[str, Any]) -> str:
    """promtool's failures on the unit tests ``cases`` with alert ``name``'s expr replaced
    (empty when they pass)."""
    rules = load(RULES)
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == name:
                rule["expr"] = expr
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    (tmp_path / "tests.yml").write_text(yaml.safe_dump({**cases, "rule_files": ["rules.yml"]}))
    result = promtool("test", "rules", "tests.yml", cwd=tmp_path)
    output = result.stdout + result.stderr
    assert "FAILED" in output or result.returncode == 0, output
    return output if result.returncode else ""


def cases(unit_tests: dict[str, Any], keep: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The unit tests with only the alert_rule_test cases ``keep`` accepts."""
    tests = []
    for test in unit_tests["tests"]:
        kept = [c for c in test["alert_rule_test"] if keep(c)]
        if kept:
            tests.append({**test, "alert_rule_test": kept})
    return {**unit_tests, "tests": tests}


@pytest.mark.parametrize("name", sorted(alerts()))
def test_each_case_can_fail(name: str, tmp_path: Path) -> None:
    """The cases that expect the alert fail once it never fires, and its quiet cases past its
    `for` once it always fires (with the real rule they pass: the test above)."""
    rule = alerts()[name]
    unit_tests = load(RULE_TESTS)
    firing = cases(unit_tests, lambda c: c["alertname"] == name and bool(c["exp_alerts"]))
    assert firing["tests"], f"no test case expects {name} to fire"
    assert f"alertname: {name}," in run_broken(tmp_path, name, NEVER, firing)

    # Quiet cases before the alert's `for` ran out would pass even against an alert that is
    # always true; the ones after it must fail.
    past_for = seconds(rule.get("for", "0s"))
    quiet = cases(
        unit_tests,
        lambda c: (
            c["alertname"] == name and not c["exp_alerts"] and seconds(c["eval_time"]) >= past_for
        ),
    )
    assert quiet["tests"], f"no test case shows {name} quiet on a healthy series past its `for`"
    assert f"alertname: {name}," in run_broken(tmp_path, name, ALWAYS, quiet)


def test_rules_read_only_series_the_kit_exports() -> None:
    kit = exported()
    used_external = set()
    for name, rule in alerts().items():
        selectors = SELECTOR.findall(rule["expr"])
        assert selectors, f"{name} reads no idleproof_ or mysql_ series"
        for series, matchers in selectors:
            if series in EXTERNAL:
                used_external.add(series)
                continue
            assert series in kit, (
                f"{name} reads {series}, which src/idleproof/metrics.py does not export: "
                f"rename it in {RULES.name} or add it to EXTERNAL here"
            )
            for label, _, value in MATCHER.findall(matchers):
                known = {*kit[series]._labelnames, *(["le"] if series.endswith("_bucket") else [])}
                assert label in known, f"{name}: {series} has no label {label!r}"
                values = LABEL_VALUES.get((series, label))
                assert values is not None, f"{name}: list the values of {series}{{{label}}} here"
                assert value in values, f"{name}: {series}{{{label}}} is never {value!r}: {values}"
    assert used_external == EXTERNAL, "a rule for each series of the database hosts"


def runbook_anchors() -> set[str]:
    """The GitHub anchor of each of the runbook's headings."""
    prose = re.sub(r"^```.*?^```", "", RUNBOOK.read_text(), flags=re.S | re.M)
    titles = re.findall(r"^#{1,6} (.*)$", prose, re.M)
    return {re.sub(r"[^\w\- ]", "", t.strip().lower()).replace(" ", "-") for t in titles}


def test_every_alert_says_what_to_do_and_links_its_runbook_section() -> None:
    anchors = runbook_anchors()
    for name, rule in alerts().items():
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        notes = rule["annotations"]
        assert notes["summary"].startswith("{{ $labels.instance }}: "), name
        assert len(notes["description"]) > 100, f"{name}: say what to do"
        path, _, anchor = notes["runbook_url"].partition("#")
        assert path == "deploy/RUNBOOK.md", name
        assert anchor in anchors, f"{name}: no section #{anchor} in {RUNBOOK.name}"
        assert anchor == name.lower(), f"{name}: its section is its name"
    alert_sections = {a for a in anchors if a.startswith("idleproof")}
    assert alert_sections == {n.lower() for n in alerts()}, "one runbook section per alert"
