"""The audit trail: one row per executed (or deliberately skipped) call; never an attribute value beyond the matching
key. docs/audit.md lists the questions a reviewer asks of it."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import sqlalchemy as sa

from scim_pipeline.sync.state.schema import audit as audit_table

AUDIT_COLUMNS = (
    "id",
    "at",
    "run_id",
    "partition",
    "resource_type",
    "operation",
    "key",
    "scim_id",
    "http_status",
    "scim_type",
    "latency_ms",
    "attempts",
    "outcome",
    "error",
)


@dataclass(frozen=True)
class AuditRecord:
    """One executed (or deliberately skipped) call. ``key`` is the matching key; never any other value."""

    resource_type: str
    operation: str
    key: str | None
    outcome: Literal["ok", "failed", "adopted", "already_done", "skipped", "held"]
    scim_id: str | None = None
    http_status: int | None = None
    scim_type: str | None = None
    latency_ms: float | None = None
    attempts: int | None = None
    error: str | None = None
    run_id: str | None = None
    partition: str | None = None
    at: float = field(default_factory=time.time)


def insert_audit(conn: sa.Connection, records: Sequence[AuditRecord]) -> None:
    """Append audit rows (in the caller's transaction)."""
    conn.execute(
        sa.insert(audit_table),
        [
            {
                "at": r.at,
                "run_id": r.run_id,
                "partition": r.partition,
                "resource_type": r.resource_type,
                "operation": r.operation,
                "key": r.key,
                "scim_id": r.scim_id,
                "http_status": r.http_status,
                "scim_type": r.scim_type,
                "latency_ms": r.latency_ms,
                "attempts": r.attempts,
                "outcome": r.outcome,
                "error": r.error,
            }
            for r in records
        ],
    )
