#!/usr/bin/env python3
"""Print ansible/README.md's variables table from the roles themselves.

Every option of every role's meta/argument_specs.yml, with its default (defaults/main.yml),
where an inventory normally sets it, and what checks it: the argument specs (name and type,
by Ansible and by the preflight), and the preflight's checks across hosts (the collection's
plugins/plugin_utils: wiring, agreement, release, the app's rules). tests/test_sources.py
keeps the README equal to this.

    .venv/bin/python scripts/ansible_variables.py
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

# ansible/ as the collection idleproof.kit, where scripts/install_collections.py links it and
# Ansible finds it: the preflight's modules are imported as Ansible imports them.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "ansible" / ".collections"))

from ansible_collections.idleproof.kit.plugins.plugin_utils import agreement, wiring

from idleproof.settings import SETTINGS

ROLES = Path(__file__).resolve().parent.parent / "ansible" / "roles"
# Role, the hosts it runs on, and where an inventory sets its variables.
ROLE_ORDER = [
    ("shared", "every host", "`group_vars/all`"),
    ("preflight", "the controller", "`group_vars/all`"),
    ("firewall", "every host", "`group_vars/all`, a group's file, `host_vars`"),
    ("mysql", "db hosts", "`group_vars/db` (or `all`)"),
    ("app", "app hosts", "`group_vars/app` (or `all`), `host_vars`"),
    ("nginx", "web hosts", "`group_vars/web` (or `all`)"),
    ("backup_store", "the backup host", "`group_vars/backup` (or `all`)"),
]
# Checks of the preflight that concern one variable or a few, beyond its type.
PREFLIGHT = {
    "private_address": "an address, not a name",
    "db_address": "on db hosts' certificate (TLS); an address for `IPAddressAllow=`",
    "db_client_addresses": "admits every app host",
    "db_max_connections": "only without a db group; covers the app hosts' pools",
    "db_tls": "server and app hosts agree",
    "db_tls_ca_cert": "a file on the controller (managed database)",
    "mysql_bind_address": "an address the app hosts reach",
    "mysql_max_connections": "covers the app hosts' pools + headroom",
    "mysql_wait_timeout": "equals `db_idle_timeout`",
    "mysql_interactive_timeout": "equals `db_idle_timeout`",
    "mysql_tls": "app hosts agree (`db_tls`); true with more than one db host",
    "mysql_tls_names": "carries `db_address`",
    "app_listen": "a unix socket or ADDRESS:PORT the web hosts reach",
    "app_timeout_stop_sec": "above `app_gunicorn_graceful_timeout`",
    "app_gunicorn_timeout": "outlasts the database timeouts",
    "app_gunicorn_graceful_timeout": "below `app_timeout_stop_sec`",
    "app_gunicorn_workers": "pools fit `max_connections`",
    "nginx_upstream_servers": "exactly the app hosts' `app_listen`",
    "nginx_proxy_read_timeout": "outlasts Gunicorn's timeouts",
    "nginx_listen": "matches `firewall_web_ports`",
    "firewall_web_ports": "nginx's ports",
    "firewall_web_connections_per_address": "0 or below `nginx_worker_connections`",
    "nginx_worker_connections": "above `firewall_web_connections_per_address`",
    "nginx_tls_listen": "a port of its own; matches `firewall_web_ports`",
    "nginx_tls_certificate": "a file on the controller (`nginx_tls_generate: false`)",
    "nginx_tls_certificate_key": "a file on the controller (`nginx_tls_generate: false`)",
    "nginx_hsts_max_age": "0 or more",
    "nginx_tls_names": "DNS names only (`nginx_tls_acme`)",
    "nginx_tls_acme_server": "an https:// URL",
    "nginx_tls_acme_server_ca": "a file on the controller, when set",
    "mysql_backup": "true while there is a backup host or more than one db host",
    "mysql_backup_copy_address": "an address for `IPAddressAllow=`",
    "db_primary": "a db host (with more than one)",
    "db_replication_password": "12+ characters (with more than one db host)",
    "mysql_replication": "true with more than one db host",
    "mysql_binlog": "true with more than one db host",
    "mysql_server_id": "unique in the db group",
    "mysql_semi_sync_timeout": "below `app_db_read_timeout`",
    "mysql_replication_heartbeat": "below `network_idle_timeout` and the net timeout",
    "mysql_replication_tcp_retries2": "gives up within `mysql_replication_net_timeout`",
}
# The restore playbook's variables (restore.yml -e ...), checked by its first plays.
RESTORE_POINT = "exactly one restore point; checked by `idle-proof-restore --check`"
RESTORE = {
    "mysql_restore_backup": "a backup whose `.sha256` matches",
    "mysql_restore_before_gtid": f"in the binary logs; {RESTORE_POINT}",
    "mysql_restore_until": f"a time after the backup; {RESTORE_POINT}",
    "mysql_restore_latest": RESTORE_POINT,
    "mysql_restore_backup_only": RESTORE_POINT,
    "mysql_restore_from_copy": "a backup host in the inventory",
}


def load(role: str, path: str) -> dict[str, Any]:
    full = ROLES / role / path
    return (yaml.safe_load(full.read_text()) or {}) if full.exists() else {}


def default_text(value: Any) -> str:
    if isinstance(value, str) and "{{" in value:
        inner = value.strip().removeprefix("{{").removesuffix("}}").strip()
        if value.strip().startswith("{{") and inner.isidentifier():
            return f"`{inner}`"
        return "derived (see defaults)"
    if value in ("", [], {}):
        return "(empty)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, (list, dict)):
        return f"`{yaml.safe_dump(value, default_flow_style=True, width=1000).strip()}`"
    return f"`{value}`"


def checks(name: str, spec: dict[str, Any], role: str) -> str:
    found = [f"{spec.get('type', 'raw')}"]
    if role == "shared" and name != "private_address":
        found.append("same on every host")
    if name in PREFLIGHT:
        found.append(PREFLIGHT[name])
    if name in RESTORE:
        found.append(RESTORE[name])
    if any(name == list_name for _, list_name, _ in wiring.ADDRESS_LISTS):
        found.append("addresses only")
    if any(name in (server, app) for server, app, _ in agreement.FOLLOW):
        found.append("server and app hosts agree")
    if any(name == use for uses in wiring.PASSWORDS.values() for _, use in uses) or (
        name in wiring.PASSWORDS
    ):
        found.append(f"{wiring.MIN_PASSWORD}+ characters")
    if any(name == s.role_var for s in SETTINGS):
        found.append("the app's rules (preflight, start-up, `idleproof doctor`)")
    if spec.get("no_log"):
        found.append("never shown")
    return "; ".join(found)


def table() -> str:
    lines = []
    for role, hosts, where in ROLE_ORDER:
        specs = load(role, "meta/argument_specs.yml")["argument_specs"]["main"]["options"]
        defaults = load(role, "defaults/main.yml")
        lines += [
            f"**{role}** ({hosts}; `roles/{role}/`)",
            "",
            "| variable | default | set in | checked |",
            "|---|---|---|---|",
        ]
        for name, spec in specs.items():
            place = "`host_vars`" if name == "private_address" else where
            if name in RESTORE:
                place = "`-e` of `restore.yml`"
            default = default_text(defaults[name]) if name in defaults else "(required)"
            lines.append(f"| `{name}` | {default} | {place} | {checks(name, spec, role)} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(), end="")
