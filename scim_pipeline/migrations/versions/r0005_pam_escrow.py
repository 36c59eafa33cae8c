"""Escrow for Delinea's PAM resources, as for users and groups: a container, a permission slot or a placement that
keeps failing is counted (``fail_count``, ``last_error``) and held back until ``next_attempt_at``.

A failure can come before the object exists on the target (a create or an add that never landed), so the SCIM id of
a container or permission, and the container of a placement, become optional: a row without one only counts
failures, and is not something we manage.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_TABLES = {
    "managed_containers": "scim_id",
    "managed_permissions": "scim_id",
    "managed_placements": "container_id",
}


def upgrade() -> None:
    for table, identity in _TABLES.items():
        # SQLite cannot relax NOT NULL in place: the batch copies the table (keeping it WITHOUT ROWID).
        with op.batch_alter_table(table, table_kwargs={"sqlite_with_rowid": False}) as batch:
            batch.alter_column(identity, existing_type=sa.Text, nullable=True)
            batch.add_column(sa.Column("last_error", sa.Text))
            batch.add_column(sa.Column("fail_count", sa.Integer, nullable=False, server_default=sa.text("0")))
            batch.add_column(sa.Column("next_attempt_at", sa.Float))


def downgrade() -> None:
    for table, identity in _TABLES.items():
        op.execute(sa.text(f"DELETE FROM {table} WHERE {identity} IS NULL"))
        with op.batch_alter_table(table, table_kwargs={"sqlite_with_rowid": False}) as batch:
            batch.drop_column("next_attempt_at")
            batch.drop_column("fail_count")
            batch.drop_column("last_error")
            batch.alter_column(identity, existing_type=sa.Text, nullable=False)
