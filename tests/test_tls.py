"""TLS to the database: verified, never silently plaintext, and reported by idleproof doctor.

A real MariaDB serving TLS with a throwaway CA (harness/tls.py), the app's engine and
``idleproof doctor`` against it; a server without TLS and a certificate for another name are
refused; a user that REQUIRES SSL cannot log in in plaintext.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from harness import ROOT, VENV_BIN
from harness.gunicorn import migrate
from harness.mariadb import LocalMariaDB, start_mariadb
from harness.tls import Certificates, make_certificates
from idleproof.settings import Settings
from tests.helpers import Protected, protected

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"), ["127.0.0.1", "localhost"])


@pytest.fixture(scope="module")
def tls_server(
    tmp_path_factory: pytest.TempPathFactory, certificates: Certificates
) -> Iterator[LocalMariaDB]:
    db = start_mariadb(tmp_path_factory.mktemp("mariadb-tls"), options=certificates.server_options)
    try:
        migrate(db.url)
        yield db
    finally:
        db.stop()


def database(url: str, ca: Path | str) -> Protected:
    return protected(Settings.from_env({"DATABASE_URL": url, "DB_TLS_CA": str(ca)}))


def cipher(db: Protected) -> str:
    with db.engine.connect() as conn:
        row = conn.execute(text("SHOW SESSION STATUS LIKE 'Ssl_cipher'")).one()
        return str(row[1])


def test_the_app_speaks_verified_tls(tls_server: LocalMariaDB, certificates: Certificates) -> None:
    db = database(tls_server.url, certificates.ca)
    try:
        assert cipher(db)  # encrypted
    finally:
        db.engine.dispose()


def test_a_server_without_tls_is_refused_not_used_in_plaintext(
    mariadb: LocalMariaDB, certificates: Certificates
) -> None:
    db = database(mariadb.url, certificates.ca)
    with pytest.raises(OperationalError) as refused:
        cipher(db)
    assert refused.value.orig.args[0] == 2026  # type: ignore[union-attr]


def test_a_certificate_for_another_name_is_refused(
    tls_server: LocalMariaDB, tmp_path: Path
) -> None:
    other = make_certificates(tmp_path / "other", ["db.example.internal"])
    # The server's certificate is signed by its own CA; trusting a CA that did not sign it,
    # or reaching it under a name it was not issued for, both fail the handshake.
    db = database(tls_server.url, other.ca)
    with pytest.raises(OperationalError):
        cipher(db)


def test_an_unreadable_ca_is_one_line(tls_server: LocalMariaDB, tmp_path: Path) -> None:
    result = subprocess.run(
        [str(VENV_BIN / "python"), "-c", "import app.wsgi"],
        cwd=ROOT,
        env={"DATABASE_URL": tls_server.url, "DB_TLS_CA": str(tmp_path / "missing.pem")},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"configuration error: DB_TLS_CA={tmp_path / 'missing.pem'}: cannot read it: point it "
        "at the CA certificate (PEM) that signed the database server's certificate, readable "
        "by the app's user"
    ]


def test_a_user_that_requires_ssl_cannot_log_in_in_plaintext(
    tls_server: LocalMariaDB, certificates: Certificates
) -> None:
    tls_server.execute(
        "CREATE USER IF NOT EXISTS 'secure'@'127.0.0.1' IDENTIFIED BY 'secure-pw' REQUIRE SSL"
    )

    def login(**tls: Any) -> pymysql.connections.Connection[pymysql.cursors.Cursor]:
        return pymysql.connect(
            host="127.0.0.1", port=tls_server.port, user="secure", password="secure-pw", **tls
        )

    with pytest.raises(pymysql.err.OperationalError) as refused:
        login(ssl_disabled=True)
    assert refused.value.args[0] == 1045  # Access denied
    login(ssl_ca=str(certificates.ca), ssl_verify_identity=True).close()


def doctor_tls(url: str, ca: Path | str, tmp_path: Path) -> dict[str, str]:
    env_file = tmp_path / "app.env"
    env_file.write_text(f"DATABASE_URL={url}\nDB_TLS_CA={ca}\n")
    result = subprocess.run(
        [str(VENV_BIN / "idleproof"), "doctor", "--json", "--env-file", str(env_file)],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    rows = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    found: dict[str, str] = rows.get("TLS") or rows["database connection"]
    return found


def test_doctor_reports_the_encryption(
    tls_server: LocalMariaDB, mariadb: LocalMariaDB, certificates: Certificates, tmp_path: Path
) -> None:
    encrypted = doctor_tls(tls_server.url, certificates.ca, tmp_path)
    assert encrypted["status"] == "PASS" and "TLSv1" in encrypted["detail"], encrypted
    local = doctor_tls(mariadb.url, "", tmp_path)
    assert local["status"] == "PASS" and "plaintext to 127.0.0.1" in local["detail"], local
    required = doctor_tls(mariadb.url, certificates.ca, tmp_path)  # no TLS on that server
    assert required["status"] == "FAIL" and "2026" in required["detail"], required
