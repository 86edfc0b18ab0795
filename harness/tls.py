"""Throwaway TLS material for a test database server, made with the openssl command.

A CA, and a server certificate it signs for the names and addresses given (subjectAltName),
so the app can verify both the certificate and the name it connected to.
"""

from __future__ import annotations

import ipaddress
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Certificates:
    ca: Path  # what the app trusts (DB_TLS_CA)
    cert: Path  # the server's certificate
    key: Path  # and its key

    @property
    def server_options(self) -> dict[str, object]:
        """MariaDB's options to serve TLS with these."""
        return {"ssl_ca": self.ca, "ssl_cert": self.cert, "ssl_key": self.key}


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def make_certificates(directory: Path, names: list[str], days: int = 2) -> Certificates:
    """A CA and a server certificate for ``names`` (host names or IP addresses)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    cert, key, csr = directory / "server.pem", directory / "server.key", directory / "server.csr"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca,
             "-days", str(days), "-subj", "/CN=idle-proof test CA")  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
             "-subj", f"/CN={names[0]}")  # fmt: skip
    alt = ",".join(f"{'IP' if _is_address(n) else 'DNS'}:{n}" for n in names)
    extensions = directory / "server.ext"
    extensions.write_text(f"subjectAltName={alt}\n")
    _openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
             "-out", cert, "-days", str(days), "-extfile", extensions)  # fmt: skip
    key.chmod(0o600)
    return Certificates(ca, cert, key)


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True
