"""``idleproof``: the operator's commands for 500-after-idle incidents (deploy/RUNBOOK.md).

    idleproof doctor [--env-file F] [--gunicorn-config FILE|python:MODULE] [--json]
    idleproof probe-idle [--env-file F] [--max-seconds N] [--parallel K] [--json]
    idleproof settings [--env-file F] [--markdown]

They read the app's own settings (:mod:`idleproof.settings`), from the environment or from
the service's ``EnvironmentFile``, so they judge exactly what the app will run with.
Exit codes: 0 all good, 1 a check failed or the probe could not run,
2 bad input (a setting, a flag or the env file), with one line saying what to change.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn

from idleproof.ops.environment import describe, load_environment, load_settings
from idleproof.ops.errors import UsageError
from idleproof.settings import markdown_table

DEFAULT_ENV_FILE = "/etc/idle-proof/app.env"
DEFAULT_NGINX_CONF = "/etc/nginx/idle-proof/server.conf"
DEFAULT_SYSTEMD_UNIT = "/etc/systemd/system/idle-proof.service"


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be above 0")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= 64:
        raise argparse.ArgumentTypeError(f"{text!r} must be from 1 to 64")
    return value


def named_or_default(named: Path | None, flag: str, default: str) -> Path | None:
    """A file the operator named must exist; the default one is checked only when present."""
    if named is not None:
        if not named.is_file():
            raise UsageError(
                f"{flag} {named}: no such file: pass the file in force or leave {flag} out"
            )
        return named
    return Path(default) if Path(default).is_file() else None


class Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line (not usage + error) and still exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="idleproof",
        description="Diagnose and measure idle-connection problems between this app host "
        "and its MariaDB/MySQL database. Runbook: deploy/RUNBOOK.md.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    common = Parser(add_help=False)
    common.add_argument(
        "--env-file",
        type=Path,
        metavar="FILE",
        help="read DATABASE_URL and DB_* from this EnvironmentFile (on a deployed host: "
        f"{DEFAULT_ENV_FILE}); default: the current environment",
    )
    common.add_argument("--json", action="store_true", help="print JSON for machines")

    doctor = sub.add_parser(
        "doctor",
        parents=[common],
        help="check the server, the app's pool, Gunicorn, nginx and systemd agree",
        description="One row per check with PASS/WARN/FAIL and the fix; exits 1 on any FAIL.",
    )
    doctor.add_argument(
        "--gunicorn-config",
        default=None,
        metavar="CONFIG",
        help="the Gunicorn config to check: a file, or python:MODULE (default: the one the "
        "systemd unit's ExecStart names, else ./gunicorn.conf.py)",
    )
    doctor.add_argument(
        "--nginx-conf",
        type=Path,
        default=None,
        metavar="FILE",
        help=f"nginx include with the proxy timeouts (default: {DEFAULT_NGINX_CONF}, checked "
        "when it exists; a file named here must exist)",
    )
    doctor.add_argument(
        "--systemd-unit",
        type=Path,
        default=None,
        metavar="FILE",
        help=f"the app's systemd unit, with its drop-ins (default: {DEFAULT_SYSTEMD_UNIT}, "
        "checked when it exists; a file named here must exist)",
    )

    probe = sub.add_parser(
        "probe-idle",
        parents=[common],
        help="measure the idle limit really in force between this host and the database",
        description="Holds connections idle for lengths it bisects over, several in "
        "parallel, and reports the longest idle that survives, what killed the longer "
        "ones (the server: a fast error or EOF; the network: a silent drop) and a "
        "DB_IDLE_TIMEOUT to set. Progress goes to stderr.",
    )
    probe.add_argument(
        "--max-seconds",
        type=_positive,
        default=600.0,
        metavar="N",
        help="longest idle to try (default 600); the whole run takes at most about 2 x N",
    )
    probe.add_argument(
        "--parallel",
        type=_count,
        default=4,
        metavar="K",
        help="connections idling at once, each for a different length (default 4)",
    )
    probe.add_argument(
        "--probe-timeout",
        type=_positive,
        default=None,
        metavar="S",
        help="a probe query unanswered this long counts as a silent drop "
        "(default: DB_PING_TIMEOUT, at least 2)",
    )
    probe.add_argument(
        "--resolution",
        type=_positive,
        default=None,
        metavar="S",
        help="stop once the limit is known this closely (default: 1 s or 5 %% of it)",
    )

    settings = sub.add_parser(
        "settings",
        parents=[common],
        help="show every DB_* setting in force, its default and where it came from",
        description="One line per setting of the table in idleproof/settings.py: the value the "
        "app would run with and whether it is set or the default. --markdown prints the "
        "table itself (the README's settings section is generated from it).",
    )
    settings.add_argument(
        "--markdown", action="store_true", help="print the settings table as Markdown"
    )

    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "settings" and args.markdown:
            print(markdown_table(), end="")
            return 0
        env = load_environment(args.env_file)
        settings = load_settings(env, check=args.command != "doctor")
        if args.command == "settings":
            print(describe(settings, env))
            return 0
        if args.command == "doctor":
            from idleproof.ops import doctor

            return doctor.run(
                settings,
                env,
                gunicorn_config=args.gunicorn_config,
                nginx_conf=named_or_default(args.nginx_conf, "--nginx-conf", DEFAULT_NGINX_CONF),
                systemd_unit=named_or_default(
                    args.systemd_unit, "--systemd-unit", DEFAULT_SYSTEMD_UNIT
                ),
                as_json=args.json,
            )
        from idleproof.ops import probe

        return probe.run(
            settings,
            max_seconds=args.max_seconds,
            parallel=args.parallel,
            probe_timeout=args.probe_timeout,
            resolution=args.resolution,
            as_json=args.json,
        )
    except UsageError as exc:
        print(f"idleproof {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"idleproof {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
