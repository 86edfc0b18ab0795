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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness import ROOT
from harness.testhost import ANSIBLE_DIR, STATE, PlaybookRun

FLEET_INVENTORY = ANSIBLE_DIR / "inventories" / "fleet"


@dataclass
class Fleet:
    prefix: str  # containers are named <prefix>-<host>
    bridge: str
    network: str  # the /24's first three octets; the bridge holds .1
    inventory: Path  # a directory: hosts.yml and the fleet inventory's group_vars
    # A frozen copy of the release files (see tests.testhost.NspawnHost.source_dir).
    source_dir: Path | None = None

    @classmethod
    def for_test(cls, workdir: Path, source_dir: Path | None = None) -> Fleet:
        """A fleet with names and a subnet of its own, described by an inventory in workdir."""
        pid = os.getpid()
        fleet = cls(
            prefix=f"ipkf{pid}",
            bridge=f"ipkf{pid}"[:15],
            network=f"10.213.{100 + pid % 150}",
            inventory=workdir / "inventory",
            source_dir=source_dir,
        )
        fleet.write_inventory()
        return fleet

    def write_inventory(self) -> None:
        """The fleet inventory with this fleet's addresses and keys; group_vars shared."""
        hosts: dict[str, Any] = yaml.safe_load((FLEET_INVENTORY / "hosts.yml").read_text())
        for group in hosts["all"]["children"].values():
            for name, host in group["hosts"].items():
                host["ansible_host"] = re.sub(r"^\d+\.\d+\.\d+", self.network, host["ansible_host"])
                host["ansible_ssh_private_key_file"] = f"{STATE}/{self.prefix}-{name}/id_ed25519"
        self.inventory.mkdir(parents=True, exist_ok=True)
        (self.inventory / "hosts.yml").write_text(yaml.safe_dump(hosts, sort_keys=False))
        (self.inventory / "group_vars").symlink_to(FLEET_INVENTORY / "group_vars")

    def address(self, host: str) -> str:
        hosts = yaml.safe_load((self.inventory / "hosts.yml").read_text())
        for group in hosts["all"]["children"].values():
            if host in group["hosts"]:
                return str(group["hosts"][host]["ansible_host"])
        raise KeyError(f"{host} is not in {self.inventory}")

    @property
    def url(self) -> str:
        return f"http://{self.address('web1')}"

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

    def playbook(self, *args: str, timeout: float = 900) -> PlaybookRun:
        env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}
        source = {"app_source_dir": str(self.source_dir)} if self.source_dir else {}
        argv = [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i",
            str(self.inventory),
            "-e",
            json.dumps(source),
            *args,
            "site.yml",
        ]
        started = time.monotonic()
        proc = subprocess.run(
            argv,
            cwd=ANSIBLE_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return PlaybookRun(proc.returncode, proc.stdout + proc.stderr, time.monotonic() - started)
