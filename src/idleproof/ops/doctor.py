"""``idleproof doctor``: do the server, the app's pool, Gunicorn, nginx and systemd agree?

Reads what is in force (:mod:`.facts`, :mod:`.hooks`), judges it with the kit's rules
(:mod:`.checks`) and prints one row per check: PASS, WARN or FAIL, what was found, and
the fix. Any FAIL makes the exit status 1.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

import pymysql

from idleproof.ops import facts, hooks
from idleproof.ops.checks import (
    FAIL,
    PASS,
    WARN,
    Check,
    gunicorn_checks,
    nginx_check,
    server_checks,
    settings_checks,
    systemd_check,
    url_checks,
)
from idleproof.ops.errors import UsageError
from idleproof.settings import Settings


def host_checks(
    settings: Settings,
    env: Mapping[str, str],
    gunicorn_config: str | None,
    nginx_conf: Path | None,
    systemd_unit: Path | None,
) -> tuple[list[Check], facts.GunicornFacts | None]:
    """Gunicorn as it will really run (its config, GUNICORN_CMD_ARGS, the unit's ExecStart,
    the app imported and its post_fork hook run in a forked child), and the nginx and
    systemd files."""
    unit = facts.read_unit(systemd_unit) if systemd_unit else {}
    argv = facts.gunicorn_argv(unit)
    config = gunicorn_config or facts.config_in_argv(argv) or "gunicorn.conf.py"
    if not config.startswith("python:") and not Path(config).is_file():
        raise UsageError(
            f"--gunicorn-config {config}: no such file: pass the service's Gunicorn config "
            "(a file, or python:MODULE as its ExecStart gives it)"
        )
    try:
        # Where Gunicorn runs under the unit; a unit read from elsewhere may name a
        # directory this machine does not have.
        workdir = unit.get("WorkingDirectory", "")
        gunicorn = facts.read_gunicorn(
            config, env, argv, workdir if Path(workdir).is_dir() else None
        )
    except (Exception, SystemExit) as exc:
        failed = Check(
            "gunicorn config",
            FAIL,
            f"{config} does not load: {exc}",
            "fix the config or the GUNICORN_* variable it names",
        )
        return [failed], None
    # The app is looked at as the workers would load it; with settings the app refuses
    # (the settings row says why) there is no app to look at.
    if not settings.problems():
        run_post_fork = gunicorn.preload_app and gunicorn.post_fork is not None
        gunicorn.app = hooks.app_facts(gunicorn, env, run_post_fork)
    checks = gunicorn_checks(settings, gunicorn, config)
    checks += url_checks(env)
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
    gunicorn_config: str | None,
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
    gunicorn_config: str | None,
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
