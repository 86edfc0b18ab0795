"""A stateful firewall that forgets idle connections, on a fleet host (docs/testhost.md).

What a cloud NAT gateway or firewall does to an idle database connection, made real with
nftables and conntrack on the database host's side of the bridge: a new TCP flow to the
database port gets a conntrack timeout policy whose ``established`` timeout is the network's
idle limit; once a flow sat idle that long its state is gone, and its next packets (not a
SYN, no state: ``ct state invalid`` with ``nf_conntrack_tcp_loose=0``) are dropped without
a word, counted by the named counter ``forgotten``. The client sees no RST, no FIN: its
packets vanish.

The firewall host needs the ``nftables`` package (and ``conntrack`` for an operator's look
at the table, deploy/RUNBOOK.md); they come through the fleet's package proxy.
"""

from __future__ import annotations

import re

from harness.fleet import Fleet

TABLE = "idle_limit"
# nftables' own names: the table's counter of dropped packets of forgotten flows.
COUNTER = "forgotten"
LOOSE = "/proc/sys/net/netfilter/nf_conntrack_tcp_loose"


def ruleset(idle_limit: int, port: int = 3306) -> str:
    """The firewall: flows to ``port`` arriving on the bridge are forgotten after
    ``idle_limit`` seconds idle, and whatever still comes for them is dropped silently."""
    return f"""\
table inet {TABLE} {{
  ct timeout network_idle {{
    protocol tcp; l3proto ip;
    policy = {{ established: {idle_limit} }};
  }}
  counter {COUNTER} {{ }}
  # Just before filter priority: at raw priority conntrack has not seen the packet and ct
  # matches nothing; at filter priority itself the kit's own firewall (roles/firewall, also
  # stateful) may drop the same packets first, uncounted.
  chain in {{
    type filter hook input priority filter - 10; policy accept;
    iifname "host0" tcp dport {port} ct state invalid counter name "{COUNTER}" drop
    iifname "host0" tcp dport {port} ct state new ct timeout set "network_idle"
  }}
  chain out {{
    type filter hook output priority filter - 10; policy accept;
    oifname "host0" tcp sport {port} ct state invalid counter name "{COUNTER}" drop
  }}
}}
"""


def install_tools(fleet: Fleet, host: str) -> None:
    """nftables and conntrack on the host, through the fleet's package proxy."""
    fleet.run(host, "apt-get", "update", "-q")
    fleet.run(
        host,
        "env",
        "DEBIAN_FRONTEND=noninteractive",
        "apt-get",
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
        "nftables",
        "conntrack",
    )


def install(fleet: Fleet, host: str, idle_limit: int, port: int = 3306) -> None:
    """Load the firewall on the host; the sysctl after the table (loading it loads conntrack)."""
    path = "/root/idle-limit.nft"
    rules = fleet.root(host) / path.lstrip("/")
    rules.write_text(ruleset(idle_limit, port))
    fleet.run(host, "nft", "-f", path)
    # The default (1) picks a forgotten flow up again from its next packet: no fault.
    fleet.run(host, "sh", "-c", f"echo 0 > {LOOSE}")


def disarm(fleet: Fleet, host: str) -> None:
    """Stop forgetting: no rule sets the short timeout, nothing is dropped, and a flow whose
    state is gone is picked up again. The table's timeout object may still be in use by
    flows, so the table stays, empty of rules."""
    fleet.run(host, "nft", "flush", "chain", "inet", TABLE, "in")
    fleet.run(host, "nft", "flush", "chain", "inet", TABLE, "out")
    fleet.run(host, "sh", "-c", f"echo 1 > {LOOSE}")


def dropped(fleet: Fleet, host: str) -> int:
    """Packets of forgotten flows the firewall dropped so far."""
    out = fleet.run(host, "nft", "list", "counter", "inet", TABLE, COUNTER).stdout
    match = re.search(r"packets (\d+)", out)
    if not match:
        raise RuntimeError(f"no packet count in nft's counter listing: {out!r}")
    return int(match.group(1))
