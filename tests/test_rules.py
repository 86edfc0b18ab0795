"""The kit's rules and ``idleproof doctor``'s judgements, table-driven, no server needed.

The same rules run against a real MariaDB and real config files in test_doctor.py; here each
row is one situation and the verdict it must get.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ansible_collections.idleproof.kit.plugins.plugin_utils.inventory import report

from idleproof import rules
from idleproof.ops import checks
from idleproof.ops.checks import FAIL, PASS, WARN
from idleproof.ops.facts import AppFacts, GunicornFacts, ServerFacts, seconds
from idleproof.rules import Pools, Value
from idleproof.settings import Settings

URL = "mysql+pymysql://app:secret@127.0.0.1:3306/app"


def settings(**env: str) -> Settings:
    return Settings.from_env({"DATABASE_URL": URL, **env})


def v(name: str, value: float) -> Value:
    return Value(name, value)


WAITS = rules.Waits(v("P", 2), v("C", 2), v("I", 1), v("N", 5), v("R", 30), v("W", 10))


@pytest.mark.parametrize(
    ("problem", "expected"),
    [
        (rules.recycle_below_idle(v("R", 270), v("I", 300)), None),
        (
            rules.recycle_below_idle(v("R", 300), v("I", 300)),
            "R=300 must be below I=300: lower R or unset it to use 270",
        ),
        (rules.ping_within_read(v("P", 1), v("T", 1)), None),
        (rules.ping_within_read(v("P", 2), v("T", 1)), "P=2 must not exceed T=1: lower P"),
        (rules.net_below_read(v("N", 5), v("T", 30)), None),
        (
            rules.net_below_read(v("N", 30), v("T", 30)),
            "N=30 must be below T=30: lower N or raise T",
        ),
        (rules.gunicorn_outlasts_database(v("G", 45), WAITS), None),
        (
            rules.gunicorn_outlasts_database(v("G", 44), WAITS),
            "G=44 must exceed the longest a request can wait on the database, 44 s (2 x P=2 + "
            "I=1 + 2 x C=2 + N=5 + R=30): raise G to 45 or lower R",
        ),
        (rules.server_outlasts_recycle(v("W", 300), v("R", 270), v("I", 300)), None),
        (
            rules.server_outlasts_recycle(v("W", 2), v("R", 25920), v("I", 28800)),
            "R=25920 is not below the server's W=2: the server drops pooled connections before "
            "the pool recycles them: set I=2 (R then defaults below it) or raise the server's W "
            "above 25920",
        ),
        (rules.proxy_outlasts_gunicorn(v("N", 65), v("G", 60), v("S", 30)), None),
        (
            rules.proxy_outlasts_gunicorn(v("N", 60), v("G", 60), v("S", 30)),
            "N=60 must exceed G=60 and S=30: nginx would answer 504 for requests Gunicorn "
            "still lets run: raise N to 65",
        ),
        (
            rules.proxy_outlasts_gunicorn(v("N", 65), v("G", 20), v("S", 90)),
            "N=65 must exceed G=20 and S=90: nginx would answer 504 for requests Gunicorn "
            "still lets run: raise N to 95",
        ),
        (rules.stop_outlasts_graceful(v("T", 35), v("S", 30)), None),
        (
            rules.stop_outlasts_graceful(v("T", 30), v("S", 30)),
            "T=30 is not above S=30: a stop kills in-flight requests: set T to 35",
        ),
    ],
)
def test_rule_verdicts(problem: rules.Problem | None, expected: str | None) -> None:
    assert (None if problem is None else str(problem)) == expected


def test_enough_connections_counts_every_host_and_the_headroom() -> None:
    host = Pools(v("W", 4), v("S", 5), v("O", 5))  # 40 per host
    assert rules.enough_connections(v("M", 90), [host, host], headroom=10) is None
    problem = rules.enough_connections(v("M", 89), [host, host], headroom=10)
    assert problem is not None
    assert str(problem) == (
        "M=89 is below what the app hosts can open: 2 app host(s) x workers x (pool size + "
        "overflow) + 10 headroom = 90: raise M to at least 90 or lower W, S or O"
    )


@pytest.mark.parametrize("idle", [1, 2, 5, 30, 300, 350, 600, 1200, 1800, 28800])
def test_default_recycle_stays_below_idle(idle: float) -> None:
    assert 0 < rules.default_recycle(idle) < idle


# --- idleproof doctor's judgements --------------------------------------------------------------


def server(
    wait: int = 28800, max_connections: int = 151, aborted_connects: int = 0, user_limit: int = 0
) -> ServerFacts:
    limits = {
        "wait_timeout": str(wait),
        "interactive_timeout": str(wait),
        "max_connections": str(max_connections),
    }
    status = {"Threads_connected": "3", "Aborted_connects": str(aborted_connects)}
    return ServerFacts(dict(limits), dict(limits), status, user_limit)


def row(found: list[checks.Check], name: str) -> checks.Check:
    return next(c for c in found if c.name == name)


@pytest.mark.parametrize(
    ("env", "facts", "workers", "name", "status"),
    [
        ({}, server(wait=28800), 2, "wait_timeout vs DB_POOL_RECYCLE", PASS),
        ({}, server(wait=2), 2, "wait_timeout vs DB_POOL_RECYCLE", FAIL),
        ({"DB_IDLE_TIMEOUT": "300"}, server(wait=300), 2, "wait_timeout vs DB_POOL_RECYCLE", PASS),
        ({"DB_IDLE_TIMEOUT": "300"}, server(wait=280), 2, "wait_timeout vs DB_IDLE_TIMEOUT", WARN),
        ({"DB_IDLE_TIMEOUT": "300"}, server(wait=270), 2, "wait_timeout vs DB_POOL_RECYCLE", FAIL),
        ({}, server(max_connections=151), 4, "max_connections", PASS),  # 40, two hosts fit
        ({}, server(max_connections=60), 4, "max_connections", WARN),  # one host fits
        ({}, server(max_connections=39), 4, "max_connections", FAIL),
        ({}, server(max_connections=151), None, "max_connections", WARN),  # workers unknown
        ({}, server(user_limit=0), 4, "max_user_connections", PASS),  # no limit
        ({}, server(user_limit=100), 4, "max_user_connections", PASS),
        ({}, server(user_limit=50), 4, "max_user_connections", WARN),  # one host of 40 fits
        ({}, server(user_limit=3), 4, "max_user_connections", FAIL),
        ({}, server(aborted_connects=0), 2, "Aborted_connects", PASS),
        ({}, server(aborted_connects=3), 2, "Aborted_connects", WARN),
    ],
)
def test_server_checks(
    env: dict[str, str], facts: ServerFacts, workers: int | None, name: str, status: str
) -> None:
    found = checks.server_checks(settings(**env), facts, workers)
    assert row(found, name).status == status, row(found, name)
    assert not [c for c in found if c.status != PASS and not c.fix], "every finding has a fix"


def gunicorn(
    preload: bool = True,
    post_fork: Any = None,
    verdict: str = "",
    timeout: int = 60,
    graceful: int = 30,
) -> GunicornFacts:
    return GunicornFacts(2, preload, timeout, graceful, post_fork, app=AppFacts(post_fork=verdict))


def hook(server: Any, worker: Any) -> None:
    """Some post_fork hook: what it does is the verdict's to say (kit.hooks runs it)."""


