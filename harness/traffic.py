"""Steady traffic for tests that change things under load: GET / and POST /notes from a
few threads, every answer kept (start, duration, status, JSON error), every note that
was created remembered."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass

import requests
import urllib3


@dataclass
class Answer:
    started: float  # time.monotonic() when the request was sent
    seconds: float
    status: int | str  # the HTTP status, or the exception's name
    error: str | None = None  # a non-2xx answer's JSON "error", None when not JSON
    note: str | None = None  # the text a POST /notes sent

    @property
    def ok(self) -> bool:
        return isinstance(self.status, int) and self.status < 300


def json_error(r: requests.Response) -> str | None:
    try:
        body = r.json()
    except ValueError:
        return None
    return str(body.get("error")) if isinstance(body, dict) else None


def closed_unanswered(exc: requests.ConnectionError) -> bool:
    """The server closed the connection (FIN or reset) before any byte of an answer: the
    request never reached the application through this connection."""
    reason = exc.args[0] if exc.args else None
    return isinstance(reason, urllib3.exceptions.ProtocolError) and isinstance(
        reason.args[-1], ConnectionResetError | BrokenPipeError
    )


class Load:
    """``with Load(url) as load: ...`` runs the traffic for the block.

    ``answers``: every request's :class:`Answer`, in the order they ended; ``ok`` and
    ``failures`` (one line per failed request: the status, the X-Request-Id and the start
    of the body; or the exception), ``statuses`` by code (or the exception's
    name), ``slowest`` in seconds, and ``created``: the text of every note answered 201,
    unique per request, so a test can look for lost or duplicated writes.

    ``resend=True`` makes each thread behave like a browser or curl on a keep-alive
    connection: a request sent on a reused connection that the server closed before any
    answer is sent once more on a new connection. nginx's graceful reload closes idle
    client connections, and a request already on its way there meets the close; Python's
    requests does not resend it by itself. Every resend is recorded in ``resent`` (wall-
    clock times), so a test can check that each one came right after a reload, and the
    note keeps its text, so a write that the first attempt did store shows up duplicated.
    """

    def __init__(
        self,
        url: str,
        threads: int = 4,
        timeout: float = 60,
        rate: float | None = None,
        resend: bool = False,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.resend = resend
        self.resent: list[float] = []
        # Requests per second over all threads (None: as fast as answered). Through nginx
        # from an address other than loopback, stay under the site's per-address limit
        # (20 r/s, nginx/idle-proof.conf) or the load counts 429s, not the deploy.
        self.interval = threads / rate if rate else 0.0
        self.answers: list[Answer] = []
        self.ok = 0
        self.failures: list[str] = []
        self.statuses: Counter[int | str] = Counter()
        self.slowest = 0.0
        self.created: list[str] = []
        self.tag = uuid.uuid4().hex[:8]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._loop, args=(i,)) for i in range(threads)]

    def _send(self, session: requests.Session, n: int, text: str) -> requests.Response:
        if n % 2:
            return session.post(f"{self.url}/notes", json={"text": text}, timeout=self.timeout)
        return session.get(f"{self.url}/", timeout=self.timeout)

    def _loop(self, worker: int) -> None:
        session = requests.Session()
        reused = False  # the next request goes out on a connection that already served one
        n = 0
        while not self._stop.is_set():
            n += 1
            text = f"load {self.tag} {worker}.{n}"
            started = time.monotonic()
            status: int | str
            error = None
            try:
                try:
                    r = self._send(session, n, text)
                except requests.ConnectionError as exc:
                    if not (self.resend and reused and closed_unanswered(exc)):
                        raise
                    with self._lock:
                        self.resent.append(time.time())
                    r = self._send(session, n, text)
                status = r.status_code
                # The id nginx gave the request, whole: its access log line names the app
                # host that failed it.
                rid = r.headers.get("X-Request-Id", "-")
                failure = None if r.status_code < 300 else f"{r.status_code} {rid} {r.text[:100]}"
                error = None if failure is None else json_error(r)
                reused = r.headers.get("Connection", "").lower() != "close"
            except requests.RequestException as exc:
                status, failure = type(exc).__name__, repr(exc)
                reused = False
            took = time.monotonic() - started
            if took < self.interval:
                self._stop.wait(self.interval - took)
            with self._lock:
                note = text if n % 2 else None
                self.answers.append(Answer(started, took, status, error, note))
                self.statuses[status] += 1
                self.slowest = max(self.slowest, took)
                if failure is None:
                    self.ok += 1
                    if status == 201:
                        self.created.append(text)
                else:
                    self.failures.append(failure)

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()
