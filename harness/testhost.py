"""A systemd-nspawn test host (scripts/testhost) and ansible-playbook runs against it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness import ROOT, VENV_BIN, free_port

ANSIBLE_DIR = ROOT / "ansible"
LOCAL_INVENTORY = ANSIBLE_DIR / "inventories" / "local"
STATE = Path(os.environ.get("TESTHOST_STATE", "/var/lib/idle-proof-kit/testhosts"))


RELEASE_PATHS = ("app", "migrations", "alembic.ini", "requirements.lock")


def snapshot_release(dest: Path) -> Path:
    """Copy what the app role packs (app_source_paths) into dest."""
    for name in RELEASE_PATHS:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)
    return dest


@dataclass
class PlaybookRun:
    returncode: int
    output: str
    seconds: float

    @property
    def changed(self) -> int:
        counts = re.findall(r"changed=(\d+)", self.output.split("PLAY RECAP")[-1])
        return sum(int(c) for c in counts)

    def fatal(self, host: str) -> str:
        """The last task failure Ansible printed for ``host`` ("" when none)."""
        lines = [line for line in self.output.splitlines() if line.startswith(f"fatal: [{host}]")]
        return lines[-1] if lines else ""

    def changed_tasks(self) -> list[str]:
        """The tasks that reported a change, to say what broke idempotence."""
        tasks, current = [], ""
        for line in self.output.splitlines():
            if line.startswith(("TASK [", "RUNNING HANDLER [")):
                current = line.split("[", 1)[1].rsplit("]", 1)[0]
            elif line.startswith("changed:") and current not in tasks:
                tasks.append(current)
        return tasks


@dataclass
class NspawnHost:
    name: str
    ssh_port: int = field(default_factory=free_port)
    web_port: int = field(default_factory=free_port)  # plain HTTP: redirects to tls_port
    tls_port: int = field(default_factory=free_port)
    db_port: int = field(default_factory=free_port)
    # A frozen copy of the release files: edits to the working tree during the run must
    # not turn a re-run into a new release.
    source_dir: Path | None = None
    # The Debian release it runs (scripts/testhost's TESTHOST_SUITE).
    suite: str = "bookworm"

    @property
    def key(self) -> Path:
        return STATE / self.name / "id_ed25519"

    @property
    def url(self) -> str:
        """The site, in HTTPS (its certificate is for 127.0.0.1, signed by ``ca``)."""
        return f"https://127.0.0.1:{self.tls_port}"

    @property
    def ca(self) -> Path:
        """The kit's CA that the local inventory's converge makes on this machine."""
        return LOCAL_INVENTORY / ".tls" / "ca.crt"

    def up(self) -> None:
        env = {**os.environ, "TESTHOST_SSH_PORT": str(self.ssh_port), "TESTHOST_SUITE": self.suite}
        subprocess.run([ROOT / "scripts" / "testhost", "up", self.name], env=env, check=True)

    def down(self) -> None:
        subprocess.run([ROOT / "scripts" / "testhost", "down", self.name], check=False)

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a command inside the host, as root, in all its namespaces."""
        return subprocess.run(
            [ROOT / "scripts" / "testhost", "exec", self.name, *argv],
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )

    def extra_vars(self, **overrides: object) -> str:
        """The local inventory, pointed at this host's ports; overrides come last."""
        values: dict[str, object] = {
            "ansible_port": self.ssh_port,
            "ansible_ssh_private_key_file": str(self.key),
            "db_port": self.db_port,
            "nginx_listen": [f"127.0.0.1:{self.web_port}"],
            "nginx_tls_listen": [f"127.0.0.1:{self.tls_port}"],
            **({"app_source_dir": str(self.source_dir)} if self.source_dir else {}),
            **overrides,
        }
        return json.dumps(values)

    def playbook(self, timeout: float = 600, **overrides: object) -> PlaybookRun:
        return self.play("site.yml", timeout, **overrides)

    def play(self, file: str, timeout: float = 600, **overrides: object) -> PlaybookRun:
        """A playbook of ansible/ (site.yml, restore.yml) on this host."""
        inventory = ["-i", str(LOCAL_INVENTORY), "-e", self.extra_vars(**overrides)]
        return run_playbook(
            str(VENV_BIN / "ansible-playbook"), *inventory, timeout=timeout, file=file
        )


def run_playbook(
    ansible_playbook: str, *args: str, timeout: float, file: str = "site.yml"
) -> PlaybookRun:
    """site.yml (or another ``file`` of ansible/) with these arguments, uncoloured: its exit
    status, its output and the seconds it took (a failed run is a result, not an exception)."""
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}
    # The tests' own clients trust the kit's CA (tests/helpers.trusting); the controller's
    # pip, which downloads the app's wheels from the package index, must keep the system's.
    env.pop("REQUESTS_CA_BUNDLE", None)
    started = time.monotonic()
    proc = subprocess.run(
        [ansible_playbook, *args, file],
        cwd=ANSIBLE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return PlaybookRun(proc.returncode, proc.stdout + proc.stderr, time.monotonic() - started)
