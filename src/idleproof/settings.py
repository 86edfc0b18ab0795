"""Database settings: one table, read once from the environment, checked before anything connects.

``SETTINGS`` is the single source of every ``DB_*`` setting: its environment variable, default,
bounds, meaning and the Ansible variable that sets it. ``Settings.from_env`` reads them from
it; the README's settings table is generated from it (``idleproof settings --markdown``); a test
fails when the README, the app role's defaults or its EnvironmentFile disagree with it. How
settings must relate to each other, and to Gunicorn, nginx and the server, is in
:mod:`idleproof.rules`. A bad value stops start-up with one line that names the variable and says
what to change.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from idleproof import rules
from idleproof.rules import Value, default_recycle, fmt

URL_FORM = "mysql+pymysql://USER:PASSWORD@HOST:PORT/DATABASE"
SUPPORTED_SCHEMES = ("mysql+pymysql",)
QUERY_CAP = (
    "a stalled peer holds a worker this long; a longer query belongs in a job queue, "
    "not in a web request"
)


class SettingsError(ValueError):
    """A setting is missing or wrong; the message is one line that says what to change."""


@dataclass(frozen=True)
class Setting:
    key: str  # the attribute of Settings
    env: str  # the environment variable
    kind: Literal["url", "seconds", "count", "path"]
    # None: required (DATABASE_URL) or derived from another setting (DB_POOL_RECYCLE).
    default: float | None
    minimum: float
    meaning: str
    # The app role's variable that sets it (ansible/roles/app/defaults/main.yml).
    role_var: str
    # How the README states a default that is not a plain number.
    default_text: str = ""
    maximum: float = math.inf
    why_maximum: str = ""

    @property
    def bounds(self) -> str:
        if self.kind in ("url", "path"):
            return ""
        if self.maximum < math.inf:
            return f"{fmt(self.minimum)} to {fmt(self.maximum)}"
        return f"≥ {fmt(self.minimum)}"

    def read(self, env: Mapping[str, str], name: str) -> float | str | None:
        """The value from ``env``: an int for a count, the text for a path; None when unset
        and there is no default."""
        raw = env.get(self.env, "").strip()
        if self.kind == "path":
            return raw
        if not raw:
            return self.default
        kind = "a whole number" if self.kind == "count" else "a number of seconds"
        try:
            value = float(int(raw)) if self.kind == "count" else float(raw)
        except ValueError:
            raise SettingsError(f"{name}={raw!r} is not {kind}: set it to {kind}") from None
        if not math.isfinite(value):
            raise SettingsError(f"{name}={raw} is not a finite number: set it to {kind}")
        if value < self.minimum:
            minimum = fmt(self.minimum)
            raise SettingsError(f"{name}={raw} is too small: set it to at least {minimum}")
        if value > self.maximum:
            maximum = fmt(self.maximum)
            raise SettingsError(
                f"{name}={raw} is too large: set it to at most {maximum} ({self.why_maximum})"
            )
        return int(value) if self.kind == "count" else value


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "database_url", "DATABASE_URL", "url", None, 0,
        f"`{URL_FORM}`",
        "app_db_host, app_db_port, app_db_name, app_db_user, app_db_password",
        default_text="(required)",
    ),
    Setting(
        "idle_timeout", "DB_IDLE_TIMEOUT", "seconds", 28800, 1,
        "how long the server keeps an idle connection: MySQL's `wait_timeout` (28800 is its "
        "default); `idleproof doctor` compares it with the server's",
        "app_db_idle_timeout",
    ),
    Setting(
        "network_idle_timeout", "DB_NETWORK_IDLE_TIMEOUT", "seconds", None, 1,
        "the idle limit of a firewall, NAT, load balancer or proxy between app and database, "
        "when one forgets idle connections sooner than the server (`idleproof probe-idle` measures "
        "it)",
        "app_db_network_idle_timeout",
        default_text="(none)",
    ),
    Setting(
        "pool_recycle", "DB_POOL_RECYCLE", "seconds", None, 1,
        "replace pooled connections older than this; must be below both idle limits",
        "app_db_pool_recycle",
        default_text=f"{fmt(rules.RECYCLE_SHARE * 100)} % of the smaller idle limit",
    ),
    Setting(
        "pool_size", "DB_POOL_SIZE", "count", 5, 1,
        "connections each worker keeps",
        "app_db_pool_size",
    ),
    Setting(
        "max_overflow", "DB_MAX_OVERFLOW", "count", 5, 0,
        "extra connections a worker may open under bursts",
        "app_db_max_overflow",
    ),
    Setting(
        "pool_timeout", "DB_POOL_TIMEOUT", "seconds", 2, 0.1,
        "seconds a request waits for a free pooled connection before a 503",
        "app_db_pool_timeout",
    ),
    Setting(
        "connect_timeout", "DB_CONNECT_TIMEOUT", "seconds", 2, 0.1,
        "seconds for the TCP connect and the MySQL handshake: how long a request waits "
        "while the database is unreachable",
        "app_db_connect_timeout",
    ),
    Setting(
        "read_timeout", "DB_READ_TIMEOUT", "seconds", 30, 0.1,
        "socket bound for a query's answer: a stalled server (TCP alive, nothing answers) "
        "costs this much, the one fault only a query timeout bounds; with the other waits it "
        "must stay below `GUNICORN_TIMEOUT`",
        "app_db_read_timeout",
        maximum=300, why_maximum=QUERY_CAP,
    ),
    Setting(
        "write_timeout", "DB_WRITE_TIMEOUT", "seconds", 30, 0.1,
        "socket bound for sending a query",
        "app_db_write_timeout",
        maximum=300, why_maximum=QUERY_CAP,
    ),
    Setting(
        "net_timeout", "DB_NET_TIMEOUT", "seconds", 2, 2,
        "seconds of silence after which the kernel declares the database host dead "
        "(`TCP_USER_TIMEOUT`, keepalive probes): a crashed host or a forgotten firewall/NAT "
        "flow under a query costs this, then the request is retried once on a new "
        "connection; a slow query on a live server is never cut (its kernel keeps "
        "answering); below `DB_READ_TIMEOUT`. 2, the floor (keepalive counts whole seconds), "
        "suits a LAN; across a WAN or to a managed database in another zone, 10 rides out "
        "the retransmissions of a lossy path and a provider's brief network maintenance",
        "app_db_net_timeout",
    ),
    Setting(
        "max_connection_age", "DB_MAX_CONNECTION_AGE", "seconds", 600, 1,
        "the longest a pooled connection lives: after a failover, a database name that now "
        "resolves elsewhere is followed within this, without a restart",
        "app_db_max_connection_age",
    ),
    Setting(
        "tls_ca", "DB_TLS_CA", "path", None, 0,
        "CA certificate (PEM) that signed the database server's certificate. Set: every "
        "connection is TLS, the server's certificate and its name (the host in "
        "`DATABASE_URL`) are verified, and a server without TLS is refused. Empty: plaintext, "
        "for a database on the same host",
        "app_db_tls_ca",
        default_text="(empty)",
    ),
    Setting(
        "ping_after_idle", "DB_PING_AFTER_IDLE", "seconds", 1, 0,
        "a connection idle longer than this is pinged before use; busier ones are not",
        "app_db_ping_after_idle",
    ),
    Setting(
        "ping_timeout", "DB_PING_TIMEOUT", "seconds", 1, 0.1,
        "how long that ping (and `/readyz`) waits: the cost of a vanished or stalled peer; "
        "at most `DB_READ_TIMEOUT`",
        "app_db_ping_timeout",
    ),
)  # fmt: skip

BY_KEY = {s.key: s for s in SETTINGS}

# Names a setting goes by: the environment variable (the app, doctor) or the Ansible
# variable (the preflight).
Namer = Callable[[Setting], str]


def env_name(setting: Setting) -> str:
    return setting.env


@dataclass(frozen=True)
class Settings:
    """The database settings in force; field for field the rows of ``SETTINGS``."""

    database_url: str
    idle_timeout: float
    network_idle_timeout: float | None
    pool_recycle: float
    pool_size: int
    max_overflow: int
    pool_timeout: float
    connect_timeout: float
    read_timeout: float
    write_timeout: float
    net_timeout: float
    max_connection_age: float
    tls_ca: str
    ping_after_idle: float
    ping_timeout: float

    @property
    def url_without_password(self) -> str:
        parts = urlsplit(self.database_url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        user = f"{parts.username}@" if parts.username else ""
        return f"{parts.scheme}://{user}{host}{port}{parts.path}"

    def shown(self, setting: Setting) -> str:
        """A setting's value as a log line or ``idleproof settings`` shows it (no password)."""
        if setting.kind == "url":
            return self.url_without_password
        value = getattr(self, setting.key)
        if setting.kind == "path":
            return str(value) or "(empty)"
        return "(none)" if value is None else fmt(value)

    def value(self, key: str, name: Namer = env_name) -> Value:
        """A setting as a rule's operand, named the way the reader knows it."""
        return Value(name(BY_KEY[key]), float(getattr(self, key)))

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        name: Namer = env_name,
        check: bool = True,
        url: str | None = None,
    ) -> Settings:
        """Read every setting; refuse a bad value, and (``check``) a breach of the rules
        between settings, with one line. ``idleproof doctor`` reads unchecked and reports.
        ``url``: the database URL is the application's own (the engine plugin), not
        ``DATABASE_URL``."""
        env = os.environ if environ is None else environ
        database_url = url if url is not None else _url(env, name(BY_KEY["database_url"]))
        values: dict[str, Any] = {"database_url": database_url}
        for setting in SETTINGS:
            if setting.kind != "url":
                values[setting.key] = setting.read(env, name(setting))
        if values["pool_recycle"] is None:
            limits = [values["idle_timeout"], values["network_idle_timeout"] or math.inf]
            values["pool_recycle"] = default_recycle(min(limits))
        settings = cls(**values)
        problems = settings.problems(name) if check else []
        if problems:
            raise SettingsError(str(problems[0]))
        return settings

    def waits(self, name: Namer = env_name) -> rules.Waits:
        """The bounds on how long one request can wait for the database."""
        value = functools.partial(self.value, name=name)
        return rules.Waits(
            pool=value("pool_timeout"),
            connect=value("connect_timeout"),
            ping=value("ping_timeout"),
            net=value("net_timeout"),
            read=value("read_timeout"),
            write=value("write_timeout"),
        )

    def problems(self, name: Namer = env_name) -> list[rules.Problem]:
        """The rules between the settings themselves."""
        value = functools.partial(self.value, name=name)
        found = [
            rules.recycle_below_idle(value("pool_recycle"), value("idle_timeout")),
            rules.ping_within_read(value("ping_timeout"), value("read_timeout")),
            rules.net_below_read(value("net_timeout"), value("read_timeout")),
        ]
        if self.network_idle_timeout is not None:
            network = value("network_idle_timeout")
            found.append(rules.recycle_below_idle(value("pool_recycle"), network))
        return [p for p in found if p is not None]


