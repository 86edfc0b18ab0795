"""The test fleet (scripts/fleet): the hosts of ansible/inventories/fleet booted as
systemd-nspawn hosts on a private bridge, and ansible-playbook runs against them.

A test fleet gets its own names, bridge and /24 (derived from the test's pid), so it can
run beside `make fleet` and beside the single-host deploy tests.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness import ROOT
from harness.testhost import ANSIBLE_DIR, STATE, PlaybookRun, run_playbook

FLEET_INVENTORY = ANSIBLE_DIR / "inventories" / "fleet"


def second_octet(name: str) -> int:
    """10.213.x.0/24 for the first fleet name; another name gets 10.214-233."""
    return 213 if name == "ipkf" else 214 + sum(map(ord, name)) % 20


def free_network(second: int, third: int) -> str:
    """10.<second>.<third> or the next /24 no interface of this machine holds yet: two
    fleets of one name in processes whose pids agree modulo 150 must not share a subnet."""
    used = subprocess.run(
        ["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=True
    ).stdout
    for step in range(150):
        network = f"10.{second}.{100 + (third - 100 + step) % 150}"
        if f" {network}." not in used:
            return network
    raise RuntimeError(f"no free /24 in 10.{second}.100-249 for a test fleet")


@dataclass
class Fleet:
    prefix: str  # containers are named <prefix>-<host>
    bridge: str
    network: str  # the /24's first three octets; the bridge holds .1
    inventory: Path  # a directory: hosts.yml and the fleet inventory's group_vars
    # A frozen copy of the release files (see tests.testhost.NspawnHost.source_dir).
    source_dir: Path | None = None
    # Inventory variables for every host (hosts.yml's all.vars), e.g. network_idle_timeout.
    inventory_vars: dict[str, Any] = field(default_factory=dict)
    # Hosts of a group the kit does not deploy to (a monitoring host sharing the inventory),
    # booted with the others: name -> the last octet of its address.
    bystanders: dict[str, int] = field(default_factory=dict)
    # Hosts beyond the fleet inventory's (name -> its group and the last octet of its
    # address), and the inventory's hosts left out: a fleet of another shape.
    extra_hosts: dict[str, tuple[str, int]] = field(default_factory=dict)
    without: tuple[str, ...] = ()

    @classmethod
    def for_test(
        cls,
        workdir: Path,
        source_dir: Path | None = None,
        inventory_vars: dict[str, Any] | None = None,
        name: str = "ipkf",
        bystanders: dict[str, int] | None = None,
        extra_hosts: dict[str, tuple[str, int]] | None = None,
        without: tuple[str, ...] = (),
    ) -> Fleet:
        """A fleet with names and a subnet of its own, described by an inventory in workdir.

        ``name`` tells two fleets of one process apart (a short prefix: ipkf, ipki)."""
        pid = os.getpid()
        fleet = cls(
            prefix=f"{name}{pid}",
            bridge=f"{name}{pid}"[:15],
            network=free_network(second_octet(name), 100 + pid % 150),
            inventory=workdir / "inventory",
            source_dir=source_dir,
            inventory_vars=inventory_vars or {},
            bystanders=bystanders or {},
            extra_hosts=extra_hosts or {},
            without=without,
        )
        fleet.write_inventory()
        return fleet

    def write_inventory(self) -> None:
        """The fleet inventory with this fleet's addresses and keys; group_vars shared.
        Written again after a change to ``inventory_vars``."""
        hosts: dict[str, Any] = yaml.safe_load((FLEET_INVENTORY / "hosts.yml").read_text())
        hosts["all"]["vars"].update(self.inventory_vars)
        if self.bystanders:
            monitoring = {
                name: {"ansible_host": f"10.0.0.{octet}"} for name, octet in self.bystanders.items()
            }
            hosts["all"]["children"]["monitoring"] = {"hosts": monitoring}
        groups = hosts["all"]["children"]
        for name, (group, octet) in self.extra_hosts.items():
            groups[group]["hosts"][name] = {"ansible_host": f"{self.network}.{octet}"}
        for group in groups.values():
            for name in self.without:
                group["hosts"].pop(name, None)
            for name, host in group["hosts"].items():
                if host is None:  # a host of another group, listed again (backup: web1)
                    continue
                host["ansible_host"] = re.sub(r"^\d+\.\d+\.\d+", self.network, host["ansible_host"])
                host["ansible_ssh_private_key_file"] = f"{STATE}/{self.prefix}-{name}/id_ed25519"
        self.inventory.mkdir(parents=True, exist_ok=True)
        (self.inventory / "hosts.yml").write_text(yaml.safe_dump(hosts, sort_keys=False))
        if not (self.inventory / "group_vars").is_symlink():
            (self.inventory / "group_vars").symlink_to(FLEET_INVENTORY / "group_vars")

    def address(self, host: str) -> str:
        hosts = yaml.safe_load((self.inventory / "hosts.yml").read_text())
        for group in hosts["all"]["children"].values():
            if group["hosts"].get(host):  # not a listing in a second group (backup: web1)
                return str(group["hosts"][host]["ansible_host"])
        raise KeyError(f"{host} is not in {self.inventory}")

    @property
    def controller(self) -> str:
        """This machine's address on the fleet's bridge (scripts/fleet gives it .1): where
        Ansible, the tests and the fleet's apt proxy reach the hosts from."""
        return f"{self.network}.1"

    @property
    def url(self) -> str:
        """The site through web1, in HTTPS (its certificate is for web1's address)."""
        return f"https://{self.address('web1')}"

    @property
    def ca(self) -> Path:
        """The kit's CA, which the fleet's converge makes beside its inventory."""
        return self.inventory / ".tls" / "ca.crt"

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "FLEET_INVENTORY": str(self.inventory),
            "FLEET_PREFIX": self.prefix,
            "FLEET_BRIDGE": self.bridge,
            "FLEET_SUBNET": f"{self.network}.0/24",
            # ansible-inventory (scripts/fleet reads the inventory) from this interpreter's venv.
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        }

    def up(self) -> float:
        """Boot the fleet; the seconds it took."""
        started = time.monotonic()
        subprocess.run([ROOT / "scripts" / "fleet", "up"], env=self.env, check=True, timeout=300)
        return time.monotonic() - started

    def down(self) -> None:
        subprocess.run([ROOT / "scripts" / "fleet", "down"], env=self.env, check=True, timeout=120)

    def run(self, host: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a command inside one host (its inventory name), as root."""
        return subprocess.run(
            [ROOT / "scripts" / "fleet", "exec", host, *argv],
            env=self.env,
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )

    def links(self) -> list[str]:
        """The host-side ends of the hosts' network links, as attached to this fleet's bridge
        (systemd-nspawn names them from the machine name plus a hash: no prefix is unique)."""
        brif = Path(f"/sys/class/net/{self.bridge}/brif")
        return sorted(p.name for p in brif.iterdir()) if brif.exists() else []

    def root(self, host: str) -> Path:
        """The host's root filesystem, as this machine sees it (to hand it files)."""
        return STATE / f"{self.prefix}-{host}" / "root"

    def power_off(self, host: str) -> None:
        """Pull the host's plug: no FIN or RST for its connections, no shutdown; disk kept."""
        subprocess.run(
            [ROOT / "scripts" / "fleet", "poweroff", host], env=self.env, check=True, timeout=60
        )

    def power_on(self, host: str) -> float:
        """Boot a powered-off host from the disk it was left with; the seconds it took."""
        started = time.monotonic()
        subprocess.run(
            [ROOT / "scripts" / "fleet", "poweron", host], env=self.env, check=True, timeout=180
        )
        return time.monotonic() - started

    def replace(self, host: str) -> float:
        """Power the host off and boot a new one in its place (same name and address, a new
        disk and ssh key, nothing of the old); the seconds it took."""
        started = time.monotonic()
        subprocess.run(
            [ROOT / "scripts" / "fleet", "replace", host], env=self.env, check=True, timeout=300
        )
        return time.monotonic() - started

    def playbook(
        self,
        *args: str,
        timeout: float = 1800,
        inventory: Path | None = None,
        file: str = "site.yml",
    ) -> PlaybookRun:
        """site.yml (or another ``file`` of ansible/) on this fleet (or on its hosts through
        another inventory).

        ``timeout`` only stops a hung run: a cold converge of four hosts takes several
        times longer beside the other test groups than alone, and the tests report it."""
        source = {"app_source_dir": str(self.source_dir)} if self.source_dir else {}
        return run_playbook(
            str(Path(sys.executable).parent / "ansible-playbook"),
            *("-i", str(inventory or self.inventory), "-e", json.dumps(source), *args),
            timeout=timeout,
            file=file,
        )
