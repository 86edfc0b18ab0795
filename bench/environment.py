"""The machine and the versions a run measured, for the report's last line."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any


def machine() -> dict[str, Any]:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {"cpu": model, "cores": os.cpu_count(), "kernel": platform.release()}


def versions() -> dict[str, str]:
    out = {"Python": platform.python_version()}
    for dist in ("SQLAlchemy", "PyMySQL", "gunicorn", "Flask", "Flask-SQLAlchemy"):
        out[dist] = metadata.version(dist)
    mariadbd = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
    text = subprocess.run([mariadbd, "--version"], capture_output=True, text=True).stdout
    match = re.search(r"Ver\s+(\S+)", text)
    out["MariaDB"] = match.group(1) if match else text.strip()
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    text = subprocess.run([nginx, "-v"], capture_output=True, text=True).stderr
    match = re.search(r"nginx/(\S+)", text)
    out["nginx"] = match.group(1) if match else "unknown"
    text = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout
    match = re.search(r"wrk (\S+)", text)
    out["wrk"] = match.group(1) if match else "unknown"
    return out
