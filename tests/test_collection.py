"""The collection idleproof.kit, built and installed the way a user gets it, converging a
playbook of the user's own, outside this repository, for a Flask-SQLAlchemy app of theirs.

``ansible-galaxy collection build`` packs ansible/ (with the idleproof wheel in the app
role's files/); ``ansible-galaxy collection install`` puts it into a directory of the
user's, beside the two community collections it depends on. The user's directory holds an
ansible.cfg, an inventory, a playbook that names the roles by their FQCN, and an app that
follows docs/library.md's three steps. Nothing of this checkout is on Ansible's paths.

The user's host runs Debian 13 (trixie: Python 3.13, MariaDB 11.8, nginx 1.26, systemd
257; a test host built like the others with TESTHOST_SUITE=trixie), where every other
converge of the tests runs Debian 12: this is the kit's test on Debian 13, a cold
converge of db, app and web (ending with ``idleproof doctor``) and the app in HTTPS after
idling past wait_timeout. The firewall, the multi-host layout and a re-run's idempotence
are tested on Debian 12 only.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from harness import ROOT, VENV_BIN
from harness.testhost import ANSIBLE_DIR, NspawnHost
from tests.helpers import report

pytestmark = [pytest.mark.slow, pytest.mark.ansible]

# The user's app, written as docs/library.md says (three steps), with a table of its own.
APP = """\
import os

from flask import Flask, jsonify
from flask_sqlalchemy import SQLAlchemy
from idleproof.flask import IdleProof

db = SQLAlchemy()


class Visit(db.Model):
    id = db.Column(db.Integer, primary_key=True)


def create_app():
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = os.environ["VISITS_DATABASE_URL"]
    idleproof = IdleProof(app, flask_sqlalchemy=db)
    db.init_app(app)
    app.register_blueprint(idleproof.readiness_blueprint())

    @app.post("/visits")
    def visit():
        db.session.add(Visit())
        db.session.commit()
        return jsonify(count=db.session.query(Visit).count()), 201

    @app.get("/visits")
    def visits():
        return jsonify(count=db.session.query(Visit).count())

    return app


app = create_app()
"""
MIGRATE = (
    "import os, sys; os.environ['VISITS_DATABASE_URL'] = sys.stdin.readline().strip(); "
    "from visits import app, db; app.app_context().push(); db.create_all()"
)
PLAYBOOK = """\
- name: Check the inventory before any host is touched.
  hosts: all
  gather_facts: false
  roles: [idleproof.kit.preflight]
- name: MariaDB.
  hosts: db
  roles: [idleproof.kit.mysql]
- name: The app.
  hosts: app
  roles: [idleproof.kit.app]
- name: nginx.
  hosts: web
  roles: [idleproof.kit.nginx]
"""
IDLE_TIMEOUT = 3


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    subprocess.run([sys.executable, ROOT / "scripts" / "install_collections.py"], check=True)
    if not list((ANSIBLE_DIR / "roles" / "app" / "files").glob("idleproof-*.whl")):
        pytest.fail("no idleproof wheel in the app role's files/: run `make wheel`")
    out = tmp_path_factory.mktemp("dist")
    galaxy = [str(VENV_BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(out)]
    subprocess.run([*galaxy, str(ANSIBLE_DIR)], check=True, capture_output=True)
    (tarball,) = out.glob("idleproof-kit-*.tar.gz")
    return tarball


def test_the_collection_carries_the_roles_plugins_and_wheel_not_the_checkouts_files(
    built: Path,
) -> None:
    with tarfile.open(built) as tar:
        names = tar.getnames()
    for needed in (
        "roles/app/tasks/main.yml",
        "roles/preflight/tasks/main.yml",
        "plugins/action/check_inventory.py",
        "plugins/plugin_utils/wiring.py",
        "plugins/filter/host_address.py",
        "playbooks/site.yml",
        "playbooks/restore.yml",
        "meta/runtime.yml",
    ):
        assert needed in names, needed
    assert any(n.startswith("roles/app/files/idleproof-") and n.endswith(".whl") for n in names)
    stray = [n for n in names if n.startswith((".collections", "inventories")) or "/.tls" in n]
    assert stray == []


@pytest.fixture(scope="module")
def user(built: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory of the user's own: the collection installed, an app, a playbook."""
    user = tmp_path_factory.mktemp("user")
    collections = user / "collections"
    galaxy = [str(VENV_BIN / "ansible-galaxy"), "collection", "install", "--no-deps"]
    subprocess.run([*galaxy, "-p", str(collections), str(built)], check=True, capture_output=True)
    community = ANSIBLE_DIR / ".collections" / "ansible_collections" / "community"
    shutil.copytree(community, collections / "ansible_collections" / "community")
    (user / "visits").mkdir()
    (user / "visits" / "visits.py").write_text(APP)
    (user / "visits" / "requirements.txt").write_text("flask>=3.0\nflask-sqlalchemy>=3.1\n")
    (user / "site.yml").write_text(PLAYBOOK)
    (user / "ansible.cfg").write_text(
        "[defaults]\ncollections_path = collections\ncollections_scan_sys_path = false\n"
        "interpreter_python = auto_silent\n[ssh_connection]\npipelining = true\n"
    )
    return user


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NspawnHost]:
    if os.geteuid() != 0:
        pytest.fail("this test boots a systemd-nspawn host: run it as root (sudo make test)")
    testhost = NspawnHost(name=f"ipk-user-{os.getpid()}", suite="trixie")
    try:
        testhost.up()
        yield testhost
    finally:
        testhost.down()


