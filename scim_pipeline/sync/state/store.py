"""`ProvisioningState`: the state store's one entry point — reads as typed frames, writes as batches in short
transactions."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

from scim_pipeline.scim.errors import ConfigurationError
from scim_pipeline.sync.state import lease as _lease
from scim_pipeline.sync.state.audit import AUDIT_COLUMNS, insert_audit
from scim_pipeline.sync.state.batch import (
    UNKNOWN_HASH,
    ManagedUpsert,
    ResourceKind,
    StateBatch,
    active_flag,
    dump_attrs,
)
from scim_pipeline.sync.state.connection import engine_for
from scim_pipeline.sync.state.escrow import EscrowPolicy, HeldIdentity, record_failures
from scim_pipeline.sync.state.lease import LeaseHolder, LeaseLost, LeaseWait, WriterLease
from scim_pipeline.sync.state.migrations import migrate
from scim_pipeline.sync.state.pam_tables import PAM_RESOURCE_TYPES, apply_pam, held_pam
from scim_pipeline.sync.state.schema import (
    audit as audit_table,
)
from scim_pipeline.sync.state.schema import (
    managed_groups,
    managed_memberships,
    managed_users,
    target_settings,
    upsert,
)
from scim_pipeline.sync.state.snapshot import (
    GROUP_ROW_COLUMNS,
    GROUP_SNAPSHOT_COLUMNS,
    PLAN_USER_COLUMNS,
    USER_ROW_COLUMNS,
    USER_SNAPSHOT_COLUMNS,
    ManagedCounts,
    ManagedSnapshot,
    fetch_tuples,
    frame_from_rows,
)


class ProvisioningState:
    """The provisioning state on SQLite or PostgreSQL. Open it with :meth:`open`; close it (or use ``with``)."""

    def __init__(self, engine: sa.Engine, *, location: str) -> None:
        self._engine = engine
        self._writer = engine.execution_options(state_write=True)
        self.location = location
        self._fence: WriterLease | None = None
        # An in-memory SQLite database is one connection: threads take turns on it. Elsewhere the pool gives
        # each thread its own connection.
        self._lock: contextlib.AbstractContextManager[Any] = (
            threading.RLock() if location == ":memory:" else contextlib.nullcontext()
        )
        migrate(engine, location)

    @classmethod
    def open(cls, url: str | Path) -> ProvisioningState:
        """Open (creating or upgrading if needed) the state store at ``sqlite:///abs/path``, a plain path,
        ``:memory:`` or ``postgresql+psycopg://…`` (``postgresql://`` means the same).

        Raises ``ConfigurationError`` naming ``SCIM_STATE_URL`` for any other URL, or when the database cannot be
        reached.
        """
        engine, location = engine_for(url)
        try:
            return cls(engine, location=location)
        except sa.exc.OperationalError as error:
            engine.dispose()
            reason = str(error.orig).strip().splitlines()[0] if error.orig is not None else type(error).__name__
            raise ConfigurationError(f"cannot open the state store {location} (SCIM_STATE_URL): {reason}") from None
        except BaseException:
            engine.dispose()
            raise

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._engine.dialect.name

    def close(self) -> None:
        with self._lock:
            self._engine.dispose()

    def __enter__(self) -> ProvisioningState:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ProvisioningState({self.location!r})"

    @contextlib.contextmanager
    def _read(self) -> Iterator[sa.Connection]:
        with self._lock, self._engine.connect() as conn:
            yield conn

    @contextlib.contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        """A write transaction; while a fence is set (:meth:`fenced`), it commits only if our lease still holds."""
        with self._lock, self._writer.begin() as conn:
            if self._fence is not None:
                _lease.assert_held(conn, self._fence)
            yield conn

    @contextlib.contextmanager
    def _write_unfenced(self) -> Iterator[sa.Connection]:
        with self._lock, self._writer.begin() as conn:
            yield conn

    @contextlib.contextmanager
    def fenced(self, lease: WriterLease) -> Iterator[None]:
        """Condition every write of this store on ``lease`` while the block runs: a writer that lost its lease
        records nothing more (but its audit rows, see :meth:`apply`)."""
        self._fence = lease
        try:
            yield
        finally:
            self._fence = None

    def reading(self) -> contextlib.AbstractContextManager[sa.Connection]:
        """A read connection, for the tables other modules read (``scim_pipeline.sync.pam``'s); every write goes
        through :meth:`apply`."""
        return self._read()

    # ---- reads -------------------------------------------------------------------------------------------

    def is_empty(self) -> bool:
        """True when we manage nothing yet (the first run against a tenant adopts what matches)."""
        with self._read() as conn:
            users = conn.execute(sa.select(sa.literal(1)).select_from(managed_users).limit(1)).first()
            groups = conn.execute(sa.select(sa.literal(1)).select_from(managed_groups).limit(1)).first()
        return users is None and groups is None

    def managed_users(
        self, shards: Iterable[int] | None = None, *, columns: Sequence[str] = USER_SNAPSHOT_COLUMNS
    ) -> pd.DataFrame:
        """Managed users (optionally only those in ``shards``) as a DataFrame; see :class:`ManagedSnapshot`."""
        unknown = set(columns) - set(USER_SNAPSHOT_COLUMNS)
        if unknown:
            raise ValueError(f"unknown managed-user columns: {sorted(unknown)}")
        statement = sa.select(*(managed_users.c[name] for name in columns))
        if shards is not None:
            statement = statement.where(managed_users.c.shard.in_(sorted({int(s) for s in shards})))
        return self._frame(statement, columns)

    def managed_groups(self) -> pd.DataFrame:
        """Managed groups as a DataFrame; see :class:`ManagedSnapshot`."""
        statement = sa.select(*(managed_groups.c[name] for name in GROUP_SNAPSHOT_COLUMNS))
        return self._frame(statement, GROUP_SNAPSHOT_COLUMNS)

    def managed_memberships(self) -> pd.DataFrame:
        """The (group_key_norm, user_key_norm) pairs we added or adopted."""
        columns = ("group_key_norm", "user_key_norm")
        return self._frame(sa.select(*(managed_memberships.c[name] for name in columns)), columns)

    def _frame(self, statement: sa.Select[Any], columns: Sequence[str]) -> pd.DataFrame:
        with self._read() as conn:
            rows = fetch_tuples(conn, statement)
        return frame_from_rows(rows, columns)

    def snapshot(self, shards: Iterable[int] | None = None) -> ManagedSnapshot:
        """Everything a plan needs. With ``shards``, users are limited to them (groups and memberships are not)."""
        return ManagedSnapshot(
            users=self.managed_users(shards, columns=PLAN_USER_COLUMNS),
            groups=self.managed_groups(),
            memberships=self.managed_memberships(),
            attrs_loader=self.load_attrs,
        )

    def load_attrs(self, kind: ResourceKind, key_norms: Sequence[str]) -> dict[str, str]:
        """key_norm → recorded attribute JSON, for the given managed users or groups."""
        table = managed_users if kind == "Users" else managed_groups
        found: dict[str, str] = {}
        with self._read() as conn:
            for start in range(0, len(key_norms), 500):
                chunk = list(key_norms[start : start + 500])
                rows = conn.execute(sa.select(table.c.key_norm, table.c.attrs).where(table.c.key_norm.in_(chunk)))
                found.update((str(k), str(a)) for k, a in rows)
        return found

    def counts(self, shards: Iterable[int] | None = None) -> ManagedCounts:
        """Counts of what we manage, for the guards (users limited to ``shards`` when given)."""
        users_statement = sa.select(
            sa.func.count(), sa.func.coalesce(sa.func.sum(sa.func.coalesce(managed_users.c.active, 1)), 0)
        ).where(managed_users.c.scim_id.is_not(None))
        if shards is not None:
            users_statement = users_statement.where(managed_users.c.shard.in_(sorted({int(s) for s in shards})))
        groups_statement = sa.select(sa.func.count()).where(managed_groups.c.scim_id.is_not(None))
        with self._read() as conn:
            users, active = conn.execute(users_statement).one()
            groups = conn.execute(groups_statement).scalar_one()
        return ManagedCounts(users=int(users), active_users=int(active), groups=int(groups))

    def user_ids(self) -> dict[str, str]:
        """key_norm → SCIM id of every managed user that has one (manager references are resolved with it)."""
        with self._read() as conn:
            rows = conn.execute(
                sa.select(managed_users.c.key_norm, managed_users.c.scim_id).where(managed_users.c.scim_id.is_not(None))
            ).tuples()
            return {str(k): str(i) for k, i in rows}

    def held(self, resource_type: str, *, now: float | None = None) -> dict[str, HeldIdentity]:
        """Identities in escrow right now, by key_norm (for the PAM kinds, by the key of
        :func:`~scim_pipeline.sync.state.pam_tables.held_pam`)."""
        moment = time.time() if now is None else now
        if resource_type in PAM_RESOURCE_TYPES:
            with self._read() as conn:
                return held_pam(conn, resource_type, moment)
        table = managed_users if resource_type == "Users" else managed_groups
        statement = sa.select(
            table.c.key_norm, table.c.key, table.c.fail_count, table.c.next_attempt_at, table.c.last_error
        ).where(table.c.next_attempt_at.is_not(None), table.c.next_attempt_at > moment)
        with self._read() as conn:
            rows = conn.execute(statement).tuples().all()
        return {row[0]: HeldIdentity(resource_type, row[0], row[1], int(row[2]), float(row[3]), row[4]) for row in rows}

    def get_user(self, key_norm: str) -> dict[str, Any] | None:
        """One managed user's row (attrs decoded), or None."""
        return self._get_managed(
            managed_users,
            USER_ROW_COLUMNS,
            key_norm,
        )

    def get_group(self, key_norm: str) -> dict[str, Any] | None:
        """One managed group's row (attrs decoded), or None."""
        return self._get_managed(
            managed_groups,
            GROUP_ROW_COLUMNS,
            key_norm,
        )

    def _get_managed(self, table: sa.Table, columns: Sequence[str], key_norm: str) -> dict[str, Any] | None:
        statement = sa.select(*(table.c[name] for name in columns)).where(table.c.key_norm == key_norm)
        with self._read() as conn:
            row = conn.execute(statement).mappings().first()
        if row is None:
            return None
        record = dict(row)
        record["attrs"] = json.loads(record["attrs"])
        return record

    def audit(self, run_id: str | None = None) -> pd.DataFrame:
        """The audit trail (optionally of one run), oldest first."""
        return self.audit_query(run_id=run_id)

    def audit_query(
        self,
        *,
        run_id: str | None = None,
        key: str | None = None,
        since: float | None = None,
        until: float | None = None,
        failed: bool = False,
        http_status: int | None = None,
        resource_type: str | None = None,
        limit: int | None = None,
    ) -> pd.DataFrame:
        """Audit rows matching every given condition, oldest first (docs/audit.md: the questions a reviewer asks).

        ``key`` is the matching key exactly as recorded (a person's userName, a group's displayName); ``since`` /
        ``until`` are epoch seconds (``since`` inclusive, ``until`` exclusive); ``failed`` keeps the failed calls
        only; ``limit`` keeps the newest ``limit`` rows.
        """
        table = audit_table
        conditions: list[sa.ColumnElement[bool]] = []
        if run_id is not None:
            conditions.append(table.c.run_id == run_id)
        if key is not None:
            conditions.append(table.c.key == key)
        if since is not None:
            conditions.append(table.c.at >= since)
        if until is not None:
            conditions.append(table.c.at < until)
        if failed:
            conditions.append(table.c.outcome == "failed")
        if http_status is not None:
            conditions.append(table.c.http_status == http_status)
        if resource_type is not None:
            conditions.append(table.c.resource_type == resource_type)
        statement = sa.select(*(table.c[name] for name in AUDIT_COLUMNS)).where(*conditions)
        if limit is not None:
            newest = statement.order_by(table.c.id.desc()).limit(limit).subquery()
            statement = sa.select(*(newest.c[name] for name in AUDIT_COLUMNS)).order_by(newest.c.id)
        else:
            statement = statement.order_by(table.c.id)
        with self._read() as conn:
            rows = fetch_tuples(conn, statement)
        return pd.DataFrame(rows, columns=list(AUDIT_COLUMNS))

    # ---- settings and the writer lease ---------------------------------------------------------------------

    def get_value(self, namespace: str, key: str) -> str | None:
        """A small stored value (e.g. a source's delta link, a target's quirk), or None when never set."""
        statement = sa.select(target_settings.c.value).where(
            target_settings.c.namespace == namespace, target_settings.c.key == key
        )
        with self._read() as conn:
            value = conn.execute(statement).scalar_one_or_none()
        return None if value is None else str(value)

    def set_value(self, namespace: str, key: str, value: str) -> None:
        """Store (or replace) a small value under ``namespace`` / ``key``. Never a secret."""
        with self._write() as conn:
            statement = upsert(conn, target_settings).values(
                namespace=namespace, key=key, value=value, updated_at=time.time()
            )
            conn.execute(
                statement.on_conflict_do_update(
                    index_elements=[target_settings.c.namespace, target_settings.c.key],
                    set_={"value": statement.excluded.value, "updated_at": statement.excluded.updated_at},
                )
            )

    def writer_lease(
        self,
        target: str,
        holder: LeaseHolder,
        *,
        wait_s: float = 30.0,
        ttl_s: float = 60.0,
        on_wait: Callable[[LeaseWait], None] | None = None,
    ) -> contextlib.AbstractContextManager[WriterLease]:
        """Be the only writer to ``target`` while the block runs (across processes and machines sharing this store).

        ``holder`` (run, pid, host) names us in the other writers' messages. Waits up to ``wait_s`` for a live
        holder — telling ``on_wait`` whom it waits for — then raises :class:`LeaseHeld` naming it and since when; a
        holder that stopped renewing (it died) loses the lease ``ttl_s`` after its last renewal, at once when its
        process on this host is gone. The lease tells whom we waited for (``waited_s``, ``waited_for``) and whether
        we took over a holder's expired lease (``took_over_from``). See :mod:`~scim_pipeline.sync.state.lease`.
        """
        return _lease.hold_writer_lease(
            self._write_unfenced, target, holder, wait_s=wait_s, ttl_s=ttl_s, on_wait=on_wait
        )

    # ---- writes ------------------------------------------------------------------------------------------

    def mark_pending_creates(self, kind: ResourceKind, rows: Iterable[tuple[str, str, int]]) -> None:
        """Commit ``pending_create`` markers (key_norm, key, shard) before their POSTs are sent.

        Existing rows keep their data; only rows without a SCIM id are marked.
        """
        now = time.time()
        table = managed_users if kind == "Users" else managed_groups
        params = [
            {"key_norm": kn, "key": k, "status": "pending_create", "updated_at": now}
            | ({"shard": int(s)} if kind == "Users" else {})
            for kn, k, s in rows
        ]
        if not params:
            return
        with self._write() as conn:
            statement = upsert(conn, table)
            conn.execute(
                statement.on_conflict_do_update(
                    index_elements=[table.c.key_norm],
                    set_={"status": statement.excluded.status, "updated_at": statement.excluded.updated_at},
                    where=table.c.scim_id.is_(None),
                ),
                params,
            )

    def clear_pending_creates(self, kind: ResourceKind, key_norms: Iterable[str]) -> None:
        """Drop markers of creates that were never sent (a run stopped early): nothing to look up for them."""
        table = managed_users if kind == "Users" else managed_groups
        params = [{"b_key_norm": kn} for kn in key_norms]
        if not params:
            return
        with self._write() as conn:
            conn.execute(
                sa.delete(table).where(
                    table.c.key_norm == sa.bindparam("b_key_norm"),
                    table.c.scim_id.is_(None),
                    table.c.status == "pending_create",
                    table.c.fail_count == 0,
                ),
                params,
            )

    def apply(self, batch: StateBatch, *, escrow: EscrowPolicy | None = None) -> None:
        """Apply a batch of outcomes in one transaction.

        Under a fence (:meth:`fenced`) whose lease was lost, only the audit rows are written — what was sent is
        told truthfully; what we manage is left to the lease's new holder — and :class:`LeaseLost` is raised."""
        if not len(batch):
            return
        policy = escrow or EscrowPolicy()
        now = time.time()
        try:
            self._apply(batch, policy, now)
        except LeaseLost:
            if batch.audit:
                with self._write_unfenced() as conn:
                    insert_audit(conn, batch.audit)
            raise

    def _apply(self, batch: StateBatch, policy: EscrowPolicy, now: float) -> None:
        with self._write() as conn:
            if batch.user_upserts:
                _upsert_managed(conn, managed_users, batch.user_upserts, now)
            if batch.group_upserts:
                _upsert_managed(conn, managed_groups, batch.group_upserts, now)
            if batch.user_failures:
                record_failures(conn, managed_users, batch.user_failures, policy, now)
            if batch.group_failures:
                record_failures(conn, managed_groups, batch.group_failures, policy, now)
            if batch.user_deletes:
                _delete_managed(conn, managed_users, managed_memberships.c.user_key_norm, batch.user_deletes)
            if batch.group_deletes:
                _delete_managed(conn, managed_groups, managed_memberships.c.group_key_norm, batch.group_deletes)
            for table, refreshes in (
                (managed_users, batch.user_hash_refreshes),
                (managed_groups, batch.group_hash_refreshes),
            ):
                if refreshes:
                    conn.execute(
                        sa.update(table)
                        .where(table.c.key_norm == sa.bindparam("b_key_norm"))
                        .values(attrs_hash=sa.bindparam("b_hash")),
                        [{"b_hash": int(h), "b_key_norm": kn} for h, kn in refreshes],
                    )
            if batch.membership_adds:
                conn.execute(
                    upsert(conn, managed_memberships).on_conflict_do_nothing(),
                    [{"group_key_norm": g, "user_key_norm": u} for g, u in batch.membership_adds],
                )
            if batch.pam_len():
                apply_pam(conn, batch, policy, now)
            if batch.membership_removes:
                conn.execute(
                    sa.delete(managed_memberships).where(
                        managed_memberships.c.group_key_norm == sa.bindparam("b_group"),
                        managed_memberships.c.user_key_norm == sa.bindparam("b_user"),
                    ),
                    [{"b_group": g, "b_user": u} for g, u in batch.membership_removes],
                )
            if batch.audit:
                insert_audit(conn, batch.audit)

    def set_observed_attrs(self, kind: ResourceKind, updates: Mapping[str, Mapping[str, Any]]) -> None:
        """Replace the recorded attribute values of managed objects (key_norm → attrs), e.g. after drift."""
        if not updates:
            return
        table = managed_users if kind == "Users" else managed_groups
        now = time.time()
        values: dict[str, Any] = {
            "attrs": sa.bindparam("b_attrs"),
            "attrs_hash": UNKNOWN_HASH,
            "updated_at": now,
        }
        if kind == "Users":
            values["active"] = sa.bindparam("b_active", type_=sa.Integer)
        params = [
            {"b_key_norm": kn, "b_attrs": dump_attrs(a)} | ({"b_active": active_flag(a)} if kind == "Users" else {})
            for kn, a in updates.items()
        ]
        with self._write() as conn:
            conn.execute(sa.update(table).where(table.c.key_norm == sa.bindparam("b_key_norm")).values(values), params)


def _upsert_managed(conn: sa.Connection, table: sa.Table, rows: Sequence[ManagedUpsert], now: float) -> None:
    is_users = "shard" in table.c
    statement = upsert(conn, table)
    keep_or_replace: dict[str, Any] = {
        "key": statement.excluded.key,
        # A record without an id (an outcome that learned none) keeps the id we know.
        "scim_id": sa.func.coalesce(statement.excluded.scim_id, table.c.scim_id),
        # origin=None keeps the stored origin (an update never turns a created user into an adopted one).
        "origin": sa.func.coalesce(sa.bindparam("b_origin", type_=sa.Text), table.c.origin),
        "attrs": statement.excluded.attrs,
        "attrs_hash": statement.excluded.attrs_hash,
        "status": statement.excluded.status,
        "last_error": None,
        "fail_count": 0,
        "next_attempt_at": None,
        "updated_at": statement.excluded.updated_at,
    }
    if is_users:
        keep_or_replace |= {"shard": statement.excluded.shard, "active": statement.excluded.active}
    columns = {
        "key_norm": sa.bindparam("b_key_norm"),
        "key": sa.bindparam("b_key"),
        "scim_id": sa.bindparam("b_scim_id", type_=sa.Text),
        "origin": sa.func.coalesce(sa.bindparam("b_origin", type_=sa.Text), "created"),
        "attrs": sa.bindparam("b_attrs"),
        "attrs_hash": sa.bindparam("b_attrs_hash", type_=sa.BigInteger),
        "status": sa.bindparam("b_status"),
        "fail_count": 0,
        "updated_at": now,
    }
    if is_users:
        columns |= {"shard": sa.bindparam("b_shard"), "active": sa.bindparam("b_active", type_=sa.Integer)}
    params = [
        {
            "b_key_norm": r.key_norm,
            "b_key": r.key,
            "b_scim_id": r.scim_id,
            "b_origin": r.origin,
            "b_attrs": r.attrs,
            "b_attrs_hash": r.attrs_hash,
            "b_status": r.status,
        }
        | ({"b_shard": r.shard, "b_active": r.active} if is_users else {})
        for r in rows
    ]
    statement = statement.values(columns)
    conn.execute(
        statement.on_conflict_do_update(index_elements=[table.c.key_norm], set_=keep_or_replace),
        params,
    )


def _delete_managed(conn: sa.Connection, table: sa.Table, membership_side: sa.Column[Any], keys: Sequence[str]) -> None:
    params = [{"b_key_norm": kn} for kn in keys]
    conn.execute(sa.delete(table).where(table.c.key_norm == sa.bindparam("b_key_norm")), params)
    conn.execute(sa.delete(managed_memberships).where(membership_side == sa.bindparam("b_key_norm")), params)
