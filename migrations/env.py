"""Alembic environment: the same DATABASE_URL and settings checks as the app."""

from __future__ import annotations

import sys
from logging.config import fileConfig

import sqlalchemy
from alembic import context

from app.models import Base
from app.settings import Settings, SettingsError

if context.config.config_file_name is not None:
    fileConfig(context.config.config_file_name)

try:
    settings = Settings.from_env()
except SettingsError as exc:
    sys.exit(f"configuration error: {exc}")

engine = sqlalchemy.create_engine(
    settings.database_url,
    poolclass=sqlalchemy.NullPool,
    connect_args={"connect_timeout": settings.connect_timeout},
)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata)
    with context.begin_transaction():
        context.run_migrations()
