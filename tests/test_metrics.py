"""``/metrics`` under real Gunicorn (2 workers, preload) against the real MariaDB."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from app import create_app
from harness.mariadb import LocalMariaDB
from harness.scenarios import hit
from idleproof.guard import CAUSES
from idleproof.metrics import FLUSH_INTERVAL
from tests.helpers import WAIT_TIMEOUT, AppFactory

pytestmark = pytest.mark.slow

# Seconds a pooled connection may idle in the test of replacements: far longer than it.
LONG_IDLE_TIMEOUT = 300


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample on /metrics, keyed by name and sorted labels."""
    response = requests.get(f"{url}/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def settled(url: str, holds: Callable[[Samples], bool]) -> bool:
    """Whether the scrapes come to show ``holds`` within the time a worker takes to flush
    its counts (idleproof.metrics.FLUSH_INTERVAL), and a little more."""
    deadline = time.monotonic() + FLUSH_INTERVAL + 2
    while not holds(scrape(url)):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def replaced(samples: Samples, cause: str) -> float:
    return samples.get(("idleproof_db_connections_replaced_total", (("cause", cause),)), 0.0)


def app_connections(db: LocalMariaDB) -> int:
    rows = db.execute(
        f"SELECT COUNT(*) FROM information_schema.processlist WHERE user = '{db.user}'"
    )
    return int(str(rows[0][0]))


def warm_both_workers(url: str, db: LocalMariaDB) -> None:
    """Concurrent requests until each of the 2 sync workers holds a pooled connection.

    A sync worker serves one request at a time, so its pool holds one connection: two app
    connections on the server means both workers have one.
    """
    deadline = time.monotonic() + 10
    with ThreadPoolExecutor(8) as pool:
        while app_connections(db) < 2:
            assert time.monotonic() < deadline, "only one worker ever served a request"
            list(pool.map(lambda _: requests.get(f"{url}/", timeout=5), range(16)))


@pytest.fixture
def long_idle_timeout(mariadb: LocalMariaDB) -> Iterator[str]:
    """The server's wait_timeout raised for the connections made meanwhile: the value for
    DB_IDLE_TIMEOUT. With the session's 2 s (tests.helpers.WAIT_TIMEOUT), a loaded machine
    lets a pooled connection reach its age limit, and the pool recycles it by age, which is
    not a replacement, before the KILL can be seen."""
    mariadb.execute(f"SET GLOBAL wait_timeout = {LONG_IDLE_TIMEOUT}")
    try:
        yield str(LONG_IDLE_TIMEOUT)
    finally:
        mariadb.execute(f"SET GLOBAL wait_timeout = {WAIT_TIMEOUT}")


def test_replaced_connections_are_summed_across_workers(
    start_app: AppFactory, mariadb: LocalMariaDB, tmp_path: Path, long_idle_timeout: str
) -> None:
    metrics_dir = tmp_path / "metrics"
    server = start_app(PROMETHEUS_MULTIPROC_DIR=str(metrics_dir), DB_IDLE_TIMEOUT=long_idle_timeout)
    before = scrape(server.url)
    warm_both_workers(server.url, mariadb)

    killed = mariadb.kill_app_connections()
    assert killed == 2  # one per worker
    # Concurrent bursts until both workers have served: each then holds a new connection
    # (sequential requests may all land on one worker, and on a loaded machine even
    # bursts can, for a while).
    statuses: list[int] = []
    deadline = time.monotonic() + 60
    with ThreadPoolExecutor(8) as pool:
        while app_connections(mariadb) < killed:
            assert time.monotonic() < deadline, "only one worker served after the KILL"
            statuses += pool.map(
                lambda _: requests.get(f"{server.url}/", timeout=5).status_code, range(16)
            )
    assert set(statuses) == {200}, statuses

    # Each worker replaced its killed connection; whichever worker answers reports the
    # sum, once every worker has flushed what it counted.
    assert settled(
        server.url,
        lambda s: replaced(s, "closed_by_server") - replaced(before, "closed_by_server") >= killed,
    ), {cause: replaced(scrape(server.url), cause) for cause in CAUSES}
    scrapes = [scrape(server.url) for _ in range(6)]
    totals = {
        replaced(s, "closed_by_server") - replaced(before, "closed_by_server") for s in scrapes
    }
    assert totals == {float(killed)}, totals
    # Files from both workers (plus, possibly, the master's) make up that sum.
    assert len(list(metrics_dir.glob("counter_*.db"))) >= 2
    # The bursts and a warm-up round.
    assert settled(
        server.url, lambda s: s[("idleproof_db_checkouts_total", ())] >= len(statuses) + 16
    )
    after = scrape(server.url)
    assert after[("idleproof_db_connects_total", ())] >= 2 + killed  # first ones + replacements
    for cause in CAUSES:
        assert ("idleproof_db_connections_replaced_total", (("cause", cause),)) in after


def test_the_pool_gauges_tell_what_the_pools_hold(
    start_app: AppFactory, mariadb: LocalMariaDB, tmp_path: Path
) -> None:
    """Idle workers hand out nothing, and the connections their pools hold are the ones
    MariaDB sees (a gauge set while a connection was being checked in said otherwise)."""
    server = start_app(PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"))
    warm_both_workers(server.url, mariadb)

    def truthful(samples: Samples) -> bool:
        out = samples[("idleproof_db_connections_checked_out", ())]
        held = samples[("idleproof_db_pool_connections", ())]
        return out == 0 and held == app_connections(mariadb)

    assert settled(server.url, truthful), scrape(server.url)
    # The sum over the workers, not the answering one's own registry (it would have
    # Python's process collectors): the multiprocess directory was in force at import.
    assert not [name for name, _ in scrape(server.url) if name.startswith("python_gc")]


def test_503s_and_pings_are_counted_and_the_default_directory_is_private(
    start_app: AppFactory, mariadb: LocalMariaDB
) -> None:
    # PROMETHEUS_MULTIPROC_DIR unset: gunicorn.conf.py gives this master a directory.
    server = start_app(DB_PING_AFTER_IDLE="0")
    assert server.proc is not None
    default_dir = Path(tempfile.gettempdir()) / f"idle-proof-metrics-{server.proc.pid}"
    assert default_dir.is_dir()
    ok = hit(server.url, 6)
    assert ok.failures == 0
    assert settled(server.url, lambda s: s[("idleproof_db_pings_total", ())] >= 6), scrape(
        server.url
    )

    mariadb.stop()
    try:
        down = [requests.get(f"{server.url}/", timeout=5).status_code for _ in range(3)]
    finally:
        mariadb.start_server()
    assert down == [503, 503, 503]

    def served(samples: Samples) -> float:
        return sum(
            v for (name, _), v in samples.items() if name == "idleproof_http_503_responses_total"
        )

    assert settled(server.url, lambda s: served(s) >= 3)
    assert served(scrape(server.url)) == 3
    server.stop()
    assert not default_dir.exists()  # removed when the master exits


def test_single_process_without_a_multiprocess_directory(mariadb: LocalMariaDB) -> None:
    """Outside Gunicorn (no PROMETHEUS_MULTIPROC_DIR), /metrics shows this process's counts."""
    app = create_app(environ={"DATABASE_URL": mariadb.url, "DB_IDLE_TIMEOUT": "2"})
    client = app.test_client()
    assert client.get("/").status_code == 200
    body = client.get("/metrics").get_data(as_text=True)
    assert "idleproof_db_checkouts_total" in body
