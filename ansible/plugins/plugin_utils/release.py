"""The preflight's view of what the app hosts deploy: it must be there, on the controller.

A release is any combination of a source directory (``app_source_dir``, its
``app_source_paths``), a requirements file (``app_requirements``) and packages or wheels
(``app_python_packages``), plus the idleproof library (``app_kit_package``). Files are read
on the controller when the release is packed: a missing one is refused here, before any
host is touched, instead of halfway through a run.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator, Mapping
from typing import Any

from .common import Finding, true

# Gunicorn's APP_MODULE: a dotted module, then ":" and a name or a factory call.
WSGI = re.compile(r"[A-Za-z_][\w.]*(:[A-Za-z_]\w*(\(.*\))?)?")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def wheel(package: str) -> bool:
    return package.endswith(".whl")


def uncommitted(source: str, paths: list[str]) -> list[str]:
    """What of paths in the git work tree at source differs from its last commit (changed,
    added or untracked but not ignored); nothing when source is not in a work tree."""
    git = ["git", "-c", "safe.directory=*", "-C", source]
    try:
        inside = subprocess.run(
            [*git, "rev-parse", "--is-inside-work-tree"], capture_output=True, text=True
        )
        if inside.returncode != 0 or inside.stdout.strip() != "true":
            return []
        status = subprocess.run(
            [*git, "status", "--porcelain", "--untracked-files=all", "--", *(paths or ["."])],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    except FileNotFoundError:  # no git on the controller: nothing to compare with
        return []
    return sorted(line[3:] for line in status.stdout.splitlines())


def problems(views: Mapping[str, Any]) -> Iterator[Finding]:
    for host, v in views["app"].items():
        yield from (((host,), line) for line in host_problems(v))


def host_problems(v: Mapping[str, Any]) -> Iterator[str]:
    source, paths = str(v.get("app_source_dir", "")), list(v.get("app_source_paths", []))
    requirements = str(v.get("app_requirements", ""))
    packages = [str(p) for p in v.get("app_python_packages", [])]
    if not (source or requirements or packages):
        yield (
            "nothing to deploy: set app_source_dir, app_requirements or app_python_packages "
            "(see ansible/inventories/example and ansible/inventories/mlflow)"
        )
    if source and not os.path.isdir(source):
        yield f"app_source_dir={source} is not a directory on the controller: point it at one"
    elif source:
        for path in paths:
            if not os.path.exists(os.path.join(source, path)):
                yield f"app_source_paths lists {path}, which {source} does not hold: remove it"
        changed = [] if true(v.get("app_source_uncommitted")) else uncommitted(source, paths)
        if changed:
            more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
            yield (
                f"app_source_dir={source} has uncommitted changes in what the release packs "
                f"({', '.join(changed[:3])}{more}): commit them, or set "
                "app_source_uncommitted=true to deploy them as they are"
            )
    if requirements and not os.path.isfile(requirements):
        yield f"app_requirements={requirements} is not a file on the controller: point it at one"
    for package in packages:
        if wheel(package) and not os.path.isfile(package):
            yield f"app_python_packages lists {package}, not a file on the controller"
    kit = str(v.get("app_kit_package", ""))
    if not kit:
        yield (
            "app_kit_package is empty: the app role's files/ holds no idleproof wheel: run "
            "`make collection` (or set app_kit_package to idleproof==VERSION on your index)"
        )
    elif wheel(kit) and not os.path.isfile(kit):
        yield f"app_kit_package={kit} is not a file on the controller: point it at the wheel"
    wsgi = str(v.get("app_wsgi", ""))
    if not WSGI.fullmatch(wsgi):
        yield f"app_wsgi={wsgi!r} is not MODULE:CALLABLE: set it as Gunicorn takes it"
    path = str(v.get("app_readiness_path", ""))
    if not path.startswith("/"):
        yield f"app_readiness_path={path!r} is not a path: set it to one, such as /readyz"
    names = [str(n) for n in v.get("app_database_url_variables", [])]
    for name in names:
        if not ENV_NAME.fullmatch(name):
            yield f"app_database_url_variables lists {name!r}, not an environment variable name"
        elif name == "DATABASE_URL":
            yield (
                "app_database_url_variables lists DATABASE_URL, which the kit writes itself "
                "(without the plugin): list only the variables your app reads its URL from"
            )
        elif name in v.get("app_extra_environment", {}):
            yield f"{name} is both in app_database_url_variables and app_extra_environment"