def inventory(user: Path, host: NspawnHost) -> Path:
    """The user's inventory: one host for all three groups, its database on loopback."""
    hosts = {
        "all": {
            "hosts": {
                "box": {
                    "ansible_host": "127.0.0.1",
                    "ansible_port": host.ssh_port,
                    "ansible_user": "root",
                    "ansible_ssh_private_key_file": str(host.key),
                    "ansible_ssh_common_args": "-o StrictHostKeyChecking=no "
                    "-o UserKnownHostsFile=/dev/null",
                }
            },
            "children": {g: {"hosts": {"box": None}} for g in ("db", "app", "web")},
            "vars": {
                "db_address": "127.0.0.1",
                "db_port": host.db_port,
                "db_name": "visits",
                "db_user": "visits",
                "db_password": "a-long-password-of-the-users",
                "db_migrate_password": "another-long-password-of-theirs",
                "db_idle_timeout": IDLE_TIMEOUT,
                "mysql_max_connections": 40,
                # The test host shares this machine's network: no firewall on it.
                "firewall_enabled": False,
                "nginx_listen": [f"127.0.0.1:{host.web_port}"],
                "nginx_tls_listen": [f"127.0.0.1:{host.tls_port}"],
                "app_name": "visits",
                "app_source_dir": str(user / "visits"),
                "app_requirements": str(user / "visits" / "requirements.txt"),
                "app_wsgi": "visits:app",
                "app_database_url_variables": ["VISITS_DATABASE_URL"],
                "app_migrate_command": ["python", "-c", MIGRATE],
                "app_migrate_changed": "",
                "app_gunicorn_workers": 2,
            },
        }
    }
    path = user / "hosts.json"
    path.write_text(json.dumps(hosts))
    return path


def test_a_playbook_of_the_users_own_deploys_their_app_with_the_collection(
    user: Path, host: NspawnHost, request: pytest.FixtureRequest
) -> None:
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_CONFIG": str(user / "ansible.cfg")}
    started = time.monotonic()
    run = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory(user, host)), "site.yml"],
        cwd=user,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    # The roles came from the installed collection, not from this checkout.
    assert str(ROOT) not in run.stdout.replace(str(user), ""), "a path of the checkout was used"
    # HTTPS by default, with a certificate for 127.0.0.1 from the CA the kit made beside
    # the user's inventory; plain HTTP redirects there.
    url, ca = host.url, str(user / ".tls" / "ca.crt")
    plain = requests.get(
        f"http://127.0.0.1:{host.web_port}/readyz", timeout=10, allow_redirects=False
    )
    assert (plain.status_code, plain.headers.get("Location")) == (308, f"{url}/readyz")
    assert requests.get(f"{url}/readyz", timeout=10, verify=ca).json() == {"status": "ready"}
    counts = [requests.post(f"{url}/visits", timeout=10, verify=ca).status_code for _ in range(4)]
    time.sleep(IDLE_TIMEOUT + 2)  # every pooled connection closed by the server meanwhile
    after = [requests.get(f"{url}/visits", timeout=10, verify=ca) for _ in range(8)]
    report(
        request,
        "collection",
        f"a user's playbook with the built collection, on Debian 13: converged in "
        f"{time.monotonic() - started:.0f} s; {len(after)} requests after {IDLE_TIMEOUT + 2} s "
        f"idle past wait_timeout={IDLE_TIMEOUT}: {sorted({r.status_code for r in after})}",
    )
    assert counts == [201] * 4
    assert [r.status_code for r in after] == [200] * 8 and after[-1].json() == {"count": 4}
    assert 'VERSION_ID="13"' in host.run("cat", "/etc/os-release").stdout
