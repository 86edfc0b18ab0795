"""The harness's throwaway MariaDB is configured like the mysql role (fast: no server)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.mariadb import (
    FROM_MYSQL_ROLE,
    MYSQL_ROLE_DEFAULTS,
    TEST_ONLY,
    LocalMariaDB,
    mysql_role_settings,
)


def written_config(tmp_path: Path, **options: object) -> dict[str, str | None]:
    LocalMariaDB(tmp_path, 3306).write_config(options)
    lines = (tmp_path / "my.cnf").read_text().splitlines()
    assert lines[0] == "[mariadbd]"
    pairs = [line.split(" = ", 1) for line in lines[1:]]
    return {p[0]: (p[1] if len(p) == 2 else None) for p in pairs}


def test_server_settings_come_from_the_mysql_role(tmp_path: Path) -> None:
    role = yaml.safe_load(MYSQL_ROLE_DEFAULTS.read_text())
    config = written_config(tmp_path)
    for name in FROM_MYSQL_ROLE:
        assert config[name] == str(role[f"mysql_{name}"]), name


def test_test_only_options_and_overrides_are_applied(tmp_path: Path) -> None:
    config = written_config(tmp_path, wait_timeout=2, interactive_timeout=2)
    assert config["wait_timeout"] == config["interactive_timeout"] == "2"
    for name, value in TEST_ONLY.items():
        assert config[name] == (None if value is None else str(value)), name


@pytest.mark.parametrize(
    ("value", "shown"),
    [("'{{ db_max_connections }}'", "'{{ db_max_connections }}'"), ("yes", "True"), ("", "None")],
)
def test_a_role_default_that_is_not_a_number_is_refused(
    tmp_path: Path, value: str, shown: str
) -> None:
    defaults = tmp_path / "main.yml"
    text = MYSQL_ROLE_DEFAULTS.read_text()
    defaults.write_text(
        "\n".join(
            f"mysql_max_connections: {value}" if line.startswith("mysql_max_connections:") else line
            for line in text.splitlines()
        )
    )
    with pytest.raises(RuntimeError, match=f"mysql_max_connections is {shown}; .*whole number"):
        mysql_role_settings(defaults)
