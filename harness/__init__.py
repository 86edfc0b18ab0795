"""The development and test harness: real servers, real faults and test hosts.

Used by ``tests/`` and ``bench/`` (and ``make run``), never shipped to hosts: the app role
packs only ``app``, ``deploy/kit``, ``migrations`` and their configuration. Nothing here is
a mock; every server is a real process, stopped by its own pid.

* :mod:`harness.mariadb` - a throwaway MariaDB in a directory of its own
  (``python -m harness.mariadb start|stop``), tuned like the mysql role;
* :mod:`harness.gunicorn` - the app (or a variant) under real Gunicorn, and migrations;
* :mod:`harness.variants` - the configurations the kit is compared with;
* :mod:`harness.faults` - connections that stall or vanish, made for real on loopback;
* :mod:`harness.scenarios` - the fault scenarios shared by the fault tests and the bench;
* :mod:`harness.hot` - the same, striking busy connections (host lost, cut off, stalled,
  failed over);
* :mod:`harness.nginx` - a real nginx on loopback serving the canonical site;
* :mod:`harness.traffic` - steady GET and POST traffic, every answer counted;
* :mod:`harness.testhost` - a systemd-nspawn test host and ansible-playbook runs on it;
* :mod:`harness.fleet` - four such hosts on a private bridge (scripts/fleet), converged;
* :mod:`harness.conntrack` - a stateful firewall on a fleet host that forgets idle flows;
* :mod:`harness.incident` - the incident on a fleet: load through web1, the naive app on
  an app host, the database host powered off under load.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
