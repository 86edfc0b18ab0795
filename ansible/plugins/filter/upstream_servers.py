"""The filter idleproof.kit.upstream_servers: nginx's upstream servers for the app hosts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ansible_collections.idleproof.kit.plugins.filter.host_address import host_address


def upstream_servers(
    app_hosts: Iterable[str], hostvars: Mapping[str, Any], here: str, socket: str, port: int
) -> list[str]:
    """One ``server`` address per app host: its app_listen when set, else ``socket`` when
    the app runs on the web host ``here`` itself, else its address and ``port``. A path
    becomes ``unix:path``, as nginx writes a socket."""
    servers = []
    for host in app_hosts:
        own = hostvars[host]
        if "app_listen" in own:
            listen = str(own["app_listen"])
        elif host == here:
            listen = socket
        else:
            listen = f"{host_address(host, hostvars)}:{port}"
        servers.append(f"unix:{listen}" if listen.startswith("/") else listen)
    return servers


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"upstream_servers": upstream_servers}
