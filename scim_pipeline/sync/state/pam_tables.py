"""The PAM part of a :class:`~scim_pipeline.sync.state.batch.StateBatch`: containers, permissions and placements we
manage, written in the batch's transaction, with the users' escrow (a failure counted, a success clearing it)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from scim_pipeline.sync.state.batch import ContainerRecord, PermissionRecord, PlacementRecord, StateBatch
from scim_pipeline.sync.state.escrow import EscrowPolicy, HeldIdentity, escrow_delay
from scim_pipeline.sync.state.schema import managed_containers, managed_permissions, managed_placements, upsert

PAM_RESOURCE_TYPES = ("Containers", "ContainerPermissions", "PrivilegedData")
_SLOT_SEP = "\x1f"
_CHUNK = 500


def permission_slot_key(container_id: str, principal_type: str, principal_key_norm: str) -> str:
    """The escrow key of a permission slot (one principal on one container)."""
    return _SLOT_SEP.join((container_id, principal_type, principal_key_norm))


_ESCROW_CLEARED: dict[str, Any] = {"last_error": None, "fail_count": 0, "next_attempt_at": None}


def apply_pam(conn: sa.Connection, batch: StateBatch, policy: EscrowPolicy, now: float) -> None:
    """Write the batch's PAM records: upserts (clearing escrow), then failures (counting them), then deletes."""
    if batch.container_upserts:
        _upsert_containers(conn, batch.container_upserts, now)
    if batch.permission_upserts:
        _upsert_permissions(conn, batch.permission_upserts, now)
    if batch.placement_upserts:
        _upsert_placements(conn, batch.placement_upserts, now)
    if batch.container_failures:
        rows: dict[tuple[str, ...], dict[str, Any]] = {
            (r.name_norm,): {"name_norm": r.name_norm, "name": r.name, "last_error": r.error}
            for r in batch.container_failures
        }
        _count_failures(conn, managed_containers, rows, policy, now)
    if batch.permission_failures:
        _count_failures(
            conn, managed_permissions, {r.slot: _permission_row(r) for r in batch.permission_failures}, policy, now
        )
    if batch.placement_failures:
        rows = {
            (r.data_id,): {"data_id": r.data_id, "data_key": r.data_key, "last_error": r.error}
            for r in batch.placement_failures
        }
        _count_failures(conn, managed_placements, rows, policy, now)
    if batch.permission_deletes:
        table = managed_permissions
        conn.execute(
            sa.delete(table).where(
                table.c.container_id == sa.bindparam("b_container"),
                table.c.principal_type == sa.bindparam("b_type"),
                table.c.principal_key_norm == sa.bindparam("b_key_norm"),
            ),
            [{"b_container": c, "b_type": t, "b_key_norm": k} for c, t, k in batch.permission_deletes],
        )
    if batch.placement_deletes:
        conn.execute(
            sa.delete(managed_placements).where(managed_placements.c.data_id == sa.bindparam("b_data_id")),
            [{"b_data_id": data_id} for data_id in batch.placement_deletes],
        )


def _upsert_containers(conn: sa.Connection, records: Sequence[ContainerRecord], now: float) -> None:
    table = managed_containers
    statement = upsert(conn, table)
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=[table.c.name_norm],
            set_={
                "name": statement.excluded.name,
                "scim_id": statement.excluded.scim_id,
                # A container we already manage keeps its origin; one that only counted failures takes the new one.
                "origin": sa.case((table.c.scim_id.is_(None), statement.excluded.origin), else_=table.c.origin),
                "updated_at": statement.excluded.updated_at,
                **_ESCROW_CLEARED,
            },
        ),
        [
            {
                "name_norm": r.name_norm,
                "name": r.name,
                "scim_id": r.scim_id,
                "origin": r.origin or "created",
                "updated_at": now,
                "fail_count": 0,
            }
            for r in records
        ],
    )


def _permission_row(record: PermissionRecord) -> dict[str, Any]:
    return {
        "container_id": record.container_id,
        "principal_type": record.principal_type,
        "principal_key_norm": record.principal_key_norm,
        "principal_key": record.principal_key,
        "principal_id": record.principal_id,
        "rights": json.dumps(sorted(record.rights)),
        "scim_id": record.scim_id,
        "last_error": record.error,
    }


