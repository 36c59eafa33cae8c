"""The state store's database: SQLite (a file, WAL, busy timeout) or PostgreSQL (psycopg), from ``SCIM_STATE_URL``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.pool import StaticPool

from scim_pipeline.scim.errors import ConfigurationError

URL_HELP = (
    "SCIM_STATE_URL must be sqlite:///<absolute path>, a file path, :memory:, or "
    "postgresql+psycopg://user@host:port/database (the password from PGPASSWORD or ~/.pgpass, or in the URL)"
)


def engine_for(url: str | Path) -> tuple[sa.Engine, str]:
    """The engine for a ``SCIM_STATE_URL`` value and the location to show (never a password)."""
    text = str(url).strip()
    if text in {":memory:", "sqlite://", "sqlite:///:memory:"}:
        # One connection shared by every thread (a heartbeat included), so they all see the same database.
        engine = sa.create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
        configure_sqlite(engine, wal=False)
        return engine, ":memory:"
    if text.startswith(("postgresql://", "postgresql+psycopg://", "postgres://")):
        try:
            parsed = sa.make_url(text)
        except sa.exc.ArgumentError as error:
            raise ConfigurationError(URL_HELP) from error
        parsed = parsed.set(drivername="postgresql+psycopg")
        engine = sa.create_engine(parsed, pool_pre_ping=True)
        return engine, parsed.render_as_string(hide_password=True)
    if text.startswith("sqlite://"):
        path_text = text.removeprefix("sqlite://")
        if not path_text.startswith("/"):
            raise ConfigurationError(URL_HELP)
    elif "://" in text or not text:
        raise ConfigurationError(f"{URL_HELP}; other databases are not supported")
    else:
        path_text = text
    path = Path(path_text).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(
        sa.URL.create("sqlite", database=str(path)), connect_args={"check_same_thread": False, "timeout": 30.0}
    )
    configure_sqlite(engine, wal=True)
    return engine, str(path)


def configure_sqlite(engine: sa.Engine, *, wal: bool) -> None:
    """SQLite as many processes share it (a `dagster dev` backfill runs one per shard): WAL so readers never block
    the writer, a busy timeout instead of "database is locked", and transactions that we begin ourselves — writes
    with ``BEGIN IMMEDIATE``, so two writers queue for the lock instead of failing on a read-to-write upgrade."""

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # the driver's own implicit BEGIN would defeat the one below
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout = 30000")
        if wal:
            cursor.execute("PRAGMA journal_mode = WAL")
        # WAL + NORMAL: a committed transaction survives a process crash (only an OS crash may lose the last ones).
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        write = connection.get_execution_options().get("state_write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
