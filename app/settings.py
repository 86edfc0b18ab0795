"""Database settings, read once from the environment and checked before anything connects.

Every knob the engine uses lives here so the app, ``gunicorn.conf.py`` and the operator
tools (``kit doctor``) read the same values the same way. A bad value stops start-up with
one line that names the variable and says what to change.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from urllib.parse import urlsplit


class SettingsError(ValueError):
    """A setting is missing or wrong; the message is one line that says what to change."""


# MySQL's own default wait_timeout: what applies when nobody has tuned anything.
DEFAULT_IDLE_TIMEOUT = 28800.0
# Recycle this share of the idle timeout early so clock skew and a slow request never
# hand out a connection the server is about to drop (PythonAnywhere: 300 s -> 270 s).
RECYCLE_SHARE = 0.9
SUPPORTED_SCHEMES = ("mysql+pymysql",)


@dataclass(frozen=True)
class Settings:
    database_url: str
    # The smallest idle limit on the path: MySQL's wait_timeout or a middlebox's.
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    # Age after which SQLAlchemy replaces a pooled connection; always < idle_timeout.
    pool_recycle: float = DEFAULT_IDLE_TIMEOUT * RECYCLE_SHARE
    pool_size: int = 5
    max_overflow: int = 5
    # How long a request waits for a free pooled connection before it gets a 503.
    pool_timeout: float = 2.0
    # TCP connect; bounds how long a request waits while the database is unreachable.
    connect_timeout: float = 2.0
    # Socket read/write for queries: bounds a hung server without capping normal queries.
    read_timeout: float = 30.0
    write_timeout: float = 30.0
    # A connection that sat idle longer than this is pinged before use ...
    ping_after_idle: float = 1.0
    # ... and the ping gives up after this long (a vanished or stalled peer).
    ping_timeout: float = 1.0

    @property
    def url_without_password(self) -> str:
        parts = urlsplit(self.database_url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        user = f"{parts.username}@" if parts.username else ""
        return f"{parts.scheme}://{user}{host}{port}{parts.path}"

    def as_env(self) -> dict[str, str]:
        """The settings as environment variables (what a worker or tool would be given)."""
        return {ENV_NAMES[f.name]: str(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        url = _url(env)
        idle = _number(env, "DB_IDLE_TIMEOUT", DEFAULT_IDLE_TIMEOUT, minimum=1)
        if "DB_POOL_RECYCLE" in env:
            recycle = _number(env, "DB_POOL_RECYCLE", 0, minimum=1)
            if recycle >= idle:
                raise SettingsError(
                    f"DB_POOL_RECYCLE={_fmt(recycle)} must be below DB_IDLE_TIMEOUT={_fmt(idle)}: "
                    "lower DB_POOL_RECYCLE or unset it to use "
                    f"{_fmt(default_recycle(idle))}"
                )
        else:
            recycle = default_recycle(idle)
        settings = cls(
            database_url=url,
            idle_timeout=idle,
            pool_recycle=recycle,
            pool_size=int(_number(env, "DB_POOL_SIZE", 5, minimum=1, integer=True)),
            max_overflow=int(_number(env, "DB_MAX_OVERFLOW", 5, minimum=0, integer=True)),
            pool_timeout=_number(env, "DB_POOL_TIMEOUT", 2.0, minimum=0.1),
            connect_timeout=_number(env, "DB_CONNECT_TIMEOUT", 2.0, minimum=0.1),
            read_timeout=_number(env, "DB_READ_TIMEOUT", 30.0, minimum=0.1),
            write_timeout=_number(env, "DB_WRITE_TIMEOUT", 30.0, minimum=0.1),
            ping_after_idle=_number(env, "DB_PING_AFTER_IDLE", 1.0, minimum=0),
            ping_timeout=_number(env, "DB_PING_TIMEOUT", 1.0, minimum=0.1),
        )
        if settings.ping_timeout > settings.read_timeout:
            raise SettingsError(
                f"DB_PING_TIMEOUT={_fmt(settings.ping_timeout)} must not exceed "
                f"DB_READ_TIMEOUT={_fmt(settings.read_timeout)}: lower DB_PING_TIMEOUT"
            )
        return settings


ENV_NAMES = {
    "database_url": "DATABASE_URL",
    "idle_timeout": "DB_IDLE_TIMEOUT",
    "pool_recycle": "DB_POOL_RECYCLE",
    "pool_size": "DB_POOL_SIZE",
    "max_overflow": "DB_MAX_OVERFLOW",
    "pool_timeout": "DB_POOL_TIMEOUT",
    "connect_timeout": "DB_CONNECT_TIMEOUT",
    "read_timeout": "DB_READ_TIMEOUT",
    "write_timeout": "DB_WRITE_TIMEOUT",
    "ping_after_idle": "DB_PING_AFTER_IDLE",
    "ping_timeout": "DB_PING_TIMEOUT",
}


def default_recycle(idle_timeout: float) -> float:
    """The recycle age used when DB_POOL_RECYCLE is unset: 90 % of the idle timeout."""
    recycle = idle_timeout * RECYCLE_SHARE
    # Whole seconds read better in logs; keep fractions only for tiny test timeouts.
    return float(math.floor(recycle)) if recycle >= 10 else round(recycle, 3)


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _url(env: Mapping[str, str]) -> str:
    url = env.get("DATABASE_URL", "").strip()
    if not url:
        raise SettingsError(
            "DATABASE_URL is not set: set it to mysql+pymysql://USER:PASSWORD@HOST:PORT/DATABASE"
        )
    parts = urlsplit(url)
    if parts.scheme not in SUPPORTED_SCHEMES:
        raise SettingsError(
            f"DATABASE_URL scheme {parts.scheme or '(none)'!r} is not supported: "
            "use mysql+pymysql://USER:PASSWORD@HOST:PORT/DATABASE"
        )
    if not parts.hostname:
        raise SettingsError(
            "DATABASE_URL has no host: use mysql+pymysql://USER:PASSWORD@HOST:PORT/DATABASE"
        )
    try:
        parts.port  # noqa: B018 - urlsplit validates the port lazily
    except ValueError:
        raise SettingsError(
            f"DATABASE_URL has an invalid port in {parts.netloc.rsplit('@', 1)[-1]!r}: "
            "use a port from 1 to 65535, as in mysql+pymysql://USER:PASSWORD@HOST:3306/DATABASE"
        ) from None
    if not parts.path.strip("/"):
        raise SettingsError(
            "DATABASE_URL names no database: add /DATABASE after the host, "
            "for example mysql+pymysql://app:secret@127.0.0.1:3306/app"
        )
    return url


def _number(
    env: Mapping[str, str],
    name: str,
    default: float,
    *,
    minimum: float,
    integer: bool = False,
) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return float(default)
    kind = "a whole number" if integer else "a number of seconds"
    try:
        value = float(int(raw)) if integer else float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not {kind}: set it to {kind}") from None
    if not math.isfinite(value) or value < minimum:
        raise SettingsError(f"{name}={raw} is too small: set it to at least {_fmt(minimum)}")
    return value
