"""Alembic environment: the same DATABASE_URL, settings checks and TLS as the app.

`alembic -x database-url=stdin upgrade head` reads DATABASE_URL from stdin instead of the
environment: the Ansible role runs migrations as a user of their own whose password never
goes on a command line, into the environment or into a file on the host.
"""

from __future__ import annotations

import os
import sys
from logging.config import fileConfig

import sqlalchemy
from alembic import context

from app.models import Base
from idleproof.connection import tls_args
from idleproof.plugin import MIGRATION
from idleproof.settings import Settings, SettingsError

if context.config.config_file_name is not None:
    fileConfig(context.config.config_file_name)

env = dict(os.environ)
if context.get_x_argument(as_dictionary=True).get("database-url") == "stdin":
    env["DATABASE_URL"] = sys.stdin.readline().strip()
try:
    settings = Settings.from_env(env)
except SettingsError as exc:
    sys.exit(f"configuration error: {exc}")

# The migration plugin: keepalives keep a firewall's flow alive between statements and
# find a dead host; no statement is cut short. Added unless the URL names it already.
url = sqlalchemy.make_url(settings.database_url)
named = sqlalchemy.util.to_list(url.query.get("plugin", ()))
engine = sqlalchemy.create_engine(
    url,
    poolclass=sqlalchemy.NullPool,
    connect_args={"connect_timeout": settings.connect_timeout, **tls_args(settings.tls_ca)},
    plugins=[] if MIGRATION in named else [MIGRATION],
)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata)
    with context.begin_transaction():
        context.run_migrations()
