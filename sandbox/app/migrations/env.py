"""Alembic environment: the URL comes from dealix.config (DATABASE_URL)."""

from __future__ import annotations

import sys
from logging.config import fileConfig
from pathlib import Path

from alembic import context
from sqlalchemy import create_engine, pool

config = context.config
APP_DIR = Path(config.config_file_name).resolve().parent if config.config_file_name else Path.cwd()

# `alembic -c /opt/dealix/alembic.ini` from another directory must still find
# the dealix package and its .env.
if str(APP_DIR) not in sys.path:
    sys.path.insert(0, str(APP_DIR))

from dealix.config import load_settings  # noqa: E402

if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = None


def sqlalchemy_url() -> str:
    url = load_settings(APP_DIR / ".env").database_url
    if not url:
        raise SystemExit("DATABASE_URL is not set (.env or environment)")
    # The app uses psycopg 3; SQLAlchemy would pick psycopg2 for a bare
    # postgresql:// URL, and psycopg2 is not installed.
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def run_migrations_offline() -> None:
    context.configure(
        url=sqlalchemy_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(sqlalchemy_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
