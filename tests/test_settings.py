"""Settings: every bad value is refused with one line that names it and says what to do."""

from __future__ import annotations

import pytest

from idleproof.rules import default_recycle
from idleproof.settings import Settings, SettingsError

URL = "mysql+pymysql://app:secret@127.0.0.1:3306/app"


def settings(**env: str) -> Settings:
    return Settings.from_env({"DATABASE_URL": URL, **env})


def refused(**env: str) -> str:
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_defaults_follow_mysql_and_keep_recycle_below_idle() -> None:
    s = settings()
    assert s.idle_timeout == 28800
    assert s.pool_recycle == 25920 < s.idle_timeout
    assert s.read_timeout > s.ping_timeout


def test_recycle_is_derived_from_the_idle_timeout() -> None:
    assert settings(DB_IDLE_TIMEOUT="300").pool_recycle == 270
    assert settings(DB_IDLE_TIMEOUT="2").pool_recycle == pytest.approx(1.8)
    for idle in (1, 2, 5, 30, 300, 350, 600, 1200, 1800, 28800):
        assert 0 < default_recycle(idle) < idle


def test_explicit_recycle_below_idle_is_kept() -> None:
    assert settings(DB_IDLE_TIMEOUT="300", DB_POOL_RECYCLE="280").pool_recycle == 280


@pytest.mark.parametrize("recycle", ["300", "301", "3600"])
def test_recycle_at_or_above_idle_is_refused_naming_both(recycle: str) -> None:
    message = refused(DATABASE_URL=URL, DB_IDLE_TIMEOUT="300", DB_POOL_RECYCLE=recycle)
    assert f"DB_POOL_RECYCLE={recycle}" in message
    assert "DB_IDLE_TIMEOUT=300" in message


def test_missing_url() -> None:
    assert "DATABASE_URL is not set" in refused()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:p@h/db", "scheme 'postgresql' is not supported"),
        ("mysql://u:p@h/db", "scheme 'mysql' is not supported"),
        ("mysql+mysqldb://u:p@h/db", "scheme 'mysql+mysqldb' is not supported"),
        ("127.0.0.1:3306/app", "is not supported"),
        ("mysql+pymysql:///app", "has no host"),
        ("mysql+pymysql://u:p@h:99999/app", "invalid port"),
        ("mysql+pymysql://u:p@h:3306", "names no database"),
        ("mysql+pymysql://u:p@[::1:3306/app", "cannot be read (Invalid IPv6 URL)"),
    ],
)
def test_bad_urls(url: str, expected: str) -> None:
    message = refused(DATABASE_URL=url)
    assert expected in message
    assert "mysql+pymysql://" in message  # says what a good one looks like


@pytest.mark.parametrize("password", ["s3cr/et", "s3cr#et", "s3cr?et"])
def test_a_password_cut_short_is_never_echoed(password: str) -> None:
    """A / # or ? in an unencoded password ends the URL's host part inside the password:
    the error must say to encode it, without showing any of it."""
    message = refused(DATABASE_URL=f"mysql+pymysql://app:{password}@db:3306/app")
    assert "percent-encoded" in message and "%2F" in message
    assert "s3cr" not in message and "et@db" not in message


@pytest.mark.parametrize(
    "name",
    [
        "DB_IDLE_TIMEOUT",
        "DB_POOL_RECYCLE",
        "DB_POOL_TIMEOUT",
        "DB_CONNECT_TIMEOUT",
        "DB_READ_TIMEOUT",
        "DB_PING_TIMEOUT",
        "DB_PING_AFTER_IDLE",
    ],
)
def test_non_numeric_seconds(name: str) -> None:
    message = refused(DATABASE_URL=URL, **{name: "8h"})
    assert message == f"{name}='8h' is not a number of seconds: set it to a number of seconds"


@pytest.mark.parametrize("name", ["DB_POOL_SIZE", "DB_MAX_OVERFLOW"])
def test_non_integer_counts(name: str) -> None:
    assert "is not a whole number" in refused(DATABASE_URL=URL, **{name: "2.5"})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DB_IDLE_TIMEOUT", "-5"),
        ("DB_IDLE_TIMEOUT", "0"),
        ("DB_POOL_SIZE", "0"),
        ("DB_MAX_OVERFLOW", "-1"),
        ("DB_CONNECT_TIMEOUT", "-1"),
        ("DB_PING_AFTER_IDLE", "-1"),
    ],
)
def test_negative_values(name: str, value: str) -> None:
    message = refused(DATABASE_URL=URL, **{name: value})
    assert message.startswith(f"{name}={value} is too small")


@pytest.mark.parametrize(
    ("name", "value"),
    [("DB_IDLE_TIMEOUT", "nan"), ("DB_IDLE_TIMEOUT", "inf"), ("DB_READ_TIMEOUT", "inf")],
)
def test_non_finite_values(name: str, value: str) -> None:
    message = refused(DATABASE_URL=URL, **{name: value})
    assert message == f"{name}={value} is not a finite number: set it to a number of seconds"


def test_query_timeouts_are_capped() -> None:
    message = refused(DATABASE_URL=URL, DB_READ_TIMEOUT="900")
    assert message.startswith("DB_READ_TIMEOUT=900 is too large: set it to at most 300 (")


def test_net_timeout_must_be_below_the_read_timeout() -> None:
    message = refused(DATABASE_URL=URL, DB_NET_TIMEOUT="10", DB_READ_TIMEOUT="10")
    assert message == (
        "DB_NET_TIMEOUT=10 must be below DB_READ_TIMEOUT=10: "
        "lower DB_NET_TIMEOUT or raise DB_READ_TIMEOUT"
    )


def test_ping_timeout_above_read_timeout_is_refused() -> None:
    message = refused(DATABASE_URL=URL, DB_PING_TIMEOUT="10", DB_READ_TIMEOUT="5")
    assert "DB_PING_TIMEOUT=10 must not exceed DB_READ_TIMEOUT=5" in message


def test_password_never_in_the_printable_url() -> None:
    assert "secret" not in settings().url_without_password


def test_a_network_idle_limit_below_the_servers_sets_the_recycle() -> None:
    s = settings(DB_IDLE_TIMEOUT="3600", DB_NETWORK_IDLE_TIMEOUT="350")
    assert s.pool_recycle == 315 and s.idle_timeout == 3600


def test_a_recycle_at_or_above_the_network_idle_limit_is_refused() -> None:
    message = refused(
        DATABASE_URL=URL,
        DB_IDLE_TIMEOUT="3600",
        DB_NETWORK_IDLE_TIMEOUT="350",
        DB_POOL_RECYCLE="400",
    )
    assert message == (
        "DB_POOL_RECYCLE=400 must be below DB_NETWORK_IDLE_TIMEOUT=350: "
        "lower DB_POOL_RECYCLE or unset it to use 315"
    )
