"""What the preflight's checks share: the shape of a finding, what an address is, and
what counts as true."""

from __future__ import annotations

import ipaddress
from typing import Any

# What a check found: the hosts it concerns, and one line that says what to change.
Finding = tuple[tuple[str, ...], str]


def is_address(text: str, networks: bool = False) -> bool:
    """An IP address (or, with ``networks``, a network such as 10.0.0.0/24), not a name."""
    try:
        ipaddress.ip_network(text, strict=False) if networks else ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def true(value: Any) -> bool:
    """A boolean as an inventory may spell it (true, yes, 1, in any case)."""
    return str(value).lower() in ("true", "yes", "1")
