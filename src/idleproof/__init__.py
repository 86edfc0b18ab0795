"""idleproof: Flask/SQLAlchemy/PyMySQL database connections that survive idle limits, killed
connections, restarts, vanished hosts and failovers.

The public API (``docs/library.md`` has the guide):

* :func:`create_engine` (:mod:`idleproof.engine`): a protected engine from
  :class:`Settings`; :func:`protect` puts the protection on an engine you built;
  :func:`dispose_after_fork` is Gunicorn's ``post_fork``.
* :class:`idleproof.flask.IdleProof`: the Flask integration (session teardown, the retry of
  a request whose connection died before any COMMIT, 503 JSON, ``/readyz``).
* ``?plugin=idleproof`` on a database URL (:mod:`idleproof.plugin`): the same protection for
  an application that cannot be changed.
* ``gunicorn --config python:idleproof.gunicorn_conf`` (:mod:`idleproof.gunicorn_conf`).
* :class:`Settings` (:mod:`idleproof.settings`): every ``DB_*`` setting, read from the
  environment; the ``idleproof`` command (doctor, probe-idle, settings).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from idleproof.connection import CommitOutcomeUnknown
    from idleproof.engine import create_engine, dispose_after_fork, protect, protected_engines
    from idleproof.settings import Settings, SettingsError

__all__ = [
    "CommitOutcomeUnknown",
    "Settings",
    "SettingsError",
    "__version__",
    "create_engine",
    "dispose_after_fork",
    "protect",
    "protected_engines",
]

# Each name's module, imported on first use: the settings and rules (the Ansible
# preflight's, the command's) need no SQLAlchemy, and importing it costs half a second.
_HOMES = {
    "CommitOutcomeUnknown": "idleproof.connection",
    "Settings": "idleproof.settings",
    "SettingsError": "idleproof.settings",
    "create_engine": "idleproof.engine",
    "dispose_after_fork": "idleproof.engine",
    "protect": "idleproof.engine",
    "protected_engines": "idleproof.engine",
}


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib.metadata import version

        return version("idleproof")
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'idleproof' has no attribute {name!r}")
