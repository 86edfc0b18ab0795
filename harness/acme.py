"""A real ACME CA on loopback for the certbot path of the nginx role: Debian's pebble.

Pebble is Let's Encrypt's test server: the same protocol (RFC 8555), and it validates each
HTTP-01 challenge for real, by fetching the token from the name's port 80 (here
``http_port``: the test host's plain-HTTP listener). Names resolve through
pebble-challtestsrv's mock DNS, which answers every A query with 127.0.0.1, so any name
reaches the test host. Pebble's own HTTPS uses a throwaway CA of ours (``api_ca``: what
certbot trusts for the directory); the roots it issues under are made at each start
(``issuing_root``: what a client of the site trusts).
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import IO

from harness import free_port
from harness.tls import make_certificates


class Pebble:
    def __init__(self, directory: Path, http_port: int) -> None:
        self.directory = directory
        self.http_port = http_port
        self.port, self.management_port = free_port(), free_port()
        self.dns_port, self.dns_management_port = free_port(), free_port()
        self._processes: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        """The ACME directory, for certbot's --server."""
        return f"https://127.0.0.1:{self.port}/dir"

    @property
    def api_ca(self) -> Path:
        return self.directory / "api" / "ca.pem"

    def start(self, timeout: float = 20) -> None:
        certs = make_certificates(self.directory / "api", ["127.0.0.1"])
        config = self.directory / "pebble.json"
        config.write_text(
            json.dumps(
                {
                    "pebble": {
                        "listenAddress": f"127.0.0.1:{self.port}",
                        "managementListenAddress": f"127.0.0.1:{self.management_port}",
                        "certificate": str(certs.cert),
                        "privateKey": str(certs.key),
                        "httpPort": self.http_port,
                        "tlsPort": free_port(),
                        "ocspResponderURL": "",
                        "externalAccountBindingRequired": False,
                    }
                }
            )
        )
        log = (self.directory / "pebble.log").open("wb")
        # Only the mock DNS of the test server: no challenge listeners of its own.
        self._spawn(
            ["pebble-challtestsrv", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
             "-dns01", f"127.0.0.1:{self.dns_port}", "-http01", "", "-https01", "",
             "-tlsalpn01", "", "-management", f"127.0.0.1:{self.dns_management_port}"],
            log, {},
        )  # fmt: skip
        # No random sleeps before a validation, no nonces refused at random: a test that
        # fails says something about the kit, not about pebble's chaos settings.
        self._spawn(
            ["pebble", "-config", str(config), "-dnsserver", f"127.0.0.1:{self.dns_port}",
             "-strict=false"],
            log, {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"},
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._get(self.url)
                return
            except OSError:
                ended = any(p.poll() is not None for p in self._processes)
                if ended or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"pebble did not start: {(self.directory / 'pebble.log').read_text()}"
                    ) from None
                time.sleep(0.2)

    def issuing_root(self) -> str:
        """The root pebble issues under (PEM), made when it started."""
        return self._get(f"https://127.0.0.1:{self.management_port}/roots/0")

    def stop(self) -> None:
        for process in self._processes:
            process.terminate()
        for process in self._processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        self._processes = []

    def _spawn(self, argv: list[str], log: IO[bytes], env: dict[str, str]) -> None:
        self._processes.append(
            subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env})
        )

    def _get(self, url: str) -> str:
        context = ssl.create_default_context(cafile=str(self.api_ca))
        with urllib.request.urlopen(url, context=context, timeout=5) as answer:
            return str(answer.read().decode())
