"""Audit indexes for a reviewer's questions (by person, by time, by failure), the per-target key-value settings and
the one-writer-per-target leases.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("audit_key_at", "audit", ["key", "at"])
    op.create_index("audit_at", "audit", ["at"])
    op.create_index("audit_outcome_status_at", "audit", ["outcome", "http_status", "at"])
    op.create_table(
        "target_settings",
        sa.Column("namespace", sa.Text, primary_key=True),
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "writer_leases",
        sa.Column("target", sa.Text, primary_key=True),
        sa.Column("holder", sa.Text, nullable=False),
        sa.Column("token", sa.Text, nullable=False),
        sa.Column("acquired_at", sa.Float, nullable=False),
        sa.Column("renewed_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    op.execute("UPDATE meta SET value = '2' WHERE name = 'schema_version'")


def downgrade() -> None:
    op.drop_table("writer_leases")
    op.drop_table("target_settings")
    op.drop_index("audit_outcome_status_at", "audit")
    op.drop_index("audit_at", "audit")
    op.drop_index("audit_key_at", "audit")
    op.execute("UPDATE meta SET value = '1' WHERE name = 'schema_version'")