def _upsert_permissions(conn: sa.Connection, records: Sequence[PermissionRecord], now: float) -> None:
    table = managed_permissions
    statement = upsert(conn, table)
    replaced = ("principal_key", "principal_id", "rights", "scim_id", "updated_at")
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=[table.c.container_id, table.c.principal_type, table.c.principal_key_norm],
            set_={name: statement.excluded[name] for name in replaced} | _ESCROW_CLEARED,
        ),
        [_permission_row(r) | {"last_error": None, "fail_count": 0, "updated_at": now} for r in records],
    )


def _upsert_placements(conn: sa.Connection, records: Sequence[PlacementRecord], now: float) -> None:
    table = managed_placements
    statement = upsert(conn, table)
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=[table.c.data_id],
            set_={
                "data_key": statement.excluded.data_key,
                "container_id": statement.excluded.container_id,
                "updated_at": statement.excluded.updated_at,
                **_ESCROW_CLEARED,
            },
        ),
        [
            {
                "data_id": r.data_id,
                "data_key": r.data_key,
                "container_id": r.container_id,
                "updated_at": now,
                "fail_count": 0,
            }
            for r in records
        ],
    )


def _key_columns(table: sa.Table) -> list[sa.Column[Any]]:
    return list(table.primary_key.columns)


def _count_failures(
    conn: sa.Connection,
    table: sa.Table,
    rows: Mapping[tuple[str, ...], dict[str, Any]],
    policy: EscrowPolicy,
    now: float,
) -> None:
    """Count one failure per key (escrow) — read the counters under the write lock, compute the delay, write back.
    A key not in the table gets a row that only counts failures (no SCIM id: not managed)."""
    keys = _key_columns(table)
    wanted = list(rows)
    known: dict[tuple[str, ...], int] = {}
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start : start + _CHUNK]
        found = conn.execute(
            sa.select(*keys, table.c.fail_count).where(sa.tuple_(*keys).in_(chunk)).with_for_update()
        ).tuples()
        known.update({tuple(str(v) for v in row[:-1]): int(row[-1]) for row in found})
    values = []
    for key, row in rows.items():
        fail_count = known.get(key, 0) + 1
        delay = escrow_delay(policy, fail_count)
        values.append(
            row
            | {"fail_count": fail_count, "next_attempt_at": None if delay is None else now + delay, "updated_at": now}
        )
    statement = upsert(conn, table)
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=keys,
            set_={
                name: statement.excluded[name] for name in ("last_error", "fail_count", "next_attempt_at", "updated_at")
            },
        ),
        values,
    )


def held_pam(conn: sa.Connection, resource_type: str, moment: float) -> dict[str, HeldIdentity]:
    """The PAM objects in escrow at ``moment``, by escrow key: a container's name_norm, a permission's
    :func:`permission_slot_key`, a placement's data id."""
    if resource_type == "Containers":
        table = managed_containers
        columns: list[Any] = [table.c.name_norm, table.c.name]
    elif resource_type == "ContainerPermissions":
        table = managed_permissions
        columns = [table.c.container_id, table.c.principal_type, table.c.principal_key_norm, table.c.principal_key]
    elif resource_type == "PrivilegedData":
        table = managed_placements
        columns = [table.c.data_id, table.c.data_key]
    else:
        raise ValueError(f"not a PAM resource type: {resource_type}")
    statement = sa.select(*columns, table.c.fail_count, table.c.next_attempt_at, table.c.last_error).where(
        table.c.next_attempt_at.is_not(None), table.c.next_attempt_at > moment
    )
    held: dict[str, HeldIdentity] = {}
    for row in conn.execute(statement).tuples():
        *identity, fail_count, next_attempt_at, last_error = row
        if resource_type == "ContainerPermissions":
            key_norm = permission_slot_key(*(str(v) for v in identity[:3]))
            key = f"{identity[1]} {identity[3]}"
        else:
            key_norm, key = str(identity[0]), str(identity[1])
        held[key_norm] = HeldIdentity(resource_type, key_norm, key, int(fail_count), float(next_attempt_at), last_error)
    return held