def _url(env: Mapping[str, str], name: str) -> str:
    url = env.get("DATABASE_URL", "").strip()
    if not url:
        raise SettingsError(f"{name} is not set: set it to {URL_FORM}")
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # "Invalid IPv6 URL": a bracket left open
        raise SettingsError(f"{name} cannot be read ({exc}): use {URL_FORM}") from None
    if parts.scheme not in SUPPORTED_SCHEMES:
        raise SettingsError(
            f"{name} scheme {parts.scheme or '(none)'!r} is not supported: use {URL_FORM}"
        )
    if not parts.hostname:
        raise SettingsError(f"{name} has no host: use {URL_FORM}")
    try:
        parts.port  # noqa: B018 - urlsplit validates the port lazily
    except ValueError:
        if "@" not in parts.netloc:
            # "user:pass" cut short by a / ? or # in the password: never echo any of it.
            raise SettingsError(
                f"{name} has no host, or a password with / ? # @ : or % that is not "
                "percent-encoded: encode them (%2F %3F %23 %40 %3A %25) in "
                "mysql+pymysql://USER:PASSWORD@HOST:PORT/DATABASE"
            ) from None
        raise SettingsError(
            f"{name} has an invalid port in {parts.netloc.rsplit('@', 1)[-1]!r}: "
            "use a port from 1 to 65535, as in mysql+pymysql://USER:PASSWORD@HOST:3306/DATABASE"
        ) from None
    if not parts.path.strip("/"):
        raise SettingsError(
            f"{name} names no database: add /DATABASE after the host, "
            "for example mysql+pymysql://app:secret@127.0.0.1:3306/app"
        )
    return url


def markdown_table() -> str:
    """The README's settings table, generated from ``SETTINGS``."""
    lines = [
        "| variable | default | bounds | Ansible variable | meaning |",
        "|---|---|---|---|---|",
    ]
    for s in SETTINGS:
        default = s.default_text or f"`{fmt(s.default or 0)}`"
        role_vars = ", ".join(f"`{v}`" for v in s.role_var.split(", "))
        lines.append(f"| `{s.env}` | {default} | {s.bounds} | {role_vars} | {s.meaning} |")
    return "\n".join(lines) + "\n"
