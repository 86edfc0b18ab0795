"""``idleproof doctor``'s judgements: pure functions from what was read (:mod:`.facts`) to
rows.

Each row is PASS, WARN or FAIL, what was found, and the fix. Where a row applies one of the
kit's rules (:mod:`idleproof.rules`), the rule decides and words the finding; this module only
picks the row's name and severity, and adds what the host shows as context.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from idleproof import rules
from idleproof.ops.facts import AppFacts, GunicornFacts, ServerFacts
from idleproof.plugin import DRIVER, SWITCH
from idleproof.plugin import NAME as PLUGIN
from idleproof.rules import Value, fmt
from idleproof.settings import Settings

PASS, WARN, FAIL = "PASS", "WARN", "FAIL"

# idleproof.gunicorn_conf reads these variables; the operator changes them there.
TIMEOUT, GRACEFUL, WORKERS = "GUNICORN_TIMEOUT", "GUNICORN_GRACEFUL_TIMEOUT", "GUNICORN_WORKERS"


@dataclass
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""


def judged(name: str, problem: rules.Problem | None, ok: str, severity: str = FAIL) -> Check:
    """A row from a rule's verdict: ``ok`` when it holds, its finding and fix when not."""
    if problem is None:
        return Check(name, PASS, ok)
    return Check(name, severity, problem.found, problem.fix)


def settings_checks(settings: Settings) -> list[Check]:
    """The rules between the settings themselves: one FAIL row per breach."""
    problems = settings.problems()
    if problems:
        return [Check("settings", FAIL, p.found, p.fix) for p in problems]
    shown = " ".join(
        str(settings.value(key))
        for key in ("idle_timeout", "network_idle_timeout", "pool_recycle", "ping_after_idle")
        if getattr(settings, key) is not None
    )
    return [Check("settings", PASS, f"{settings.url_without_password}: {shown}")]


# --- the database server ------------------------------------------------------------------


def wait_timeout_check(settings: Settings, facts: ServerFacts) -> Check:
    wait = Value("wait_timeout", float(facts.session_vars["wait_timeout"]))
    gwait = float(facts.global_vars["wait_timeout"])
    ginteractive = float(facts.global_vars["interactive_timeout"])
    found = (
        f"server wait_timeout: SESSION {fmt(wait.value)} s (what the app's connections get), "
        f"GLOBAL {fmt(gwait)} s; interactive_timeout {fmt(ginteractive)} s (CLI clients only)"
    )
    recycle, idle = settings.value("pool_recycle"), settings.value("idle_timeout")
    problem = rules.server_outlasts_recycle(wait, recycle, idle)
    if problem is not None:
        detail = f"{found}; {problem.found}"
        return Check("wait_timeout vs DB_POOL_RECYCLE", FAIL, detail, problem.fix)
    if idle.value > wait.value:
        return Check(
            "wait_timeout vs DB_IDLE_TIMEOUT",
            WARN,
            f"{found}; {idle} is above it ({recycle} is still below)",
            f"set {idle.name}={fmt(wait.value)} so the configuration says what is in force",
        )
    return Check("wait_timeout vs DB_POOL_RECYCLE", PASS, f"{found}; {recycle} is below it")


def max_connections_check(settings: Settings, facts: ServerFacts, workers: int | None) -> Check:
    max_conn = Value("max_connections", int(facts.global_vars["max_connections"]))
    connected = int(facts.status.get("Threads_connected", "0"))
    if workers is None:
        return Check(
            "max_connections",
            WARN,
            f"{max_conn}, Threads_connected={connected}; Gunicorn's worker count is unknown",
            "pass --gunicorn-config so the worker count can be checked",
        )
    pools = rules.Pools(
        Value(WORKERS, workers), settings.value("pool_size"), settings.value("max_overflow")
    )
    detail = (
        f"{workers} workers x (DB_POOL_SIZE {settings.pool_size} + DB_MAX_OVERFLOW "
        f"{settings.max_overflow}) = {pools.connections} connections per app host at most; "
        f"{max_conn}, Threads_connected={connected} now"
    )
    problem = rules.enough_connections(max_conn, [pools], headroom=0)
    if problem is not None:
        return Check("max_connections", FAIL, f"{detail}; {problem.found}", problem.fix)
    if rules.enough_connections(max_conn, [pools, pools], headroom=0) is not None:
        return Check(
            "max_connections",
            WARN,
            detail + "; two app hosts would not fit",
            f"raise max_connections to at least hosts x {pools.connections} plus admin headroom",
        )
    return Check("max_connections", PASS, detail)


