"""The provisioning state store: what this pipeline manages on the target, and every call it made.

SQLite (a file: WAL, ``busy_timeout``) or PostgreSQL (``psycopg``), chosen by ``SCIM_STATE_URL``, through SQLAlchemy
Core; the tables are defined once in :mod:`scim_pipeline.sync.state_schema` and created or upgraded by the Alembic
migrations in ``scim_pipeline/migrations`` when the store is opened. It holds:

- ``managed_users`` / ``managed_groups``: the objects we created or adopted, with their SCIM id, origin
  (``created`` | ``adopted``), the attribute values we last wrote or observed (JSON, plus a 64-bit hash of them so
  a plan compares one integer per identity), the call status (``ok`` | ``pending_create`` | ``failed``) and the
  escrow counters of identities that keep failing.
- ``managed_memberships``: the (group, user) pairs *we* added or adopted — only those are ever removed.
- ``audit``: one row per executed call — when, run, partition, resource type, operation, matching key, SCIM id,
  HTTP status, scimType, latency, attempts, outcome, error. Never an attribute value beyond the matching key.
  docs/audit.md lists the questions a reviewer asks of it.
- ``target_settings``: small per-target values (source watermarks, client quirks) by namespace and key.
- ``writer_leases``: who writes to which target right now (:meth:`ProvisioningState.writer_lease`).

Writes go through :class:`StateBatch`, applied in one short transaction; the executor flushes a batch every
~50 ms or 200 outcomes. Creates are crash-safe because a ``pending_create`` marker is committed before the POST
is sent: a rerun looks such an identity up before creating it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.pool import StaticPool

from scim_pipeline.scim.errors import ConfigurationError
from scim_pipeline.sync import lease as _lease
from scim_pipeline.sync.lease import LeaseHeld, LeaseLost, WriterLease
from scim_pipeline.sync.state_schema import (
    audit as audit_table,
)
from scim_pipeline.sync.state_schema import (
    managed_groups,
    managed_memberships,
    managed_users,
    target_settings,
    upsert,
)

__all__ = [
    "UNKNOWN_HASH",
    "AuditRecord",
    "EscrowPolicy",
    "HeldIdentity",
    "LeaseHeld",
    "LeaseLost",
    "ManagedCounts",
    "ManagedSnapshot",
    "ProvisioningState",
    "StateBatch",
    "WriterLease",
    "attrs_hashes",
]

Origin = Literal["created", "adopted"]
ResourceKind = Literal["Users", "Groups"]

USER_SNAPSHOT_COLUMNS = (
    "key_norm",
    "key",
    "scim_id",
    "shard",
    "origin",
    "attrs",
    "attrs_hash",
    "active",
    "status",
    "fail_count",
    "next_attempt_at",
)
GROUP_SNAPSHOT_COLUMNS = (
    "key_norm",
    "key",
    "scim_id",
    "origin",
    "attrs",
    "attrs_hash",
    "status",
    "fail_count",
    "next_attempt_at",
)
PLAN_USER_COLUMNS = ("key_norm", "key", "scim_id", "shard", "attrs_hash", "active")
"""The user columns a plan reads for every managed user (attributes are loaded for changed users only)."""
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


def _is_missing(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value == ""


UNKNOWN_HASH = 0
"""The attribute hash of a managed object whose recorded values did not come from the roster (adopted, drifted,
partly written): the next plan compares its attributes in detail."""

_COLUMN_SEP = "\x1f"
_HASH_SLICE = 65_536
_ABSENT = "\x00"


def _arrow_text(column: pd.Series) -> pa.Array:
    if pd.api.types.is_bool_dtype(column.dtype):
        flags = pa.array(column.astype("boolean"))
        return pc.if_else(flags, pa.scalar("true", pa.large_string()), pa.scalar("false", pa.large_string()))
    if not pd.api.types.is_string_dtype(column.dtype) or column.dtype == object:
        column = column.astype("string")
    text = pa.array(column).cast(pa.large_string())
    return pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.large_string()), text)


def attrs_hashes(frame: pd.DataFrame, columns: Sequence[str]) -> np.ndarray[Any, np.dtype[np.int64]]:
    """A 64-bit change-detection hash per row of a roster frame, over ``columns`` (in sorted order).

    One Arrow join of the values (absent and empty values alike) and one hash pass. The plan records this hash with
    every object it writes in full; a stored hash equal to the roster's means nothing changed. Never
    :data:`UNKNOWN_HASH`.
    """
    if len(frame) == 0:
        return np.zeros(0, dtype=np.int64)
    texts = [_arrow_text(frame[path]) for path in sorted(columns)]
    names = pa.scalar(_COLUMN_SEP.join(sorted(columns)), pa.large_string())
    joined = pc.binary_join_element_wise(
        names, *texts, pa.scalar(_COLUMN_SEP, pa.large_string()), null_handling="replace", null_replacement=_ABSENT
    )
    hashed = np.empty(len(frame), dtype=np.int64)
    # In slices: the hash needs Python strings, and a million of them at once would double the plan's memory.
    for start in range(0, len(frame), _HASH_SLICE):
        texts_slice = joined.slice(start, _HASH_SLICE).to_numpy(zero_copy_only=False)
        hashed[start : start + len(texts_slice)] = pd.util.hash_array(texts_slice, categorize=False).view(np.int64)
    hashed[hashed == UNKNOWN_HASH] = 1
    return hashed


@dataclass(frozen=True)
class EscrowPolicy:
    """When an identity that keeps failing is held back: after ``after_failures`` failures in a row it waits
    ``base_delay_s`` (about one cycle), doubling with every further failure up to ``max_delay_s``."""

    after_failures: int = 3
    base_delay_s: float = 3600.0
    max_delay_s: float = 86400.0


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


@dataclass(frozen=True)
class ManagedUpsert:
    """A user or group we manage after a successful call (``shard`` and ``active`` are None for groups)."""

    key_norm: str
    key: str
    scim_id: str | None
    attrs: str
    attrs_hash: int
    origin: Origin | None
    status: Literal["ok", "pending_create"]
    shard: int | None = None
    active: int | None = None


@dataclass(frozen=True)
class FailedCall:
    """A failed call for an identity: counted for escrow (``shard`` is None for groups)."""

    key_norm: str
    key: str
    error: str
    shard: int | None = None


@dataclass
class StateBatch:
    """Outcomes to apply in one transaction. Build it up, then :meth:`ProvisioningState.apply` it.

    The executor appends to the plain lists (deletes, hash refreshes as ``(attrs_hash, key_norm)``, membership
    pairs as ``(group_key_norm, user_key_norm)``, audit records); upserts and failures go through the methods.
    """

    user_upserts: list[ManagedUpsert] = field(default_factory=list)
    group_upserts: list[ManagedUpsert] = field(default_factory=list)
    user_failures: list[FailedCall] = field(default_factory=list)
    group_failures: list[FailedCall] = field(default_factory=list)
    user_deletes: list[str] = field(default_factory=list)
    group_deletes: list[str] = field(default_factory=list)
    user_hash_refreshes: list[tuple[int, str]] = field(default_factory=list)
    group_hash_refreshes: list[tuple[int, str]] = field(default_factory=list)
    membership_adds: list[tuple[str, str]] = field(default_factory=list)
    membership_removes: list[tuple[str, str]] = field(default_factory=list)
    audit: list[AuditRecord] = field(default_factory=list)

    def __len__(self) -> int:
        return (
            len(self.user_upserts)
            + len(self.group_upserts)
            + len(self.user_failures)
            + len(self.group_failures)
            + len(self.user_deletes)
            + len(self.group_deletes)
            + len(self.user_hash_refreshes)
            + len(self.group_hash_refreshes)
            + len(self.membership_adds)
            + len(self.membership_removes)
            + len(self.audit)
        )

    def upsert_user(
        self,
        key_norm: str,
        *,
        key: str,
        scim_id: str | None,
        shard: int,
        attrs: Mapping[str, Any],
        origin: Origin | None = None,
        status: Literal["ok", "pending_create"] = "ok",
        attrs_hash: int = UNKNOWN_HASH,
    ) -> None:
        """Record a user we manage (after a successful call). ``origin=None`` keeps the stored origin;
        ``attrs_hash`` is the roster hash when ``attrs`` are exactly the roster's values (see :func:`attrs_hashes`)."""
        self.user_upserts.append(
            ManagedUpsert(
                key_norm=key_norm,
                key=key,
                scim_id=scim_id,
                attrs=_dump_attrs(attrs),
                attrs_hash=int(attrs_hash),
                origin=origin,
                status=status,
                shard=int(shard),
                active=_active_flag(attrs),
            )
        )

    def upsert_group(
        self,
        key_norm: str,
        *,
        key: str,
        scim_id: str | None,
        attrs: Mapping[str, Any],
        origin: Origin | None = None,
        status: Literal["ok", "pending_create"] = "ok",
        attrs_hash: int = UNKNOWN_HASH,
    ) -> None:
        """Record a group we manage (after a successful call); see :meth:`upsert_user`."""
        self.group_upserts.append(
            ManagedUpsert(
                key_norm=key_norm,
                key=key,
                scim_id=scim_id,
                attrs=_dump_attrs(attrs),
                attrs_hash=int(attrs_hash),
                origin=origin,
                status=status,
            )
        )

    def fail_user(self, key_norm: str, *, key: str, error: str, shard: int = 0) -> None:
        """Count a failed call for a user (escrow); the stored attributes stay what the target last accepted."""
        self.user_failures.append(FailedCall(key_norm, key, error, int(shard)))

    def fail_group(self, key_norm: str, *, key: str, error: str) -> None:
        """Count a failed call for a group (escrow)."""
        self.group_failures.append(FailedCall(key_norm, key, error))


