"""The filter idleproof.kit.host_address: where the other hosts reach a host."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def host_address(host: str, hostvars: Mapping[str, Any]) -> str:
    """The address the other hosts reach ``host`` at: its private_address, else its
    ansible_host, else its inventory name (which the preflight then refuses where an
    address is needed)."""
    own = hostvars[host]
    for name in ("private_address", "ansible_host"):
        if name in own:
            return str(own[name])
    return host


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"host_address": host_address}