def user_limit_check(settings: Settings, facts: ServerFacts, workers: int | None) -> Check:
    """MAX_USER_CONNECTIONS (the account's, else the server's) caps the app's user alone."""
    name = "max_user_connections"
    limit = Value("MAX_USER_CONNECTIONS", facts.user_connection_limit)
    if not limit.value:
        return Check(name, PASS, "no per-user connection limit (0: only max_connections)")
    if workers is None:
        return Check(
            name, WARN, f"{limit}; Gunicorn's worker count is unknown", "pass --gunicorn-config"
        )
    pools = rules.Pools(
        Value(WORKERS, workers), settings.value("pool_size"), settings.value("max_overflow")
    )
    problem = rules.enough_connections(limit, [pools], headroom=0)
    if problem is not None:
        return Check(name, FAIL, problem.found, problem.fix)
    if rules.enough_connections(limit, [pools, pools], headroom=0) is not None:
        return Check(
            name,
            WARN,
            f"{limit} fits this host's {pools.connections} connections; two app hosts would not",
            f"raise the account's MAX_USER_CONNECTIONS to hosts x {pools.connections}",
        )
    return Check(name, PASS, f"{limit} covers this host's {pools.connections} connections")


def abort_checks(facts: ServerFacts) -> list[Check]:
    aborted_clients = int(facts.status.get("Aborted_clients", "0"))
    aborted_connects = int(facts.status.get("Aborted_connects", "0"))
    uptime = int(facts.status.get("Uptime", "0"))
    # Aborted_clients also counts every idle connection the server closed at wait_timeout,
    # which the kit survives by design: it is context for the runbook, not a failure.
    checks = [
        Check(
            "Aborted_clients",
            PASS,
            f"{aborted_clients} connections dropped by the server (wait_timeout, KILL, or "
            f"clients that vanished) in {uptime} s of uptime; a rise overnight is the "
            "incident's server-side trace, and the kit replaces such connections",
        )
    ]
    if aborted_connects:
        checks.append(
            Check(
                "Aborted_connects",
                WARN,
                f"{aborted_connects} failed connection attempts in {uptime} s of uptime "
                "(bad password, handshake over connect_timeout, or max_connections reached)",
                "look for 'Access denied' or 'Too many connections' in the server's error log",
            )
        )
    else:
        checks.append(Check("Aborted_connects", PASS, "no failed connection attempts"))
    return checks


def replication_check(facts: ServerFacts) -> Check:
    """Is the app writing to a primary, and does a replica acknowledge its COMMITs?"""
    name = "replication"
    if facts.global_vars.get("read_only") == "ON":
        return Check(
            name,
            FAIL,
            "the server is read-only (a replica): every write of the app fails (1290)",
            "point DATABASE_URL at the primary (the kit: db_address, which follows db_primary)",
        )
    if facts.global_vars.get("rpl_semi_sync_master_enabled") != "ON":
        return Check(name, PASS, "not a semi-synchronous primary: COMMITs wait for no replica")
    clients = int(facts.status.get("Rpl_semi_sync_master_clients", "0"))
    if not clients:
        return Check(
            name,
            WARN,
            "a semi-synchronous primary with no replica connected: each COMMIT waits "
            "rpl_semi_sync_master_timeout once, then exists on this server only",
            "see the replica's SHOW SLAVE STATUS (deploy/RUNBOOK.md, section 13)",
        )
    return Check(name, PASS, f"semi-synchronous: {clients} replica(s) acknowledge each COMMIT")


def tls_check(settings: Settings, facts: ServerFacts) -> Check:
    """Is the app's connection encrypted where it crosses a network?"""
    host = urlsplit(settings.database_url).hostname or ""
    if facts.tls:
        verified = "certificate and name verified" if settings.tls_ca else "not verified"
        return Check("TLS", PASS, f"encrypted ({facts.tls}), {verified}")
    if settings.tls_ca:  # PyMySQL refuses this itself; seen here only if that ever changes
        return Check(
            "TLS",
            FAIL,
            "DB_TLS_CA is set but the connection is plaintext",
            "enable TLS on the server",
        )
    if host in ("localhost", "127.0.0.1", "::1"):
        return Check("TLS", PASS, f"plaintext to {host}: the database is on this host")
    return Check(
        "TLS",
        WARN,
        f"plaintext to {host}: passwords and data cross the network unencrypted",
        "serve TLS on the database and set DB_TLS_CA to the CA that signed its certificate",
    )


def server_checks(settings: Settings, facts: ServerFacts, workers: int | None) -> list[Check]:
    return [
        tls_check(settings, facts),
        replication_check(facts),
        wait_timeout_check(settings, facts),
        max_connections_check(settings, facts, workers),
        user_limit_check(settings, facts, workers),
        *abort_checks(facts),
    ]


# --- Gunicorn, nginx and systemd ---------------------------------------------------------


HOOK_FIX = (
    "use the kit's config (gunicorn --config python:idleproof.gunicorn_conf) or import its "
    "hook: from idleproof.gunicorn_conf import post_fork"
)


