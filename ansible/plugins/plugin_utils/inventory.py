"""The preflight's rules: the kit's rules applied to a whole Ansible inventory.

The ``check_inventory`` action runs this on the controller, before any host is contacted,
with what each role will see on each host (:mod:`.views`: ``views``, ``specs``, ``set``,
``groups``, ``errors``; see :mod:`.wiring`), or, reduced to what the rules read, named by
their Ansible variables:

    {"headroom": 10,
     "app": {"app1": {"app_db_idle_timeout": 350, "app_gunicorn_workers": 4, ...}},
     "db":  {"db1":  {"mysql_wait_timeout": 3600, "mysql_max_connections": 120}},
     "web": {"web1": {"nginx_proxy_read_timeout": 65}}}

First :mod:`.wiring` (names, types, addresses, the values hosts share, the release); then
the same rules as the app at start-up, ``idleproof.gunicorn_conf`` and ``idleproof doctor``
(:mod:`idleproof.rules`), in the inventory's own words (``app_db_pool_recycle``, not
``DB_POOL_RECYCLE``): one line per problem.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from idleproof import rules
from idleproof.rules import Pools, Value
from idleproof.settings import SETTINGS, Setting, Settings, SettingsError

from . import wiring

# The app host's values that are not database settings: Gunicorn's, as the app role names them.
WORKERS = "app_gunicorn_workers"
TIMEOUT = "app_gunicorn_timeout"
GRACEFUL = "app_gunicorn_graceful_timeout"
STOP = "app_timeout_stop_sec"
# The URL's parts are the role's to check (host, password); the rules need none of them.
PLACEHOLDER_URL = "mysql+pymysql://preflight@placeholder/preflight"


class Invalid(Exception):
    """A value that is not what its variable needs; the message names the variable."""


def role_var(setting: Setting) -> str:
    return setting.role_var


@dataclass
class AppHost:
    settings: Settings
    workers: Value
    timeout: Value
    graceful: Value
    stop: Value

    @property
    def pools(self) -> Pools:
        size = self.settings.value("pool_size", role_var)
        return Pools(self.workers, size, self.settings.value("max_overflow", role_var))


def number(values: Mapping[str, Any], name: str, *, minimum: float, whole: bool = True) -> Value:
    raw = values.get(name)
    kind = "a whole number" if whole else "a number of seconds"
    try:
        value = float(str(raw).strip())
    except ValueError:
        raise Invalid(f"{name}={raw!r} is not {kind}: set it to {kind}") from None
    if not math.isfinite(value) or (whole and not value.is_integer()):
        raise Invalid(f"{name}={raw!r} is not {kind}: set it to {kind}")
    if value < minimum:
        raise Invalid(f"{name}={raw} is too small: set it to at least {rules.fmt(minimum)}")
    return Value(name, value)


def app_host(values: Mapping[str, Any]) -> AppHost:
    env = {"DATABASE_URL": PLACEHOLDER_URL}
    for setting in SETTINGS:
        raw = values.get(setting.role_var)
        if setting.kind != "url" and raw is not None:
            env[setting.env] = str(raw)
    try:
        settings = Settings.from_env(env, name=role_var)
    except SettingsError as exc:
        raise Invalid(str(exc)) from None
    return AppHost(
        settings,
        workers=number(values, WORKERS, minimum=1),
        timeout=number(values, TIMEOUT, minimum=1),
        graceful=number(values, GRACEFUL, minimum=0),
        stop=number(values, STOP, minimum=1, whole=False),
    )


def problems(inventory: Mapping[str, Any]) -> Iterator[tuple[tuple[str, ...], str]]:
    """Every problem: the hosts it concerns and one line that says what to change."""
    apps: dict[str, AppHost] = {}
    for name, values in inventory.get("app", {}).items():
        try:
            apps[name] = host = app_host(values)
        except Invalid as exc:
            yield (name,), str(exc)
            continue
        for problem in (
            rules.gunicorn_outlasts_database(host.timeout, host.settings.waits(role_var)),
            rules.stop_outlasts_graceful(host.stop, host.graceful),
        ):
            if problem:
                yield (name,), str(problem)
    if not apps:
        return
    headroom = int(inventory.get("headroom", 0))
    for name, values in inventory.get("db", {}).items():
        # A managed database's (no db group): what the inventory says of it.
        wait_name = "mysql_wait_timeout" if "mysql_wait_timeout" in values else "db_idle_timeout"
        max_name = (
            "mysql_max_connections" if "mysql_max_connections" in values else "db_max_connections"
        )
        try:
            wait = number(values, wait_name, minimum=1, whole=False)
            max_conn = number(values, max_name, minimum=1)
        except Invalid as exc:
            yield (name,), str(exc)
            continue
        for app_name, host in apps.items():
            s = host.settings
            problem = rules.server_outlasts_recycle(
                wait, s.value("pool_recycle", role_var), s.value("idle_timeout", role_var)
            )
            if problem:
                yield (name, app_name), str(problem)
        problem = rules.enough_connections(max_conn, [h.pools for h in apps.values()], headroom)
        if problem:
            yield (name,), str(problem)
    slowest = max(apps.values(), key=lambda h: max(h.timeout.value, h.graceful.value))
    for name, values in inventory.get("web", {}).items():
        try:
            proxy_read = number(values, "nginx_proxy_read_timeout", minimum=1, whole=False)
        except Invalid as exc:
            yield (name,), str(exc)
            continue
        problem = rules.proxy_outlasts_gunicorn(proxy_read, slowest.timeout, slowest.graceful)
        if problem:
            yield (name,), str(problem)


def rules_input(inventory: Mapping[str, Any]) -> dict[str, Any]:
    """What the rules read, from the lookup's views: each group's values, and a managed
    database's (no db group) as the inventory states them."""
    views = inventory["views"]
    apps, dbs = views["app"], views["mysql"]
    first: Mapping[str, Any] = next(iter(apps.values()), {})
    headroom = first.get("db_connection_headroom", 0)
    if not dbs and apps:
        dbs = {
            "managed database": {k: first.get(k) for k in ("db_idle_timeout", "db_max_connections")}
        }
    return {"headroom": headroom, "app": apps, "db": dbs, "web": views["nginx"]}


def all_problems(inventory: Mapping[str, Any]) -> Iterator[tuple[tuple[str, ...], str]]:
    if "views" not in inventory:
        yield from problems(inventory)
        return
    found = list(wiring.problems(inventory))
    if found:
        yield from found
        return
    yield from problems(rules_input(inventory))


def report(inventory: Mapping[str, Any]) -> list[str]:
    """One line per problem, naming the hosts it concerns; empty when consistent. Hosts
    that share their group's values share its problems: one line each."""
    found: dict[str, dict[str, None]] = {}
    for hosts, problem in all_problems(inventory):
        found.setdefault(problem, {}).update(dict.fromkeys(hosts))
    return [f"{', '.join(names)}: {problem}" for problem, names in found.items()]
