"""What the app would run with: the environment, an EnvironmentFile, and the settings in them."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from idleproof.ops.errors import UsageError
from idleproof.settings import SETTINGS, Settings, SettingsError


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a systemd ``EnvironmentFile``: KEY=VALUE lines, # or ; comments, quotes."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UsageError(
            f"--env-file {path}: {exc.strerror or exc}: pass the service's EnvironmentFile"
        ) from None
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"--env-file {path}: not UTF-8 text (byte {exc.start}): pass the service's "
            "EnvironmentFile"
        ) from None
    env: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key.isidentifier():
            raise UsageError(f"{path}:{number}: expected KEY=VALUE, got {line[:40]!r}")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key] = value
    return env


def load_environment(env_file: Path | None) -> dict[str, str]:
    """The process environment, overlaid with the env file as systemd would do."""
    env = dict(os.environ)
    if env_file is not None:
        env.update(read_env_file(env_file))
    return env


def load_settings(env: Mapping[str, str], check: bool = True) -> Settings:
    """The settings in ``env``; a bad value is a UsageError. ``check=False`` leaves the rules
    between settings to the caller (``idleproof doctor`` reports them as findings)."""
    try:
        return Settings.from_env(env, check=check)
    except SettingsError as exc:
        raise UsageError(str(exc)) from None


def describe(settings: Settings, env: Mapping[str, str]) -> str:
    """Every setting in force, one per line, and whether it was set or is the default."""
    lines = []
    for s in SETTINGS:
        source = "set" if env.get(s.env, "").strip() else "default"
        lines.append(f"{s.env}={settings.shown(s)}  ({source})")
    return "\n".join(lines)
