"""``kit doctor``: do the server, the app's pool, Gunicorn, nginx and systemd agree?

Reads what is in force (:mod:`kit.facts`), judges it with the kit's rules
(:mod:`kit.checks`) and prints one row per check: PASS, WARN or FAIL, what was found, and
the fix. Any FAIL makes the exit status 1.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

import pymysql

from app.settings import Settings
from kit import facts, hooks
from kit.checks import (
    FAIL,
    PASS,
    WARN,
    Check,
    gunicorn_checks,
    nginx_check,
    server_checks,
    settings_checks,
    systemd_check,
)
from kit.errors import UsageError


def host_checks(
    settings: Settings,
    env: Mapping[str, str],
    gunicorn_config: Path,
    nginx_conf: Path | None,
    systemd_unit: Path | None,
) -> tuple[list[Check], facts.GunicornFacts | None]:
    """Gunicorn as it will really run (its config, GUNICORN_CMD_ARGS, the unit's ExecStart,
    its post_fork hook run in a forked child), and the nginx and systemd files."""
    if not gunicorn_config.is_file():
        raise UsageError(
            f"--gunicorn-config {gunicorn_config}: no such file: pass the service's "
            "gunicorn.conf.py (on a deployed host /opt/idle-proof/current/gunicorn.conf.py)"
        )
    unit = facts.read_unit(systemd_unit) if systemd_unit else {}
    try:
        gunicorn = facts.read_gunicorn(gunicorn_config, env, facts.gunicorn_argv(unit))
    except (Exception, SystemExit) as exc:
        failed = Check(
            "gunicorn config",
            FAIL,
            f"{gunicorn_config} does not load: {exc}",
            "fix the config file or the GUNICORN_* variable it names",
        )
        return [failed], None
    # The hook runs against the app the workers would load; with settings the app refuses
    # (the settings row says why) there is no app to run it against.
    if gunicorn.preload_app and gunicorn.post_fork is not None and not settings.problems():
        gunicorn.post_fork_verdict = hooks.post_fork_verdict(gunicorn, env)
    checks = gunicorn_checks(settings, gunicorn, gunicorn_config)
    if nginx_conf:
        proxy_read = facts.read_proxy_read_timeout(nginx_conf)
        checks.append(nginx_check(nginx_conf, proxy_read, gunicorn))
    if systemd_unit:
        stop = facts.read_timeout_stop_sec(unit)
        checks.append(systemd_check(systemd_unit, stop, gunicorn))
    return checks, gunicorn


def collect(
    settings: Settings,
    env: Mapping[str, str],
    gunicorn_config: Path,
    nginx_conf: Path | None,
    systemd_unit: Path | None,
) -> list[Check]:
    checks = settings_checks(settings)
    found, gunicorn = host_checks(settings, env, gunicorn_config, nginx_conf, systemd_unit)
    checks += found
    try:
        server = facts.read_server(settings)
    except pymysql.err.MySQLError as exc:
        checks.append(
            Check(
                "database connection",
                FAIL,
                f"cannot connect to {settings.url_without_password}: {exc}",
                "check DATABASE_URL, that the server runs and that this host may reach it "
                "(firewall, bind-address, the user's host part)",
            )
        )
        return checks
    checks.append(
        Check("database connection", PASS, f"connected to {settings.url_without_password}")
    )
    checks += server_checks(settings, server, gunicorn.workers if gunicorn else None)
    return checks


def render(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = []
    for c in checks:
        lines.append(f"{c.status}  {c.name:<{width}}  {c.detail}")
        if c.fix:
            lines.append(f"{'':6}{'':<{width}}  fix: {c.fix}")
    failed = sum(c.status == FAIL for c in checks)
    warned = sum(c.status == WARN for c in checks)
    lines.append(f"\n{failed} FAIL, {warned} WARN, {len(checks) - failed - warned} PASS")
    return "\n".join(lines)


def run(
    settings: Settings,
    env: Mapping[str, str],
    *,
    gunicorn_config: Path,
    nginx_conf: Path | None,
    systemd_unit: Path | None,
    as_json: bool,
) -> int:
    checks = collect(settings, env, gunicorn_config, nginx_conf, systemd_unit)
    ok = not any(c.status == FAIL for c in checks)
    if as_json:
        print(json.dumps({"ok": ok, "checks": [asdict(c) for c in checks]}, indent=2))
    else:
        print(render(checks))
    sys.stdout.flush()
    return 0 if ok else 1
