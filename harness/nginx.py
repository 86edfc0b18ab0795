"""A real nginx as a plain process on loopback, serving the kit's canonical site.

Not a service: ``nginx -p <prefix> -c <generated nginx.conf>`` in the foreground, on a free
port, stopped by its own pid. The generated main file plays Debian's /etc/nginx/nginx.conf
with the settings the Ansible role manages there (worker_connections,
worker_rlimit_nofile, read from the role's defaults); inside ``http {}`` it includes the
canonical site, with only its absolute paths (/etc/nginx/idle-proof/, /var/log/nginx/)
pointed into the prefix. A fault test passes its own site text and main settings to run
the naive configuration beside the kit's.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from harness import ROOT, free_port

SITE = ROOT / "nginx" / "idle-proof.conf"
SERVER_CONF = ROOT / "nginx" / "idle-proof" / "server.conf"
ROLE_DEFAULTS = ROOT / "ansible" / "roles" / "nginx" / "defaults" / "main.yml"


def nginx_binary() -> str:
    path = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    if path is None:
        raise RuntimeError("nginx not found: run scripts/install-system-deps test")
    return path


def role_main_settings() -> dict[str, int]:
    """What the nginx role writes into nginx.conf's main and events contexts."""
    defaults = yaml.safe_load(ROLE_DEFAULTS.read_text())
    return {
        "worker_connections": int(defaults["nginx_worker_connections"]),
        "worker_rlimit_nofile": int(defaults["nginx_worker_rlimit_nofile"]),
    }


def server_conf_for(port: int, text: str | None = None) -> str:
    """server.conf (the repository's unless given) listening on one loopback port only, in
    plain HTTP: the site's behaviour is tested here, HTTPS on the deployed hosts."""
    source = SERVER_CONF.read_text() if text is None else text
    dropped = ("listen ", "ssl_", "add_header Strict-Transport-Security")
    kept = [line for line in source.splitlines() if not line.strip().startswith(dropped)]
    return "\n".join([f"listen 127.0.0.1:{port};", *kept]) + "\n"


