"""What the preflight's checks share: the shape of a finding, and what an address is."""

from __future__ import annotations

import ipaddress

# What a check found: the hosts it concerns, and one line that says what to change.
Finding = tuple[tuple[str, ...], str]


def is_address(text: str, networks: bool = False) -> bool:
    """An IP address (or, with ``networks``, a network such as 10.0.0.0/24), not a name."""
    try:
        ipaddress.ip_network(text, strict=False) if networks else ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
