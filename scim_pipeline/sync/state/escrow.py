"""Escrow: identities that keep failing are held back, waiting longer after each failure (as Entra's escrow does)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from scim_pipeline.sync.state.batch import FailedCall
from scim_pipeline.sync.state.schema import (
    upsert,
)


@dataclass(frozen=True)
class EscrowPolicy:
    """When an identity that keeps failing is held back: after ``after_failures`` failures in a row it waits
    ``base_delay_s`` (about one cycle), doubling with every further failure up to ``max_delay_s``."""

    after_failures: int = 3
    base_delay_s: float = 3600.0
    max_delay_s: float = 86400.0


@dataclass(frozen=True)
class HeldIdentity:
    """An identity in escrow: it failed repeatedly and waits until ``next_attempt_at``."""

    resource_type: str
    key_norm: str
    key: str
    fail_count: int
    next_attempt_at: float
    last_error: str | None


def escrow_delay(policy: EscrowPolicy, fail_count: int) -> float | None:
    """Seconds an identity with ``fail_count`` failures in a row waits: none below the threshold, then doubling."""
    if fail_count < policy.after_failures:
        return None
    exponent = max(0, min(fail_count - policy.after_failures, 30))
    return float(min(policy.max_delay_s, policy.base_delay_s * (1 << exponent)))


def record_failures(
    conn: sa.Connection, table: sa.Table, failures: Sequence[FailedCall], policy: EscrowPolicy, now: float
) -> None:
    """Count failures per identity (escrow) — read the counters under the write lock, compute the delay, write back."""
    is_users = "shard" in table.c
    keys = sorted({f.key_norm for f in failures})
    known: dict[str, tuple[int, str | None, str]] = {}
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        rows = conn.execute(
            sa.select(table.c.key_norm, table.c.fail_count, table.c.scim_id, table.c.status)
            .where(table.c.key_norm.in_(chunk))
            .with_for_update()
        ).tuples()
        known.update({str(kn): (int(fc), sid, str(st)) for kn, fc, sid, st in rows})
    updated: dict[str, dict[str, Any]] = {}
    for failure in failures:
        fail_count, scim_id, status = known.get(failure.key_norm, (0, None, "failed"))
        fail_count += 1
        status = "failed" if scim_id is None else status
        known[failure.key_norm] = (fail_count, scim_id, status)
        delay = escrow_delay(policy, fail_count)
        row: dict[str, Any] = {
            "key_norm": failure.key_norm,
            "key": failure.key,
            "status": status,
            "last_error": failure.error,
            "fail_count": fail_count,
            "next_attempt_at": None if delay is None else now + delay,
            "updated_at": now,
        }
        if is_users:
            row["shard"] = failure.shard or 0
        updated[failure.key_norm] = row
    statement = upsert(conn, table)
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=[table.c.key_norm],
            set_={
                name: statement.excluded[name]
                for name in ("status", "last_error", "fail_count", "next_attempt_at", "updated_at")
            },
        ),
        list(updated.values()),
    )
