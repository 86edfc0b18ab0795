"""One source for every setting: what restates the table in idleproof/settings.py must agree
with it.

The README's settings table, the app role's defaults, its EnvironmentFile and its argument
specs (what Ansible validates and the preflight checks), the mysql role's idle timeouts,
and the canonical files (gunicorn.conf.py, the systemd unit, nginx's include) either come
from the table and the rules or are checked here against them.
"""

from __future__ import annotations

import os
import re
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from idleproof import rules
from idleproof.ops import facts
from idleproof.rules import Value
from idleproof.settings import SETTINGS, Settings, markdown_table

ROOT = Path(__file__).resolve().parent.parent
ROLES = ROOT / "ansible" / "roles"
ROWS = [s for s in SETTINGS if s.kind != "url"]
# What each kind of setting is in the app role's argument specs.
SPEC_TYPES = {"count": "int", "seconds": "float", "path": "str"}
ROLE_NAMES = sorted(p.name for p in ROLES.iterdir() if (p / "defaults" / "main.yml").exists())


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def rendered(role: str, name: str, **inventory: Any) -> Any:
    """A role default as Ansible templates it: the shared role's defaults, then the role's,
    then what an inventory sets."""
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar

    variables = {
        **load(ROLES / "shared" / "defaults" / "main.yml"),
        **load(ROLES / role / "defaults" / "main.yml"),
        **inventory,
    }
    return Templar(DataLoader(), variables=variables).template(variables[name])


def test_the_settings_table_is_generated_from_the_table() -> None:
    page = (ROOT / "docs" / "settings.md").read_text()
    found = re.search(r"<!-- settings:start[^\n]*-->\n(.*?)<!-- settings:end -->", page, re.S)
    assert found, "docs/settings.md lost its settings markers"
    assert found.group(1) == markdown_table(), (
        "docs/settings.md's settings table is stale: replace it with the output of "
        "`idleproof settings --markdown`"
    )


def test_ansible_readme_variables_table_is_generated_from_the_roles() -> None:
    """Every option of every role, with its default and checks, as the roles state them."""
    readme = (ROOT / "ansible" / "README.md").read_text()
    found = re.search(r"<!-- variables:start[^\n]*-->\n(.*?)<!-- variables:end -->", readme, re.S)
    assert found, "ansible/README.md lost its variables markers"
    table = runpy.run_path(str(ROOT / "scripts" / "ansible_variables.py"))["table"]()
    assert found.group(1) == table, (
        "ansible/README.md's variables table is stale: replace it with the output of "
        "`.venv/bin/python scripts/ansible_variables.py`"
    )
    for role in ROLE_NAMES:
        specs = load(ROLES / role / "meta" / "argument_specs.yml")["argument_specs"]["main"]
        for name in specs["options"]:
            assert f"| `{name}` |" in table, f"{name} ({role}) is missing from the table"


@pytest.mark.parametrize("setting", ROWS, ids=[s.env for s in ROWS])
def test_app_role_default_agrees_with_the_table(setting: Any) -> None:
    """As Ansible renders it, for a host with the database on loopback (no TLS, no network
    idle limit): a setting that follows a shared variable follows its default."""
    defaults = load(ROLES / "app" / "defaults" / "main.yml")
    assert setting.role_var in defaults, f"{setting.role_var} is missing from the app role"
    role_default = rendered("app", setting.role_var, db_address="127.0.0.1")
    if setting.default is None:
        assert role_default == "", f"{setting.role_var}: empty means the app derives it"
    else:
        assert float(role_default) == setting.default, (
            f"{setting.role_var}: {role_default} in the app role, {setting.default} in "
            "idleproof/settings.py: change the role's default (or the shared one it follows)"
        )


def test_app_role_follows_the_shared_idle_limits_and_tls() -> None:
    assert float(rendered("app", "app_db_idle_timeout", db_idle_timeout=3600)) == 3600
    network = rendered(
        "app", "app_db_network_idle_timeout", db_idle_timeout=3600, network_idle_timeout=350
    )
    assert float(network) == 350
    assert rendered("app", "app_db_network_idle_timeout") == ""
    assert rendered("app", "app_db_tls_ca", db_address="10.0.0.10") == "/etc/idle-proof/db-ca.pem"


def test_app_role_environment_file_sets_each_setting_from_its_variable() -> None:
    role_vars = load(ROLES / "app" / "vars" / "main.yml")
    environment = role_vars["app_environment_base"]
    for setting in ROWS:
        if setting.key == "pool_recycle":  # written only when set: app_environment_recycle
            assert setting.role_var in role_vars["app_environment_recycle"]
            continue
        assert environment.get(setting.env) == f"{{{{ {setting.role_var} }}}}", setting.env


