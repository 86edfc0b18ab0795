"""Does Gunicorn's ``post_fork`` hook really give a new worker a pool of its own?

Reading the hook's source cannot tell (a dispose behind an ``if`` that is never true looks
the same). So the hook is run the way Gunicorn runs it: in a forked child, after the app was
imported as ``preload_app`` imports it, with a ``server`` whose ``app.wsgi()`` returns that
app. Every SQLAlchemy engine the app holds must come out of it with a new pool (what
``engine.dispose()`` gives); the parent, ``kit doctor`` itself, is left untouched.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import select
import signal
import sys
from collections.abc import Mapping
from types import SimpleNamespace

from kit.facts import GunicornFacts, environment

DISPOSED = "disposed"
# How long the hook may take before the verdict is "it hangs".
TIMEOUT = 20.0


def run_hook(g: GunicornFacts) -> str:
    """In the child: import the app, run post_fork, say what became of its engines."""
    from gunicorn.util import import_app
    from sqlalchemy.engine import Engine

    os.chdir(g.chdir)
    sys.path.insert(0, g.chdir)
    app = import_app(g.app_uri)
    engines = [o for o in gc.get_objects() if isinstance(o, Engine)]
    if not engines:
        return f"{g.app_uri} holds no SQLAlchemy engine"
    pools = {id(e): e.pool for e in engines}
    log = logging.getLogger("gunicorn.error")
    server = SimpleNamespace(app=SimpleNamespace(wsgi=lambda: app), log=log, cfg=None)
    worker = SimpleNamespace(pid=os.getpid(), age=1, log=log)
    g.post_fork(server, worker)
    kept = [e for e in engines if e.pool is pools[id(e)]]
    if kept:
        return f"post_fork left {len(kept)} of {len(engines)} engine(s) of {g.app_uri} undisposed"
    return DISPOSED


def post_fork_verdict(g: GunicornFacts, env: Mapping[str, str]) -> str:
    """``DISPOSED``, or what the hook did instead (kept a pool, raised, hung)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into kit's own code
        verdict = "post_fork did not finish"
        try:
            os.close(read)
            with environment(env):
                verdict = run_hook(g)
        except BaseException as exc:  # anything the app or the hook raises
            verdict = f"running post_fork failed: {type(exc).__name__}: {exc}".splitlines()[0]
        finally:
            os.write(write, verdict.encode()[:2000])
            os._exit(0)
    os.close(write)
    try:
        ready, _, _ = select.select([read], [], [], TIMEOUT)
        verdict = os.read(read, 4096).decode(errors="replace") if ready else ""
    finally:
        os.close(read)
        _end(pid)
    return verdict or f"post_fork did not return within {TIMEOUT:g} s"


def _end(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)  # a hook that hangs
    os.waitpid(pid, 0)