def _dump_attrs(attrs: Mapping[str, Any]) -> str:
    clean = {path: value for path, value in attrs.items() if not _is_missing(value)}
    return json.dumps(clean, sort_keys=True, ensure_ascii=False, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    raise TypeError(f"cannot store a {type(value).__name__} attribute value")


def _active_flag(attrs: Mapping[str, Any]) -> int | None:
    value = attrs.get("active")
    if _is_missing(value):
        return None
    return 1 if bool(value) else 0


AttrsLoader = Callable[[ResourceKind, Sequence[str]], Mapping[str, str]]
"""Loads the recorded attribute JSON of some managed objects by key_norm."""


@dataclass(frozen=True)
class ManagedSnapshot:
    """What we manage, as DataFrames: the input of a plan.

    ``users``: key_norm, key, scim_id, shard, attrs_hash (int64), active (boolean) — and attrs (JSON), origin,
    status, fail_count, next_attempt_at when read in full. ``groups``: key_norm, key, scim_id, origin, attrs,
    attrs_hash, status, fail_count, next_attempt_at. ``memberships``: group_key_norm, user_key_norm.
    When a frame has no ``attrs`` column, ``attrs_loader`` fetches the JSON of just the rows a plan needs (the
    changed ones), which keeps reading a million managed users cheap.
    """

    users: pd.DataFrame
    groups: pd.DataFrame
    memberships: pd.DataFrame
    attrs_loader: AttrsLoader | None = None

    @classmethod
    def empty(cls) -> ManagedSnapshot:
        return cls(
            users=_frame([], USER_SNAPSHOT_COLUMNS),
            groups=_frame([], GROUP_SNAPSHOT_COLUMNS),
            memberships=_frame([], ("group_key_norm", "user_key_norm")),
        )

    def attrs_of(self, kind: ResourceKind, rows: pd.DataFrame) -> list[str]:
        """The recorded attribute JSON of ``rows`` (a subset of ``users`` or ``groups``), in order."""
        if "attrs" in rows.columns:
            return [str(a) for a in rows["attrs"].to_numpy(dtype=object)]
        if self.attrs_loader is None:
            raise ValueError("this snapshot has neither an attrs column nor an attrs loader")
        keys = [str(k) for k in rows["key_norm"].to_numpy(dtype=object)]
        found = self.attrs_loader(kind, keys)
        return [found.get(k, "{}") for k in keys]


@dataclass(frozen=True)
class ManagedCounts:
    """How many objects we manage (within the shards a run covers), for the guards."""

    users: int
    active_users: int
    groups: int


@dataclass(frozen=True)
class HeldIdentity:
    """An identity in escrow: it failed repeatedly and waits until ``next_attempt_at``."""

    resource_type: str
    key_norm: str
    key: str
    fail_count: int
    next_attempt_at: float
    last_error: str | None


def _frame(rows: list[tuple[Any, ...]], columns: Sequence[str]) -> pd.DataFrame:
    arrays = list(zip(*rows, strict=True)) if rows else [() for _ in columns]
    data: dict[str, Any] = {}
    for name, values in zip(columns, arrays, strict=True):
        if name in {"shard", "fail_count"} or name == "attrs_hash":
            data[name] = np.asarray(values, dtype=np.int64)
        elif name == "next_attempt_at":
            data[name] = np.asarray([np.nan if v is None else v for v in values], dtype=float)
        elif name == "active":
            data[name] = pd.array([None if v is None else bool(v) for v in values], dtype="boolean")
        else:
            data[name] = pd.array(values, dtype="string")
    return pd.DataFrame(data, columns=list(columns))


_USER_ROW_COLUMNS = (*USER_SNAPSHOT_COLUMNS, "last_error")
_GROUP_ROW_COLUMNS = (*GROUP_SNAPSHOT_COLUMNS, "last_error")
_INT_COLUMNS = frozenset({"shard", "fail_count", "attrs_hash"})


def _frame_from_rows(rows: Sequence[tuple[Any, ...]], columns: Sequence[str]) -> pd.DataFrame:
    """Typed columns from fetched rows: int64 counters, float times (NaN for none), a nullable boolean ``active``,
    Arrow-backed strings for the rest."""
    table = np.empty((len(rows), len(columns)), dtype=object)
    if rows:
        table[:] = rows
    data: dict[str, Any] = {}
    for index, name in enumerate(columns):
        values = table[:, index]
        if name in _INT_COLUMNS:
            data[name] = values.astype(np.int64)
        elif name == "next_attempt_at":
            data[name] = np.where(pd.isna(values), np.nan, values).astype(float)
        elif name == "active":
            unknown = pd.isna(values)
            flags = np.where(unknown, 0, values).astype(np.int8)
            data[name] = pd.arrays.BooleanArray(flags == 1, unknown)
        else:
            data[name] = pd.arrays.ArrowStringArray(pa.array(values, type=pa.large_string()))
    return pd.DataFrame(data, columns=list(columns))


def _fetch_tuples(conn: sa.Connection, statement: sa.Select[Any]) -> list[tuple[Any, ...]]:
    """Run a Core SELECT on the driver's own cursor: plain tuples, which NumPy turns into columns at C speed (a
    million SQLAlchemy ``Row`` objects cost seconds more to build and to take apart)."""
    compiled = statement.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    params: Any = compiled.params
    if compiled.positional and compiled.positiontup is not None:
        params = tuple(compiled.params[name] for name in compiled.positiontup)
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(str(compiled), params)
        return list(cursor.fetchall())
    finally:
        cursor.close()


def _escrow_delay(policy: EscrowPolicy, fail_count: int) -> float | None:
    """Seconds an identity with ``fail_count`` failures in a row waits: none below the threshold, then doubling."""
    if fail_count < policy.after_failures:
        return None
    exponent = max(0, min(fail_count - policy.after_failures, 30))
    return float(min(policy.max_delay_s, policy.base_delay_s * (1 << exponent)))


_URL_HELP = (
    "SCIM_STATE_URL must be sqlite:///<absolute path>, a file path, :memory:, or "
    "postgresql+psycopg://user@host:port/database (the password from PGPASSWORD or ~/.pgpass, or in the URL)"
)
_MIGRATION_LOCK_KEY = 0x5C1A_57A7E
"""The PostgreSQL advisory lock that serializes the state store's migrations (any constant every opener shares)."""
_MIGRATIONS = "scim_pipeline:migrations"


def _engine_for(url: str | Path) -> tuple[sa.Engine, str]:
    """The engine for a ``SCIM_STATE_URL`` value and the location to show (never a password)."""
    text = str(url).strip()
    if text in {":memory:", "sqlite://", "sqlite:///:memory:"}:
        # One connection shared by every thread (a heartbeat included), so they all see the same database.
        engine = sa.create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
        _configure_sqlite(engine, wal=False)
        return engine, ":memory:"
    if text.startswith(("postgresql://", "postgresql+psycopg://", "postgres://")):
        try:
            parsed = sa.make_url(text)
        except sa.exc.ArgumentError as error:
            raise ConfigurationError(_URL_HELP) from error
        parsed = parsed.set(drivername="postgresql+psycopg")
        engine = sa.create_engine(parsed, pool_pre_ping=True)
        return engine, parsed.render_as_string(hide_password=True)
    if text.startswith("sqlite://"):
        path_text = text.removeprefix("sqlite://")
        if not path_text.startswith("/"):
            raise ConfigurationError(_URL_HELP)
    elif "://" in text or not text:
        raise ConfigurationError(f"{_URL_HELP}; other databases are not supported")
    else:
        path_text = text
    path = Path(path_text).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(
        sa.URL.create("sqlite", database=str(path)), connect_args={"check_same_thread": False, "timeout": 30.0}
    )
    _configure_sqlite(engine, wal=True)
    return engine, str(path)


def _configure_sqlite(engine: sa.Engine, *, wal: bool) -> None:
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


@functools.cache
def _script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(_alembic_config())


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", _MIGRATIONS)
    return config


def _migrate(engine: sa.Engine, location: str) -> None:
    """Bring the store to the head revision, once, whoever opens it at the same time.

    The whole check-and-upgrade runs in one write transaction holding the database's lock (SQLite's write lock via
    ``BEGIN IMMEDIATE``; a transaction-scoped advisory lock on PostgreSQL, whose DDL is transactional), so a second
    opener waits, then finds the head revision and does nothing: never two ``alembic_version`` rows. A store made
    before the migrations existed (a ``meta`` table, no ``alembic_version``) is stamped with revision 0001 first.
    """
    head = _script_directory().get_current_head()
    with engine.connect() as conn:
        if MigrationContext.configure(conn).get_current_heads() == (head,):
            return
    with engine.connect().execution_options(state_write=True) as conn, conn.begin():
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
        tables = set(sa.inspect(conn).get_table_names())
        config = _alembic_config()
        config.attributes["connection"] = conn
        if "meta" in tables and "alembic_version" not in tables:
            command.stamp(config, "0001")
        command.upgrade(config, "head")
        heads = MigrationContext.configure(conn).get_current_heads()
    if heads != (head,):
        raise ConfigurationError(
            f"the state store {location} is at revision(s) {', '.join(heads) or 'none'}, not {head}: "
            "it was written by another version of scim-pipeline"
        )


class ProvisioningState:
    """The provisioning state on SQLite or PostgreSQL. Open it with :meth:`open`; close it (or use ``with``)."""

    def __init__(self, engine: sa.Engine, *, location: str) -> None:
        self._engine = engine
        self._writer = engine.execution_options(state_write=True)
        self.location = location
        # An in-memory SQLite database is one connection: threads take turns on it. Elsewhere the pool gives
        # each thread its own connection.
        self._lock: contextlib.AbstractContextManager[Any] = (
            threading.RLock() if location == ":memory:" else contextlib.nullcontext()
        )
        _migrate(engine, location)

    @classmethod
    def open(cls, url: str | Path) -> ProvisioningState:
        """Open (creating or upgrading if needed) the state store at ``sqlite:///abs/path``, a plain path,
        ``:memory:`` or ``postgresql+psycopg://…`` (``postgresql://`` means the same).

        Raises ``ConfigurationError`` naming ``SCIM_STATE_URL`` for any other URL, or when the database cannot be
        reached.
        """
        engine, location = _engine_for(url)
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
        with self._lock, self._writer.begin() as conn:
            yield conn

    def reading(self) -> contextlib.AbstractContextManager[sa.Connection]:
        """A read connection, for the tables other modules own (``scim_pipeline.sync.pam``'s)."""
        return self._read()

    def writing(self) -> contextlib.AbstractContextManager[sa.Connection]:
        """One write transaction, for the tables other modules own (``scim_pipeline.sync.pam``'s)."""
        return self._write()

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
            rows = _fetch_tuples(conn, statement)
        return _frame_from_rows(rows, columns)

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

    def held(self, resource_type: ResourceKind, *, now: float | None = None) -> dict[str, HeldIdentity]:
        """Identities in escrow right now, by key_norm."""
        table = managed_users if resource_type == "Users" else managed_groups
        moment = time.time() if now is None else now
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
            _USER_ROW_COLUMNS,
            key_norm,
        )

    def get_group(self, key_norm: str) -> dict[str, Any] | None:
        """One managed group's row (attrs decoded), or None."""
        return self._get_managed(
            managed_groups,
            _GROUP_ROW_COLUMNS,
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
            rows = _fetch_tuples(conn, statement)
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
        self, target: str, holder: str, *, wait_s: float = 30.0, ttl_s: float = 60.0
    ) -> contextlib.AbstractContextManager[WriterLease]:
        """Be the only writer to ``target`` while the block runs (across processes and machines sharing this store).

        ``holder`` names us in the other writers' messages, e.g. ``"run 1f3e… (pid 412 on host sync-1)"``. Waits up
        to ``wait_s`` for a live holder, then raises :class:`LeaseHeld` naming it and since when; a holder that
        stopped renewing (it died) loses the lease ``ttl_s`` after its last renewal. The lease tells whom we waited
        for (``waited_s``, ``waited_for``) and whether we took over a dead holder's lease (``took_over_from``).
        """
        return _lease.hold_writer_lease(self._write, target, holder, wait_s=wait_s, ttl_s=ttl_s)

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
        """Apply a batch of outcomes in one transaction."""
        if not len(batch):
            return
        policy = escrow or EscrowPolicy()
        now = time.time()
        with self._write() as conn:
            if batch.user_upserts:
                _upsert_managed(conn, managed_users, batch.user_upserts, now)
            if batch.group_upserts:
                _upsert_managed(conn, managed_groups, batch.group_upserts, now)
            if batch.user_failures:
                _record_failures(conn, managed_users, batch.user_failures, policy, now)
            if batch.group_failures:
                _record_failures(conn, managed_groups, batch.group_failures, policy, now)
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
            if batch.membership_removes:
                conn.execute(
                    sa.delete(managed_memberships).where(
                        managed_memberships.c.group_key_norm == sa.bindparam("b_group"),
                        managed_memberships.c.user_key_norm == sa.bindparam("b_user"),
                    ),
                    [{"b_group": g, "b_user": u} for g, u in batch.membership_removes],
                )
            if batch.audit:
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
                        for r in batch.audit
                    ],
                )

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
            {"b_key_norm": kn, "b_attrs": _dump_attrs(a)} | ({"b_active": _active_flag(a)} if kind == "Users" else {})
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


def _record_failures(
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
        delay = _escrow_delay(policy, fail_count)
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


def _delete_managed(conn: sa.Connection, table: sa.Table, membership_side: sa.Column[Any], keys: Sequence[str]) -> None:
    params = [{"b_key_norm": kn} for kn in keys]
    conn.execute(sa.delete(table).where(table.c.key_norm == sa.bindparam("b_key_norm")), params)
    conn.execute(sa.delete(managed_memberships).where(membership_side == sa.bindparam("b_key_norm")), params)