@pytest.mark.parametrize(
    ("facts", "name", "status"),
    [
        (gunicorn(preload=False), "preload_app + post_fork", PASS),
        (gunicorn(post_fork=None), "preload_app + post_fork", FAIL),
        (
            gunicorn(post_fork=hook, verdict="post_fork left 1 of 1"),
            "preload_app + post_fork",
            FAIL,
        ),
        (
            gunicorn(post_fork=hook, verdict="running post_fork failed"),
            "preload_app + post_fork",
            FAIL,
        ),
        (gunicorn(post_fork=hook, verdict="disposed"), "preload_app + post_fork", PASS),
        # An app that makes its engines in the worker (MLflow): nothing to share.
        (gunicorn(post_fork=hook, verdict=AppFacts.NO_ENGINE), "preload_app + post_fork", PASS),
        (gunicorn(post_fork=hook, verdict=""), "preload_app + post_fork", WARN),  # not run
        (gunicorn(timeout=42), "Gunicorn timeout vs database waits", PASS),
        (gunicorn(timeout=41), "Gunicorn timeout vs database waits", FAIL),
        (gunicorn(timeout=31), "Gunicorn timeout vs database waits", FAIL),
    ],
)
def test_gunicorn_checks(facts: GunicornFacts, name: str, status: str) -> None:
    found = checks.gunicorn_checks(settings(), facts, "gunicorn.conf.py")
    assert row(found, name).status == status, row(found, name)


def test_an_engine_without_the_protection_fails_naming_the_plugin() -> None:
    app = AppFacts(post_fork="disposed", engines=2, unprotected=["mysql+pymysql://u:***@db/x"])
    facts = GunicornFacts(2, True, 60, 30, hook, app=app)
    found = row(checks.gunicorn_checks(settings(), facts, "python:idleproof.gunicorn_conf"),
                "engine protection")  # fmt: skip
    assert found.status == FAIL and "mysql+pymysql://u:***@db/x" in found.detail, found
    assert "?plugin=idleproof" in found.fix