def test_app_role_argument_specs_declare_every_setting() -> None:
    """The argument specs are what Ansible validates and what the preflight sends to
    the preflight (every option): each setting, typed as the table's kind."""
    spec = load(ROLES / "app" / "meta" / "argument_specs.yml")["argument_specs"]["main"]
    for setting in ROWS:
        assert setting.role_var in spec["options"], f"{setting.role_var} is not in the specs"
        # Optional settings (empty: derived, or none) take "" besides their kind.
        optional = setting.default is None and SPEC_TYPES[setting.kind] != "str"
        expected = "raw" if optional else SPEC_TYPES[setting.kind]
        assert spec["options"][setting.role_var]["type"] == expected, setting.role_var


@pytest.mark.parametrize("role", ROLE_NAMES)
def test_every_role_declares_exactly_its_defaults(role: str) -> None:
    """Each documented variable (a default) has an argument spec, so a misspelt one is
    refused by name and a mistyped one with its type, and each spec is documented."""
    defaults = set(load(ROLES / role / "defaults" / "main.yml"))
    spec = load(ROLES / role / "meta" / "argument_specs.yml")["argument_specs"]["main"]
    assert set(spec["options"]) == defaults
    secret = {name for name, option in spec["options"].items() if option.get("no_log")}
    # Passwords, and what holds the app's own secrets (its settings, its config files).
    holders = {"app_extra_environment", "app_config_files"}
    expected = {name for name in defaults if "password" in name or name in holders}
    assert secret == expected, "passwords and the app's secrets are no_log"


def test_server_idle_defaults_are_mysqls_and_the_apps() -> None:
    idle = next(s for s in SETTINGS if s.key == "idle_timeout")
    assert load(ROLES / "shared" / "defaults" / "main.yml")["db_idle_timeout"] == idle.default
    for name in ("mysql_wait_timeout", "mysql_interactive_timeout"):
        assert float(rendered("mysql", name)) == idle.default
        assert float(rendered("mysql", name, db_idle_timeout=60)) == 60


def gunicorn_defaults() -> dict[str, Any]:
    """gunicorn.conf.py's values with no GUNICORN_* variable set (the environment, which the
    file also writes to, is restored afterwards)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GUNICORN_")}
    with facts.environment(clean):
        return runpy.run_path(str(ROOT / "gunicorn.conf.py"))


def test_app_role_gunicorn_timeouts_are_gunicorn_confs() -> None:
    defaults = load(ROLES / "app" / "defaults" / "main.yml")
    conf = gunicorn_defaults()
    assert defaults["app_gunicorn_timeout"] == conf["timeout"]
    assert defaults["app_gunicorn_graceful_timeout"] == conf["graceful_timeout"]


def test_canonical_files_obey_the_rules_with_the_defaults() -> None:
    conf = gunicorn_defaults()
    timeout = Value("GUNICORN_TIMEOUT", conf["timeout"])
    graceful = Value("GUNICORN_GRACEFUL_TIMEOUT", conf["graceful_timeout"])
    waits = Settings.from_env({"DATABASE_URL": "mysql+pymysql://u@h/d"}).waits()
    nginx_include = ROOT / "nginx" / "idle-proof" / "server.conf"
    proxy_read = facts.read_proxy_read_timeout(nginx_include)
    stop = facts.read_timeout_stop_sec(facts.read_unit(ROOT / "systemd" / "idle-proof.service"))
    assert proxy_read is not None and stop is not None
    nginx_role = load(ROLES / "nginx" / "defaults" / "main.yml")
    for problem in (
        rules.gunicorn_outlasts_database(timeout, waits),
        rules.proxy_outlasts_gunicorn(Value("proxy_read_timeout", proxy_read), timeout, graceful),
        rules.proxy_outlasts_gunicorn(
            Value("nginx_proxy_read_timeout", nginx_role["nginx_proxy_read_timeout"]),
            timeout,
            graceful,
        ),
        rules.stop_outlasts_graceful(Value("TimeoutStopSec", stop), graceful),
    ):
        assert problem is None, str(problem)


def test_canonical_files_are_the_role_templates_rendered() -> None:
    """systemd/ and nginx/ hold the roles' templates rendered for one host: a change to a
    template that is not rendered again (scripts/render_canonical.py) fails here."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "render_canonical.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hsts_is_sent_only_when_the_inventory_asks_for_it() -> None:
    """Strict-Transport-Security binds browsers for max-age: never sent by default."""
    render = runpy.run_path(str(ROOT / "scripts" / "render_canonical.py"))
    source = ROLES / "nginx" / "templates" / "etc" / "nginx" / "idle-proof" / "server.conf.j2"
    template = render["environment"]().from_string(source.read_text())
    values = render["VALUES"] | {"ansible_managed": "test"}
    assert "Strict-Transport-Security" not in template.render(**values)
    asked = template.render(**values | {"nginx_hsts_max_age": 31536000})
    assert 'add_header Strict-Transport-Security "max-age=31536000" always;' in asked
    plain = template.render(**values | {"nginx_tls": False, "nginx_hsts_max_age": 31536000})
    assert "Strict-Transport-Security" not in plain and "ssl" not in plain