class NginxServer:
    """nginx in front of ``upstream`` ("127.0.0.1:PORT" or "unix:/path")."""

    def __init__(
        self,
        directory: Path,
        upstream: str,
        *,
        site_text: str | None = None,
        server_conf_text: str | None = None,
        worker_connections: int | None = None,
        worker_rlimit_nofile: int | None = None,
        worker_processes: int = 2,
    ) -> None:
        kit = role_main_settings()
        self.prefix = directory
        self.upstream = upstream
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.site_text = site_text if site_text is not None else SITE.read_text()
        self.server_conf_text = server_conf_text
        self.worker_connections = worker_connections or kit["worker_connections"]
        # 0: leave the limit nginx inherits (what Debian's nginx.conf does).
        self.worker_rlimit_nofile = (
            kit["worker_rlimit_nofile"] if worker_rlimit_nofile is None else worker_rlimit_nofile
        )
        self.worker_processes = worker_processes
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def error_log(self) -> Path:
        return self.prefix / "logs" / "error.log"

    @property
    def access_log(self) -> Path:
        """The site's own access log (the canonical site names /var/log/nginx/...)."""
        return self.prefix / "logs" / "idle-proof.access.log"

    @property
    def conf_path(self) -> Path:
        return self.prefix / "nginx.conf"

    def write_config(self) -> None:
        for sub in ("logs", "idle-proof", "temp"):
            (self.prefix / sub).mkdir(parents=True, exist_ok=True)
        includes = self.prefix / "idle-proof"
        (includes / "upstream.conf").write_text(f"server {self.upstream};\n")
        (includes / "server.conf").write_text(server_conf_for(self.port, self.server_conf_text))
        (includes / "redirect.conf").write_text("# plain HTTP only: no redirect\n")
        site = self.site_text.replace("/etc/nginx/idle-proof/", f"{includes}/")
        site = site.replace("/var/log/nginx/", f"{self.prefix / 'logs'}/")
        (self.prefix / "site.conf").write_text(site)
        temp = self.prefix / "temp"
        rlimit = (
            f"worker_rlimit_nofile {self.worker_rlimit_nofile};\n"
            if self.worker_rlimit_nofile
            else ""
        )
        # Workers of a root master would run as nobody, who cannot enter pytest's 0700
        # temporary directory (request bodies are buffered there).
        user = "user root root;\n" if os.geteuid() == 0 else ""
        self.conf_path.write_text(
            f"{user}"
            f"worker_processes {self.worker_processes};\n"
            f"{rlimit}"
            "daemon off;\n"
            f"pid {self.prefix / 'nginx.pid'};\n"
            f"error_log {self.error_log} info;\n"
            f"events {{ worker_connections {self.worker_connections}; }}\n"
            "http {\n"
            "    include /etc/nginx/mime.types;\n"
            "    default_type application/octet-stream;\n"
            f"    access_log {self.prefix / 'logs' / 'access.log'};\n"
            f"    client_body_temp_path {temp / 'body'};\n"
            f"    proxy_temp_path {temp / 'proxy'};\n"
            f"    fastcgi_temp_path {temp / 'fastcgi'};\n"
            f"    uwsgi_temp_path {temp / 'uwsgi'};\n"
            f"    scgi_temp_path {temp / 'scgi'};\n"
            f"    include {self.prefix / 'site.conf'};\n"
            "}\n"
        )

    def _argv(self, *extra: str) -> list[str]:
        return [
            nginx_binary(),
            "-p",
            f"{self.prefix}/",
            "-c",
            str(self.conf_path),
            "-e",
            str(self.error_log),
            *extra,
        ]

    def check(self) -> subprocess.CompletedProcess[str]:
        """``nginx -t`` on the generated configuration."""
        self.write_config()
        return subprocess.run(
            self._argv("-t"), capture_output=True, text=True, timeout=30, check=False
        )

    def start(self, timeout: float = 10) -> NginxServer:
        checked = self.check()
        if checked.returncode != 0:
            raise RuntimeError(f"nginx -t failed: {checked.stderr.strip()}")
        self.proc = subprocess.Popen(
            self._argv(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: stop() ends master and workers
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                stderr = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"nginx exited: {stderr.strip()} (see {self.error_log})")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1),
            ):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nginx did not listen in {timeout}s; see {self.error_log}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        pgid = self.proc.pid  # start_new_session made the master its group leader
        os.killpg(pgid, signal.SIGTERM)  # fast shutdown
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        self.proc.wait(timeout=5)
        if self.proc.stderr:
            self.proc.stderr.close()

    def _errors(self) -> str:
        if not self.error_log.exists():
            return ""
        return self.error_log.read_text(errors="replace")

    def error_count(self, pattern: str) -> int:
        """Lines of nginx's error log that match ``pattern`` (a regular expression)."""
        return len(re.findall(pattern, self._errors()))

    def workers_logging(self, pattern: str) -> set[int]:
        """The worker pids whose error-log lines match ``pattern``: nginx writes each line
        as ``[level] PID#TID: ...``, and every worker has connections of its own."""
        return {int(pid) for pid in re.findall(rf"\] (\d+)#\d+: .*{pattern}", self._errors())}

    def __enter__(self) -> NginxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class RawResponse:
    """One HTTP/1.x response as bytes came off the socket (status 0: no response at all)."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def is_json(self) -> bool:
        return self.headers.get("content-type", "").split(";")[0] == "application/json"


def send_raw(
    port: int,
    data: bytes,
    source: str | None = None,
    timeout: float = 10,
    end_after: float | None = None,
) -> RawResponse:
    """Send exactly ``data`` to 127.0.0.1:port (from ``source``) and read one response.

    Interim 1xx answers are skipped; the body is read by Content-Length, so a kept-alive
    connection does not hold the caller until nginx's keepalive_timeout. With
    ``end_after``, the sending side is closed when nothing came back for that many
    seconds: a request missing its end then fails, not after nginx's body timeout (nginx
    takes a closed client as gone and answers nothing).
    """
    with socket.socket() as sock:
        sock.settimeout(timeout)
        if source:
            sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        sock.sendall(data)
        received = b""
        if end_after is not None:
            sock.settimeout(end_after)

        def more() -> bool:
            nonlocal received
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                if sock.gettimeout() == timeout:
                    return False
                sock.shutdown(socket.SHUT_WR)
                sock.settimeout(timeout)
                return more()
            except ConnectionResetError:
                chunk = b""
            received += chunk
            return bool(chunk)

        while True:
            while b"\r\n\r\n" not in received:
                if not more():
                    return RawResponse(0, body=received)
            head, _, received = received.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ")[1])
            if status >= 200:
                break
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        # A HEAD answer announces the length of a body it does not carry.
        length = 0 if data.startswith(b"HEAD ") else int(headers.get("content-length", "0"))
        while len(received) < length and more():
            pass
        return RawResponse(status, headers, received[:length])