@pytest.mark.parametrize(
    ("env", "status"),
    [
        ({"MLFLOW_URI": "mysql+pymysql://u:p@h/db?plugin=idleproof"}, PASS),
        ({"MLFLOW_URI": "mysql+pymysql://u:p@h/db?charset=utf8mb4&plugin=idleproof"}, PASS),
        ({"MLFLOW_URI": "mysql+pymysql://u:p@h/db"}, FAIL),
        ({"MLFLOW_URI": "mysql+pymysql://u:p@h/db", "IDLEPROOF_PLUGIN": "1"}, PASS),
        ({"SQLALCHEMY_DATABASE_URI": "mysql+mysqldb://u:p@h/db?plugin=idleproof"}, FAIL),
        ({"DATABASE_URL": "mysql+pymysql://u:p@h/db"}, None),  # the kit's own: no row
        ({"CACHE_URL": "redis://h/0"}, None),
    ],
)
def test_the_apps_own_database_urls_must_name_the_plugin(
    env: dict[str, str], status: str | None
) -> None:
    found = checks.url_checks(env)
    assert [c.status for c in found] == ([status] if status else []), found
    assert all(c.fix for c in found if c.status == FAIL)
    assert all(":p@" not in c.detail for c in found), "a password in a doctor row"


@pytest.mark.parametrize(
    ("proxy_read", "status"), [(65.0, PASS), (60.0, FAIL), (30.0, FAIL), (0.5, FAIL), (None, FAIL)]
)
def test_nginx_check(proxy_read: float | None, status: str) -> None:
    check = checks.nginx_check(Path("server.conf"), proxy_read, gunicorn())
    assert check.status == status, check
    assert status == PASS or check.fix


@pytest.mark.parametrize(("stop", "status"), [(35.0, PASS), (30.0, FAIL), (None, FAIL)])
def test_systemd_check(stop: float | None, status: str) -> None:
    check = checks.systemd_check(Path("idle-proof.service"), stop, gunicorn())
    assert check.status == status, check


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("65s", 65),
        ("65", 65),
        ("1m", 60),
        ("1min 30s", 90),
        ("1h", 3600),
        ("500ms", 0.5),
        ("soon", None),
        ("65 s x", None),
    ],
)
def test_durations(text: str, expected: float | None) -> None:
    assert seconds(text) == expected


# --- the preflight's rules ----------------------------------------------------------------------

APP = {
    "app_db_idle_timeout": 350,
    "app_db_pool_recycle": "",
    "app_db_pool_size": 5,
    "app_db_max_overflow": 5,
    "app_gunicorn_workers": 4,
    "app_gunicorn_timeout": 60,
    "app_gunicorn_graceful_timeout": 30,
    "app_timeout_stop_sec": 35,
}
DB = {"mysql_wait_timeout": 3600, "mysql_max_connections": 120}
WEB = {"nginx_proxy_read_timeout": 65}


def check_inventory(**changes: dict[str, Any]) -> tuple[int, list[str]]:
    fleet = {
        "headroom": 10,
        "app": {"app1": {**APP, **changes.get("app", {})}, "app2": dict(APP)},
        "db": {"db1": {**DB, **changes.get("db", {})}},
        "web": {"web1": {**WEB, **changes.get("web", {})}},
    }
    lines = report(fleet)
    return (1 if lines else 0), lines


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, []),
        (
            {"app": {"app_db_pool_recycle": 350}},
            ["app1: app_db_pool_recycle=350 must be below app_db_idle_timeout=350"],
        ),
        (
            {"db": {"mysql_wait_timeout": 300}},
            ["db1, app1, app2: app_db_pool_recycle=315 is not below the server's"],
        ),
        (
            {"db": {"mysql_max_connections": 89}},
            ["db1: mysql_max_connections=89 is below what the app hosts can open"],
        ),
        ({"web": {"nginx_proxy_read_timeout": 60}}, ["web1: nginx_proxy_read_timeout=60 must"]),
        ({"app": {"app_gunicorn_timeout": 30}}, ["app1: app_gunicorn_timeout=30 must exceed"]),
        ({"app": {"app_gunicorn_workers": "four"}}, ["app1: app_gunicorn_workers='four' is not"]),
        ({"app": {"app_gunicorn_workers": 0}}, ["app1: app_gunicorn_workers=0 is too small"]),
        ({"app": {"app_db_pool_size": 2.5}}, ["app1: app_db_pool_size='2.5' is not a whole"]),
        ({"app": {"app_timeout_stop_sec": 30}}, ["app1: app_timeout_stop_sec=30 is not above"]),
    ],
)
def test_check_inventory(changes: dict[str, Any], expected: list[str]) -> None:
    code, lines = check_inventory(**changes)
    assert code == (1 if expected else 0)
    assert len(lines) == len(expected), lines
    for line, start in zip(lines, expected, strict=True):
        assert line.startswith(start), line
