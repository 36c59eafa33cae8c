"""The state store's tables, defined once for SQLite and PostgreSQL (the Alembic head; ``scim_pipeline/migrations``).

Times are epoch seconds (``Float``: double precision on PostgreSQL), so the same numbers travel between the two
databases, Python and pandas without time-zone conversions.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

__all__ = [
    "audit",
    "managed_containers",
    "managed_groups",
    "managed_memberships",
    "managed_permissions",
    "managed_placements",
    "managed_users",
    "meta",
    "metadata",
    "target_settings",
    "upsert",
    "writer_leases",
]

metadata = sa.MetaData()

# A 64-bit integer everywhere, except that SQLite's auto-increment key must be spelled INTEGER to alias the rowid.
_ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

meta = sa.Table(
    "meta",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

managed_users = sa.Table(
    "managed_users",
    metadata,
    sa.Column("key_norm", sa.Text, primary_key=True),
    sa.Column("key", sa.Text, nullable=False),
    sa.Column("scim_id", sa.Text),
    sa.Column("shard", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("origin", sa.Text, nullable=False, server_default=sa.text("'created'")),
    sa.Column("attrs", sa.Text, nullable=False, server_default=sa.text("'{}'")),
    sa.Column("attrs_hash", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    sa.Column("active", sa.Integer),
    sa.Column("status", sa.Text, nullable=False, server_default=sa.text("'ok'")),
    sa.Column("last_error", sa.Text),
    sa.Column("fail_count", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("next_attempt_at", sa.Float),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Index("managed_users_scim_id", "scim_id"),
    sqlite_with_rowid=False,
)

managed_groups = sa.Table(
    "managed_groups",
    metadata,
    sa.Column("key_norm", sa.Text, primary_key=True),
    sa.Column("key", sa.Text, nullable=False),
    sa.Column("scim_id", sa.Text),
    sa.Column("origin", sa.Text, nullable=False, server_default=sa.text("'created'")),
    sa.Column("attrs", sa.Text, nullable=False, server_default=sa.text("'{}'")),
    sa.Column("attrs_hash", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    sa.Column("status", sa.Text, nullable=False, server_default=sa.text("'ok'")),
    sa.Column("last_error", sa.Text),
    sa.Column("fail_count", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("next_attempt_at", sa.Float),
    sa.Column("updated_at", sa.Float, nullable=False),
    sqlite_with_rowid=False,
)

managed_memberships = sa.Table(
    "managed_memberships",
    metadata,
    sa.Column("group_key_norm", sa.Text, primary_key=True),
    sa.Column("user_key_norm", sa.Text, primary_key=True),
    sqlite_with_rowid=False,
)

audit = sa.Table(
    "audit",
    metadata,
    sa.Column("id", _ROW_ID, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("run_id", sa.Text),
    sa.Column("partition", sa.Text),
    sa.Column("resource_type", sa.Text, nullable=False),
    sa.Column("operation", sa.Text, nullable=False),
    sa.Column("key", sa.Text),
    sa.Column("scim_id", sa.Text),
    sa.Column("http_status", sa.Integer),
    sa.Column("scim_type", sa.Text),
    sa.Column("latency_ms", sa.Float),
    sa.Column("attempts", sa.Integer),
    sa.Column("outcome", sa.Text, nullable=False),
    sa.Column("error", sa.Text),
    # The questions a reviewer asks (docs/audit.md): by run, by person, by time, by failure.
    sa.Index("audit_run", "run_id"),
    sa.Index("audit_key_at", "key", "at"),
    sa.Index("audit_at", "at"),
    sa.Index("audit_outcome_status_at", "outcome", "http_status", "at"),
    sqlite_autoincrement=True,
)

target_settings = sa.Table(
    "target_settings",
    metadata,
    sa.Column("namespace", sa.Text, primary_key=True),
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

writer_leases = sa.Table(
    "writer_leases",
    metadata,
    sa.Column("target", sa.Text, primary_key=True),
    sa.Column("holder", sa.Text, nullable=False),
    sa.Column("token", sa.Text, nullable=False),
    sa.Column("acquired_at", sa.Float, nullable=False),
    sa.Column("renewed_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    # Who holds it, as a process: its run, pid, host and start time (so a recycled pid is not taken for it).
    sa.Column("run_id", sa.Text),
    sa.Column("pid", sa.Integer),
    sa.Column("host", sa.Text),
    sa.Column("process_started", sa.Float),
)

# Delinea's PAM resources (scim_pipeline/sync/pam/). A container is known by its name (the only way Delinea finds
# one) and its SCIM id; a permission by its container, principal and the rights we gave; a placement by the
# privileged data's id and the container we attached it to. The escrow counters are the users' (fail_count,
# last_error, next_attempt_at); a row without its SCIM id (containers, permissions) or container (placements) only
# counts the failures of an object not on the target yet: we do not manage it.


def _escrow_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("last_error", sa.Text),
        sa.Column("fail_count", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("next_attempt_at", sa.Float),
    ]


managed_containers = sa.Table(
    "managed_containers",
    metadata,
    sa.Column("name_norm", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("scim_id", sa.Text),
    sa.Column("origin", sa.Text, nullable=False, server_default=sa.text("'created'")),
    sa.Column("updated_at", sa.Float, nullable=False),
    *_escrow_columns(),
    sqlite_with_rowid=False,
)

managed_permissions = sa.Table(
    "managed_permissions",
    metadata,
    sa.Column("container_id", sa.Text, primary_key=True),
    sa.Column("principal_type", sa.Text, primary_key=True),
    sa.Column("principal_key_norm", sa.Text, primary_key=True),
    sa.Column("principal_key", sa.Text, nullable=False),
    sa.Column("principal_id", sa.Text, nullable=False),
    sa.Column("rights", sa.Text, nullable=False),
    sa.Column("scim_id", sa.Text),
    sa.Column("updated_at", sa.Float, nullable=False),
    *_escrow_columns(),
    sqlite_with_rowid=False,
)

managed_placements = sa.Table(
    "managed_placements",
    metadata,
    sa.Column("data_id", sa.Text, primary_key=True),
    sa.Column("data_key", sa.Text, nullable=False),
    sa.Column("container_id", sa.Text),
    sa.Column("updated_at", sa.Float, nullable=False),
    *_escrow_columns(),
    sqlite_with_rowid=False,
)


def upsert(connection: sa.Connection | sa.Engine, table: sa.Table) -> Any:
    """An INSERT with the dialect's ``ON CONFLICT`` clauses (``on_conflict_do_update`` / ``_do_nothing``).

    Both dialects' statements have the same API; the type is the dialect's own ``Insert``.
    """
    if connection.dialect.name == "postgresql":
        return postgresql.insert(table)
    if connection.dialect.name == "sqlite":
        return sqlite.insert(table)
    raise ValueError(f"the state store supports SQLite and PostgreSQL, not {connection.dialect.name}")
