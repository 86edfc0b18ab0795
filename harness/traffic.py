"""Steady traffic for tests that change things under load: GET / and POST /notes from a
few threads, every answer counted and timed, every note that was created remembered."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter

import requests


class Load:
    """``with Load(url) as load: ...`` runs the traffic for the block.

    ``ok`` and ``failures`` (one line per failed request), ``statuses`` by code (or the
    exception's name), ``slowest`` in seconds, and ``created``: the text of every note
    answered 201, unique per request, so a test can look for lost or duplicated writes.
    """

    def __init__(
        self, url: str, threads: int = 4, timeout: float = 60, rate: float | None = None
    ) -> None:
        self.url = url
        self.timeout = timeout
        # Requests per second over all threads (None: as fast as answered). Through nginx
        # from an address other than loopback, stay under the site's per-address limit
        # (20 r/s, nginx/idle-proof.conf) or the load counts 429s, not the deploy.
        self.interval = threads / rate if rate else 0.0
        self.ok = 0
        self.failures: list[str] = []
        self.statuses: Counter[int | str] = Counter()
        self.slowest = 0.0
        self.created: list[str] = []
        self.tag = uuid.uuid4().hex[:8]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._loop, args=(i,)) for i in range(threads)]

    def _loop(self, worker: int) -> None:
        session = requests.Session()
        n = 0
        while not self._stop.is_set():
            n += 1
            text = f"load {self.tag} {worker}.{n}"
            started = time.monotonic()
            status: int | str
            try:
                if n % 2:
                    r = session.post(f"{self.url}/notes", json={"text": text}, timeout=self.timeout)
                else:
                    r = session.get(f"{self.url}/", timeout=self.timeout)
                status = r.status_code
                failure = None if r.status_code < 300 else f"{r.status_code} {r.text[:100]}"
            except requests.RequestException as exc:
                status, failure = type(exc).__name__, repr(exc)
            took = time.monotonic() - started
            if took < self.interval:
                self._stop.wait(self.interval - took)
            with self._lock:
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
