"""The state store as it was before Alembic (``meta.schema_version`` = 1): a file created then is stamped with this
revision and upgraded in place.

Revision ID: 0001
Revises:
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    meta = op.create_table(
        "meta",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.bulk_insert(meta, [{"name": "schema_version", "value": "1"}])
    op.create_table(
        "managed_users",
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
        sqlite_with_rowid=False,
    )
    op.create_index("managed_users_scim_id", "managed_users", ["scim_id"])
    op.create_table(
        "managed_groups",
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
    op.create_table(
        "managed_memberships",
        sa.Column("group_key_norm", sa.Text, primary_key=True),
        sa.Column("user_key_norm", sa.Text, primary_key=True),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "audit",
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
        sqlite_autoincrement=True,
    )
    op.create_index("audit_run", "audit", ["run_id"])


def downgrade() -> None:
    for table in ("audit", "managed_memberships", "managed_groups", "managed_users", "meta"):
        op.drop_table(table)
