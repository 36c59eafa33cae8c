"""The audit trail: one row per executed (or deliberately skipped) call; never an attribute value beyond the matching
key. docs/audit.md lists the questions a reviewer asks of it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

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
