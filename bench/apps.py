"""What the engine plugin and the kit's Gunicorn config cost on applications no one here
wrote: each application of harness/apps.py as its documentation deploys it and with the
kit, side by side in interleaved rounds, on its busiest read (wrk, the same command line)."""

from __future__ import annotations

import base64
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.load import Served, WrkLoad, interleaved, summarize
from bench.progress import Progress
from harness import apps
from harness.mariadb import LocalMariaDB

# The labels of the two ways each application runs; "kit" is what the ratios compare with.
DOCUMENTED, KIT = "as documented", "kit"


def wrk_mode(r: apps.Request) -> str:
    """bench/wrk.lua's arguments for the request (a GET, with its Basic credentials)."""
    auth = f" auth={base64.b64encode(r.auth.encode()).decode()}" if r.auth else ""
    return f"get{auth}"


def app_costs(
    db: LocalMariaDB, load: WrkLoad, rounds: int, progress: Progress, warm_up: int
) -> dict[str, Any]:
    """Per application: requests per second, latency and CPU per request of its busiest
    read, as documented and with the kit (``kit_ratio``: the kit's over the documented)."""
    return {
        app.name: one_app(app, db, load, rounds, progress, warm_up) for app in apps.APPS.values()
    }


def one_app(
    app: apps.App, db: LocalMariaDB, load: WrkLoad, rounds: int, progress: Progress, warm_up: int
) -> dict[str, Any]:
    bin_dir = apps.install(app)
    db.execute(
        f"DROP DATABASE IF EXISTS `{app.name}`",
        f"CREATE DATABASE `{app.name}` CHARACTER SET utf8mb4",
        f"GRANT ALL PRIVILEGES ON `{app.name}`.* TO '{db.user}'@'127.0.0.1'",
    )
    url = db.url.rsplit("/", 1)[0] + f"/{app.name}"
    with tempfile.TemporaryDirectory(prefix=f"bench-{app.name}-") as tmp:
        state = Path(tmp)
        apps.migrate(app, bin_dir, url, state / "migrate")

        def starter(kit: bool) -> Callable[[], Served]:
            label = "kit" if kit else "documented"
            return lambda: apps.server(
                app, bin_dir, url, state / label, state / f"{label}.log", kit=kit
            ).start(timeout=120)

        first = starter(True)()
        for request in app.setup:
            apps.send(first.url, request, timeout=30)
        first.stop()
        starters = {DOCUMENTED: starter(False), KIT: starter(True)}
        endpoint = {app.read.path: (app.read.path, wrk_mode(app.read))}
        return summarize(interleaved(db, starters, endpoint, load, rounds, progress, warm_up))
