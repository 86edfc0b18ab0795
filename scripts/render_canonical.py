#!/usr/bin/env python3
"""Write systemd/ and nginx/ from the roles' templates, for one host holding everything.

The roles render their units and nginx site from templates (ansible/roles/*/templates); the
files in systemd/ and nginx/ are those templates rendered with the values of a single host
that runs the reference app with nginx in front (the layout of `make deploy`), so they stand
on their own for a user without Ansible. tests/test_sources.py fails when they differ.

    .venv/bin/python scripts/render_canonical.py          # rewrite them
    .venv/bin/python scripts/render_canonical.py --check  # exit 1 when one is out of date
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import jinja2

ROOT = Path(__file__).resolve().parent.parent
ROLES = ROOT / "ansible" / "roles"
NAME = "idle-proof"
# The role defaults in force on that host (single host: a unix socket, loopback only).
VALUES: dict[str, Any] = {
    "app_name": NAME,
    "app_user": NAME,
    "app_group": NAME,
    "app_root": f"/opt/{NAME}",
    "app_config_dir": f"/etc/{NAME}",
    "app_wsgi": "app.wsgi:app",
    "app_gunicorn_config": "python:idleproof.gunicorn_conf",
    "app_gunicorn_graceful_timeout": 30,
    "app_timeout_stop_sec": 35,
    "app_memory_deny_write_execute": True,
    "app_listen": f"/run/{NAME}/gunicorn.sock",
    "app_ip_address_allow": ["localhost"],
    "app_socket_ip_address_allow": ["localhost"],
    "nginx_site_name": NAME,
    "nginx_site_id": NAME.replace("-", "_"),
    "nginx_proxy_pass_headers": [],
    "nginx_content_security_policy": "default-src 'none'; frame-ancestors 'none'",
    "nginx_worker_connections": 4096,
    "nginx_worker_rlimit_nofile": 8192,
    "nginx_listen": ["80", "[::]:80"],
    "nginx_tls": True,
    "nginx_tls_listen": ["443", "[::]:443"],
    "nginx_hsts_max_age": 0,
    "nginx_tls_acme": False,
    "nginx_server_name": "_",
    "nginx_client_max_body_size": "1m",
    "nginx_proxy_connect_timeout": 2,
    "nginx_proxy_send_timeout": 65,
    "nginx_proxy_read_timeout": 65,
    "nginx_upstream_servers": [f"unix:/run/{NAME}/gunicorn.sock"],
    "mysql_service": "mariadb",
    "mysql_backup_dir": "/var/backups/mariadb",
    "mysql_backup_textfile_dir": "/var/lib/prometheus/node-exporter",
    "mysql_backup_on_calendar": "*-*-* 03:15:00",
    # One host: no backup host to copy to.
    "groups": {},
}
# Each file: its template, and where it goes.
FILES = {
    "app/templates/etc/systemd/system/app.service.j2": f"systemd/{NAME}.service",
    "app/templates/etc/systemd/system/app.socket.j2": f"systemd/{NAME}.socket",
    "nginx/templates/etc/nginx/sites-available/site.conf.j2": f"nginx/{NAME}.conf",
    "nginx/templates/etc/nginx/idle-proof/server.conf.j2": f"nginx/{NAME}/server.conf",
    "nginx/templates/etc/nginx/idle-proof/upstream.conf.j2": f"nginx/{NAME}/upstream.conf",
    "nginx/templates/etc/nginx/idle-proof/redirect.conf.j2": f"nginx/{NAME}/redirect.conf",
    "nginx/templates/etc/systemd/system/nginx.service.d/hardening.conf.j2": (
        "systemd/nginx.service.d/hardening.conf"
    ),
    "mysql/templates/etc/systemd/system/mariadb.service.d/hardening.conf.j2": (
        "systemd/mariadb.service.d/hardening.conf"
    ),
    "mysql/templates/etc/systemd/system/idle-proof-backup.service.j2": (
        "systemd/idle-proof-backup.service"
    ),
    "mysql/templates/etc/systemd/system/idle-proof-backup.timer.j2": (
        "systemd/idle-proof-backup.timer"
    ),
}


def environment() -> jinja2.Environment:
    """Jinja as Ansible's template module sets it up, with the filters the templates use."""
    env = jinja2.Environment(
        trim_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined
    )
    env.filters["bool"] = bool
    env.filters["regex_replace"] = lambda value, pattern, replacement: re.sub(
        pattern, replacement, value
    )
    env.tests["match"] = lambda value, pattern: re.match(pattern, value) is not None
    return env


def rendered() -> dict[Path, str]:
    env = environment()
    out = {}
    for template, target in FILES.items():
        managed = f"rendered from ansible/roles/{template} by scripts/render_canonical.py"
        text = env.from_string((ROLES / template).read_text())
        out[ROOT / target] = text.render(**VALUES, ansible_managed=managed)
    return out


def main(args: list[str]) -> int:
    stale = [
        path for path, text in rendered().items() if not path.exists() or path.read_text() != text
    ]
    if "--check" in args:
        for path in stale:
            print(f"{path.relative_to(ROOT)} is out of date: run scripts/render_canonical.py")
        return 1 if stale else 0
    for path, text in rendered().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
