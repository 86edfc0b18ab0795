"""The incident, reproduced for real: the naive setup fails, the kit does not.

Each scenario runs twice, side by side, against the same MariaDB (wait_timeout=2) under
real Gunicorn (2 workers, preload_app): once with the incident's naive configuration,
which must fail (so the test can fail), once with the kit, which must answer every request
2xx within 2 s once the database is reachable, and 503 within 2 s while it is down.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.faults import StallProxy
from harness.gunicorn import GunicornServer, migrate
from harness.mariadb import LocalMariaDB, start_mariadb
from harness.scenarios import SCENARIOS, FaultContext, Tally, run_scenario
from tests.helpers import WAIT_TIMEOUT, AppFactory

pytestmark = pytest.mark.slow

# "once the database answers again, no request takes longer than 2 s"
SLOWEST_ALLOWED = 2.0


def context(
    scenario: str, variant: str, start_app: AppFactory, mariadb: LocalMariaDB, proxy: StallProxy
) -> FaultContext:
    port = proxy.port if scenario == "stall" else None
    server = start_app(variant, port=port)
    return FaultContext(mariadb, server.url, WAIT_TIMEOUT, proxy if port else None)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_kit_survives(
    scenario: str, start_app: AppFactory, mariadb: LocalMariaDB, stall_proxy: StallProxy
) -> None:
    result = run_scenario(scenario, context(scenario, "kit", start_app, mariadb, stall_proxy))
    assert result.after.statuses and result.after.failures == 0, result.after.statuses
    assert result.after.slowest < SLOWEST_ALLOWED, result.after.durations
    if scenario == "down":
        assert result.during.statuses == [503] * len(result.during.statuses)
        assert result.during.slowest < SLOWEST_ALLOWED, result.during.durations


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_naive_configuration_fails(
    scenario: str, start_app: AppFactory, mariadb: LocalMariaDB, stall_proxy: StallProxy
) -> None:
    ctx = context(scenario, "naive", start_app, mariadb, stall_proxy)
    result = run_scenario(scenario, ctx, give_up_after=1)
    assert result.after.failures > 0, f"the naive setup survived {scenario}: {result.after}"


@pytest.fixture(scope="module")
def mariadb_3s(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMariaDB]:
    db = start_mariadb(
        tmp_path_factory.mktemp("mariadb3"),
        options={"wait_timeout": 3, "interactive_timeout": 3},
    )
    try:
        migrate(db.url)
        yield db
    finally:
        db.stop()


def test_repeated_cycles_against_wait_timeout_3(mariadb_3s: LocalMariaDB, tmp_path: Path) -> None:
    """The issue's acceptance run: one Gunicorn, every fault twice, 0 non-2xx, none > 2 s."""
    proxy = StallProxy(mariadb_3s.port)  # every connection goes through it, so all faults apply
    url = mariadb_3s.url.replace(f":{mariadb_3s.port}/", f":{proxy.port}/")
    server = GunicornServer({"DATABASE_URL": url, "DB_IDLE_TIMEOUT": "3"}, tmp_path / "g.log")
    total = Tally()
    try:
        server.start()
        ctx = FaultContext(mariadb_3s, server.url, 3, proxy)
        for _ in range(2):
            for scenario in SCENARIOS:
                result = run_scenario(scenario, ctx)
                assert result.after.failures == 0, (scenario, result.after.statuses)
                total.add(result.after)
    finally:
        server.stop()
        proxy.close()
    assert total.slowest < SLOWEST_ALLOWED, total.durations