def post_fork_check(g: GunicornFacts, config: str) -> Check:
    name = "preload_app + post_fork"
    app = g.app or AppFacts()
    if app.error:
        return Check(
            name, FAIL, f"{g.app_uri} does not load as Gunicorn loads it: {app.error}",
            "fix what the error names: the workers fail the same way",
        )  # fmt: skip
    if not g.preload_app:
        return Check(name, PASS, f"{config}: preload_app is off: each worker connects on its own")
    if g.post_fork is None:
        return Check(
            name,
            FAIL,
            f"{config}: preload_app is on but there is no post_fork hook: every worker shares "
            "the connections the master opened ('Command Out of Sync', 2014)",
            HOOK_FIX,
        )
    if not app.post_fork:
        return Check(
            name,
            WARN,
            f"{config}: preload_app is on; post_fork was not run: the app refuses its settings",
            "fix the settings row's FAIL first",
        )
    if app.post_fork == AppFacts.NO_ENGINE:
        return Check(
            name,
            PASS,
            f"{config}: preload_app is on and {g.app_uri} holds no engine once imported: each "
            "worker makes its own",
        )
    if app.post_fork != AppFacts.DISPOSED:
        return Check(
            name,
            FAIL,
            f"{config}: preload_app is on and post_fork, run as Gunicorn runs it in a new "
            f"worker, does not give it a pool of its own: {app.post_fork}",
            HOOK_FIX + " (it disposes every protected engine, unconditionally)",
        )
    return Check(
        name,
        PASS,
        f"{config}: preload_app is on and post_fork, run in a forked worker, disposed every "
        f"engine of {g.app_uri}",
    )


def protection_check(g: GunicornFacts) -> Check | None:
    """Every MySQL engine the app holds once imported carries the kit's protection."""
    app = g.app
    if app is None or app.error or not app.engines:
        return None
    if app.unprotected:
        return Check(
            "engine protection",
            FAIL,
            f"{g.app_uri} holds {len(app.unprotected)} MySQL engine(s) without the kit's "
            f"protection: {', '.join(app.unprotected)}",
            f"add ?plugin={PLUGIN} to its URL, or set {SWITCH}=1 with the kit's Gunicorn config",
        )
    return Check("engine protection", PASS, f"every MySQL engine of {g.app_uri} is protected")


def gunicorn_checks(settings: Settings, g: GunicornFacts, config: str) -> list[Check]:
    timeout, waits = Value(TIMEOUT, g.timeout), settings.waits()
    protection = protection_check(g)
    return [
        post_fork_check(g, config),
        *([protection] if protection else []),
        judged(
            "Gunicorn timeout vs database waits",
            rules.gunicorn_outlasts_database(timeout, waits),
            f"{timeout} is above the longest a request can wait on the database, "
            f"{rules.fmt(waits.longest)} s ({waits})",
        ),
    ]


def url_checks(env: Mapping[str, str]) -> list[Check]:
    """The application's own database URLs in its environment (``DATABASE_URL`` is the
    kit's): an engine made from one later, in a worker, gets the plugin only if the URL
    names it or the switch is on."""
    switched = env.get(SWITCH, "").strip().lower() in ("1", "true", "yes", "on")
    checks = []
    for key, value in sorted(env.items()):
        scheme = value.partition("://")[0].strip().lower()
        if key == "DATABASE_URL" or "://" not in value or not scheme.startswith("mysql"):
            continue
        name = f"{key} engine plugin"
        if scheme != DRIVER:
            checks.append(
                Check(name, FAIL, f"{key} uses {scheme}://, which the plugin cannot protect",
                      f"use {DRIVER}:// (PyMySQL)")
            )  # fmt: skip
        elif f"plugin={PLUGIN}" in value.partition("?")[2] or switched:
            how = f"plugin={PLUGIN} in the URL" if not switched else f"{SWITCH}=1"
            checks.append(Check(name, PASS, f"{key}: engines made from it are protected ({how})"))
        else:
            checks.append(
                Check(name, FAIL, f"{key} is a MySQL URL without ?plugin={PLUGIN}: engines "
                      "made from it have no protection",
                      f"append ?plugin={PLUGIN} to {key}, or set {SWITCH}=1")
            )  # fmt: skip
    return checks


def _file_check(
    name: str, path: Path, value: Value | None, rule: Callable[[Value], rules.Problem | None]
) -> Check:
    """A timeout read from a file, judged by ``rule``."""
    if value is None:
        return Check(name, FAIL, f"{path}: cannot read the duration", "write it as 65s or 1m")
    problem = rule(value)
    if problem is None:
        return Check(name, PASS, f"{path}: {value} agrees with Gunicorn's timeouts")
    return Check(name, FAIL, f"{path}: {problem.found}", problem.fix)


def nginx_check(path: Path, proxy_read: float | None, g: GunicornFacts) -> Check:
    value = None if proxy_read is None else Value("proxy_read_timeout", proxy_read)
    return _file_check(
        "nginx proxy_read_timeout",
        path,
        value,
        lambda v: rules.proxy_outlasts_gunicorn(
            v, Value(TIMEOUT, g.timeout), Value(GRACEFUL, g.graceful_timeout)
        ),
    )


def systemd_check(path: Path, stop: float | None, g: GunicornFacts) -> Check:
    value = None if stop is None else Value("TimeoutStopSec", stop)
    return _file_check(
        "systemd TimeoutStopSec",
        path,
        value,
        lambda v: rules.stop_outlasts_graceful(v, Value(GRACEFUL, g.graceful_timeout)),
    )
