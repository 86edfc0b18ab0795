"""The kit's database CA on the controller, with its key in Ansible Vault.

The CA's tasks (roles/shared/tasks/tls_ca.yml) run on the controller alone here, as
site.yml runs them before the roles. An operator who vaults the CA's key must get the
same CA back on the next run, not a new one that every app host would then have to trust;
the module the tasks use, given the vaulted file, replaces it: that is shown beside them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.testhost import ANSIBLE_DIR

pytestmark = pytest.mark.ansible

BIN = Path(sys.executable).parent
VAULT_HEADER = b"$ANSIBLE_VAULT;"
PLAYBOOK = """\
- name: Make the kit's CA on the controller, as site.yml does.
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Run the shared role's CA tasks.
      ansible.builtin.import_role:
        name: idleproof.kit.shared
        tasks_from: tls_ca.yml
"""


def run(*argv: str, local: bool = True) -> subprocess.CompletedProcess[str]:
    """An Ansible command on the controller alone (``local``: localhost, with this Python,
    which has cryptography)."""
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1"}
    python = f"ansible_python_interpreter={sys.executable}"
    host = ["-i", "localhost,", "-c", "local", "-e", python] if local else []
    return subprocess.run(
        [*argv, *host],
        cwd=ANSIBLE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def ca(tmp_path: Path) -> tuple[Path, Path]:
    """A playbook of the CA's tasks and the directory they keep the CA in."""
    subprocess.run(
        [sys.executable, ANSIBLE_DIR.parent / "scripts" / "install_collections.py"], check=True
    )
    playbook = tmp_path / "ca.yml"
    playbook.write_text(PLAYBOOK)
    return playbook, tmp_path / "tls"


def converge(playbook: Path, tls: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run(
        str(BIN / "ansible-playbook"), str(playbook),
        "-e", f"db_tls_dir={tls} db_tls_ca_cert={tls}/ca.crt", *args,
    )  # fmt: skip


def test_a_vaulted_ca_key_is_kept_and_used(ca: tuple[Path, Path], tmp_path: Path) -> None:
    playbook, tls = ca
    first = converge(playbook, tls)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr
    key = (tls / "ca.key").read_text()
    certificate = (tls / "ca.crt").read_bytes()
    password = tmp_path / "vault-password"
    password.write_text("a vault password for the test\n")
    vaulted = run(
        str(BIN / "ansible-vault"), "encrypt", "--vault-password-file", str(password),
        str(tls / "ca.key"), local=False,
    )  # fmt: skip
    assert vaulted.returncode == 0, vaulted.stderr
    at_rest = (tls / "ca.key").read_bytes()
    assert at_rest.startswith(VAULT_HEADER)

    # The module the tasks use, pointed at the vaulted file: it replaces the key.
    naive = tmp_path / "naive.key"
    naive.write_bytes(at_rest)
    replaced = run(
        str(BIN / "ansible"), "localhost",
        "-m", "community.crypto.openssl_privatekey",
        "-a", f"path={naive} type=ECC curve=secp384r1",
    )  # fmt: skip
    assert replaced.returncode == 0, replaced.stdout + replaced.stderr
    assert not naive.read_bytes().startswith(VAULT_HEADER), "the module kept the vaulted key"

    # The kit's tasks: the same key, still vaulted, and the same CA certificate, and the
    # key's body never in the output, even at -vvv.
    again = converge(playbook, tls, "--vault-password-file", str(password), "-vvv")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr
    assert (tls / "ca.key").read_bytes() == at_rest
    assert (tls / "ca.crt").read_bytes() == certificate
    body = [line for line in key.splitlines() if line and not line.startswith("-----")]
    assert body and not any(line in again.stdout + again.stderr for line in body)

    # Without the vault's password: the run stops, and the key is still what it was.
    refused = converge(playbook, tls)
    assert refused.returncode != 0
    assert "vault" in (refused.stdout + refused.stderr).lower(), refused.stdout[-3000:]
    assert (tls / "ca.key").read_bytes() == at_rest
