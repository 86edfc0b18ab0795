#!/usr/bin/env python3
"""Install the Ansible collections pinned in ansible/requirements.yml into ansible/.collections,
and make ansible/ itself the collection idleproof.kit there (a relative link), so that the
playbooks of this checkout use the kit's roles and plugins by the names a user's playbook
gives them (idleproof.kit.app, idleproof.kit.host_address).

Galaxy is not reachable from every build machine (CI here only reaches PyPI and Debian), so
the collections come from the Ansible community package on PyPI, which bundles them: one
wheel, pinned by version and sha256, cached outside the repo. Only the collections named in
requirements.yml are extracted, and each must have exactly the pinned version.

    .venv/bin/python scripts/install_collections.py
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "ansible" / "requirements.yml"
TARGET = ROOT / "ansible" / ".collections" / "ansible_collections"
# The community package release for ansible-core 2.17 that carries community.mysql 3.11.0
# and community.crypto 2.22.3.
WHEEL = "ansible-10.7.0-py3-none-any.whl"
WHEEL_SHA256 = "0089f08e047ceb70edd011be009f5c6273add613fbe491e9697c0556c989d8ea"
CACHE = Path(os.environ.get("IDLE_PROOF_CACHE", "/var/cache/idle-proof-kit")) / "pypi"


def die(message: str) -> None:
    sys.exit(f"install_collections.py: {message}")


def pinned() -> dict[str, str]:
    data = yaml.safe_load(REQUIREMENTS.read_text())
    out = {}
    for entry in data.get("collections", []):
        if "version" not in entry or not str(entry["version"])[0].isdigit():
            die(f"{entry['name']} in {REQUIREMENTS} has no exact version: pin it, e.g. 3.11.0")
        out[entry["name"]] = str(entry["version"])
    return out


def installed_version(name: str) -> str | None:
    manifest = TARGET.joinpath(*name.split(".")) / "MANIFEST.json"
    if not manifest.exists():
        return None
    return str(json.loads(manifest.read_text())["collection_info"]["version"])


def wheel() -> Path:
    path = CACHE / WHEEL
    if not path.exists() or hashlib.sha256(path.read_bytes()).hexdigest() != WHEEL_SHA256:
        CACHE.mkdir(parents=True, exist_ok=True)
        version = WHEEL.split("-")[1]
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--only-binary=:all:",
                "--disable-pip-version-check",
                "-d",
                str(CACHE),
                f"ansible=={version}",
            ],
            check=True,
        )
    if hashlib.sha256(path.read_bytes()).hexdigest() != WHEEL_SHA256:
        die(f"{path} does not match its pinned sha256: delete it and run again")
    return path


def link_own_collection() -> None:
    link = TARGET / "idleproof" / "kit"
    if link.is_symlink() and link.resolve() == ROOT / "ansible":
        return
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(Path("..") / ".." / "..")  # ansible/.collections/ansible_collections/idleproof
    print(f"install_collections.py: idleproof.kit -> {link.relative_to(ROOT)} (this checkout)")


def main() -> None:
    link_own_collection()
    wanted = pinned()
    missing = {n: v for n, v in wanted.items() if installed_version(n) != v}
    if not missing:
        return
    with zipfile.ZipFile(wheel()) as zf:
        for name, version in missing.items():
            prefix = "ansible_collections/" + name.replace(".", "/") + "/"
            members = [m for m in zf.namelist() if m.startswith(prefix)]
            manifest = json.loads(zf.read(prefix + "MANIFEST.json"))["collection_info"]
            if manifest["version"] != version:
                die(
                    f"{WHEEL} carries {name} {manifest['version']}, not {version}: "
                    f"pin {name} to {manifest['version']} in {REQUIREMENTS} or change WHEEL"
                )
            dest = TARGET.joinpath(*name.split("."))
            shutil.rmtree(dest, ignore_errors=True)
            for member in members:
                zf.extract(member, TARGET.parent)
            print(f"install_collections.py: {name} {version} -> {dest.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
