"""What the application does with its engines, found by running it the way Gunicorn does.

Reading the hook's source cannot tell (a dispose behind an ``if`` that is never true looks
the same), nor can reading the application's (a third party's engine options). So in a
forked child, the app is imported as ``preload_app`` imports it, with Gunicorn's config
loaded; then:

* every MySQL engine it holds must carry the kit's protection (the library's
  ``create_engine`` or the engine plugin);
* with ``preload_app``, ``post_fork`` runs with a ``server`` whose ``app.wsgi()`` returns
  the app, and every engine must come out of it with a new pool (what
  ``engine.dispose()`` gives).

The parent, ``idleproof doctor`` itself, is left untouched. An application that makes its
engines lazily, in the worker (the MLflow tracking server does), holds none at import:
that is safe, and the environment's database URLs are judged instead
(:func:`idleproof.ops.checks.url_checks`).
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import select
import signal
import sys
from collections.abc import Mapping
from types import SimpleNamespace

from idleproof.ops.facts import AppFacts, GunicornFacts, environment

# How long the import and the hook may take before the verdict is "it hangs".
TIMEOUT = 60.0


def inspect(g: GunicornFacts, run_post_fork: bool) -> AppFacts:
    """In the child: import the app, look at its engines, run post_fork."""
    from gunicorn.util import import_app
    from sqlalchemy.engine import Engine

    from idleproof.engine import is_protected

    os.chdir(g.chdir)
    sys.path.insert(0, g.chdir)  # Gunicorn imports the app from its working directory too
    app = import_app(g.app_uri)
    engines = [o for o in gc.get_objects() if isinstance(o, Engine)]
    found = AppFacts(engines=len(engines))
    found.unprotected = [
        e.url.render_as_string(hide_password=True)
        for e in engines
        if e.dialect.name in ("mysql", "mariadb") and not is_protected(e)
    ]
    if not run_post_fork:
        return found
    if not engines:
        found.post_fork = AppFacts.NO_ENGINE
        return found
    pools = {id(e): e.pool for e in engines}
    log = logging.getLogger("gunicorn.error")
    server = SimpleNamespace(app=SimpleNamespace(wsgi=lambda: app), log=log, cfg=None)
    worker = SimpleNamespace(pid=os.getpid(), age=1, log=log)
    try:
        g.post_fork(server, worker)
    except Exception as exc:
        found.post_fork = f"running post_fork failed: {type(exc).__name__}: {exc}"
        return found
    kept = [e for e in engines if e.pool is pools[id(e)]]
    found.post_fork = (
        f"post_fork left {len(kept)} of {len(engines)} engine(s) of {g.app_uri} undisposed"
        if kept
        else AppFacts.DISPOSED
    )
    return found


def app_facts(g: GunicornFacts, env: Mapping[str, str], run_post_fork: bool) -> AppFacts:
    """:func:`inspect`, in a forked child under ``env``."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into the doctor's own code
        found = AppFacts(error="the app did not finish loading")
        try:
            os.close(read)
            with environment(env):
                found = inspect(g, run_post_fork)
        except BaseException as exc:  # anything the app or the hook raises
            found = AppFacts(error=f"{type(exc).__name__}: {exc}".splitlines()[0])
        finally:
            os.write(write, json.dumps(found.__dict__).encode()[:60000])
            os._exit(0)
    os.close(write)
    chunks = []
    try:
        while select.select([read], [], [], TIMEOUT)[0]:
            chunk = os.read(read, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read)
        _end(pid)
    if not chunks:
        return AppFacts(error=f"loading {g.app_uri} did not finish within {TIMEOUT:g} s")
    return AppFacts(**json.loads(b"".join(chunks)))


def _end(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)  # an import or a hook that hangs
    os.waitpid(pid, 0)
