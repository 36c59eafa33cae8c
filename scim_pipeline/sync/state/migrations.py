"""The state store's schema migrations (Alembic, ``scim_pipeline/migrations``), applied once by whoever opens it."""

from __future__ import annotations

import functools

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from scim_pipeline.scim.errors import ConfigurationError

_MIGRATION_LOCK_KEY = 0x5C1A_57A7E
"""The PostgreSQL advisory lock that serializes the state store's migrations (any constant every opener shares)."""
_MIGRATIONS = "scim_pipeline:migrations"


@functools.cache
def _script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(_alembic_config())


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", _MIGRATIONS)
    return config


def migrate(engine: sa.Engine, location: str) -> None:
    """Bring the store to the head revision, once, whoever opens it at the same time.

    The whole check-and-upgrade runs in one write transaction holding the database's lock (SQLite's write lock via
    ``BEGIN IMMEDIATE``; a transaction-scoped advisory lock on PostgreSQL, whose DDL is transactional), so a second
    opener waits, then finds the head revision and does nothing: never two ``alembic_version`` rows. A store made
    before the migrations existed (a ``meta`` table, no ``alembic_version``) is stamped with revision 0001 first.
    """
    head = _script_directory().get_current_head()
    with engine.connect() as conn:
        if MigrationContext.configure(conn).get_current_heads() == (head,):
            return
    with engine.connect().execution_options(state_write=True) as conn, conn.begin():
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
        tables = set(sa.inspect(conn).get_table_names())
        config = _alembic_config()
        config.attributes["connection"] = conn
        if "meta" in tables and "alembic_version" not in tables:
            command.stamp(config, "0001")
        command.upgrade(config, "head")
        heads = MigrationContext.configure(conn).get_current_heads()
    if heads != (head,):
        raise ConfigurationError(
            f"the state store {location} is at revision(s) {', '.join(heads) or 'none'}, not {head}: "
            "it was written by another version of scim-pipeline"
        )
