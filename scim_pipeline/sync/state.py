"""The provisioning state store: what this pipeline manages on the target, and every call it made.

One SQLite file (WAL, ``busy_timeout``) holds:

- ``managed_users`` / ``managed_groups``: the objects we created or adopted, with their SCIM id, origin
  (``created`` | ``adopted``), the attribute values we last wrote or observed (JSON, plus a 64-bit hash of them so
  a plan compares one integer per identity), the call status (``ok`` | ``pending_create`` | ``failed``) and the
  escrow counters of identities that keep failing.
- ``managed_memberships``: the (group, user) pairs *we* added or adopted — only those are ever removed.
- ``audit``: one row per executed call — when, run, partition, resource type, operation, matching key, SCIM id,
  HTTP status, scimType, latency, attempts, outcome, error. Never an attribute value beyond the matching key.

Writes go through :class:`StateBatch`, applied in one short transaction; the executor flushes a batch every
~50 ms or 200 outcomes. Creates are crash-safe because a ``pending_create`` marker is committed before the POST
is sent: a rerun looks such an identity up before creating it.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from scim_pipeline.scim.errors import ConfigurationError

__all__ = [
    "UNKNOWN_HASH",
    "AuditRecord",
    "EscrowPolicy",
    "HeldIdentity",
    "ManagedCounts",
    "ManagedSnapshot",
    "ProvisioningState",
    "StateBatch",
    "attrs_hashes",
]

Origin = Literal["created", "adopted"]
ResourceKind = Literal["Users", "Groups"]

_SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS managed_users (
    key_norm TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    scim_id TEXT,
    shard INTEGER NOT NULL DEFAULT 0,
    origin TEXT NOT NULL DEFAULT 'created',
    attrs TEXT NOT NULL DEFAULT '{}',
    attrs_hash INTEGER NOT NULL DEFAULT 0,
    active INTEGER,
    status TEXT NOT NULL DEFAULT 'ok',
    last_error TEXT,
    fail_count INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL,
    updated_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS managed_users_scim_id ON managed_users (scim_id);
CREATE TABLE IF NOT EXISTS managed_groups (
    key_norm TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    scim_id TEXT,
    origin TEXT NOT NULL DEFAULT 'created',
    attrs TEXT NOT NULL DEFAULT '{}',
    attrs_hash INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'ok',
    last_error TEXT,
    fail_count INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL,
    updated_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS managed_memberships (
    group_key_norm TEXT NOT NULL,
    user_key_norm TEXT NOT NULL,
    PRIMARY KEY (group_key_norm, user_key_norm)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    run_id TEXT,
    partition TEXT,
    resource_type TEXT NOT NULL,
    operation TEXT NOT NULL,
    key TEXT,
    scim_id TEXT,
    http_status INTEGER,
    scim_type TEXT,
    latency_ms REAL,
    attempts INTEGER,
    outcome TEXT NOT NULL,
    error TEXT
);
CREATE INDEX IF NOT EXISTS audit_run ON audit (run_id);
"""

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


@dataclass
class StateBatch:
    """Outcomes to apply in one transaction. Build it up, then :meth:`ProvisioningState.apply` it."""

    user_upserts: list[dict[str, Any]] = field(default_factory=list)
    group_upserts: list[dict[str, Any]] = field(default_factory=list)
    user_failures: list[tuple[str, str, str, int, str]] = field(default_factory=list)
    group_failures: list[tuple[str, str, str]] = field(default_factory=list)
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
            {
                "key_norm": key_norm,
                "key": key,
                "scim_id": scim_id,
                "shard": int(shard),
                "origin": origin,
                "attrs": _dump_attrs(attrs),
                "attrs_hash": int(attrs_hash),
                "active": _active_flag(attrs),
                "status": status,
            }
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
            {
                "key_norm": key_norm,
                "key": key,
                "scim_id": scim_id,
                "origin": origin,
                "attrs": _dump_attrs(attrs),
                "attrs_hash": int(attrs_hash),
                "status": status,
            }
        )

    def fail_user(self, key_norm: str, *, key: str, error: str, shard: int = 0) -> None:
        """Count a failed call for a user (escrow); the stored attributes stay what the target last accepted."""
        self.user_failures.append((key_norm, key, error, int(shard), "failed"))

    def fail_group(self, key_norm: str, *, key: str, error: str) -> None:
        """Count a failed call for a group (escrow)."""
        self.group_failures.append((key_norm, key, error))


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


def _json_column(name: str) -> str:
    # SQLite aggregates a whole column into one JSON array in C: far cheaper than a Python tuple per row.
    if name == "active":
        return "json_group_array(coalesce(active, -1))"
    return f"json_group_array({name})"


def _frame_from_json(texts: Sequence[str], columns: Sequence[str]) -> pd.DataFrame:
    data: dict[str, Any] = {}
    for name, text in zip(columns, texts, strict=True):
        values = json.loads(text)
        if name in {"shard", "fail_count", "attrs_hash"}:
            data[name] = np.asarray(values, dtype=np.int64)
        elif name == "next_attempt_at":
            data[name] = np.asarray(values, dtype=float)
        elif name == "active":
            flags = np.asarray(values, dtype=np.int8)
            data[name] = pd.arrays.BooleanArray(flags == 1, flags < 0)
        else:
            data[name] = pd.arrays.ArrowStringArray(pa.array(values, type=pa.large_string()))
    return pd.DataFrame(data, columns=list(columns))


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


class ProvisioningState:
    """The SQLite-backed provisioning state. Open it with :meth:`open`; close it (or use ``with``)."""

    def __init__(self, connection: sqlite3.Connection, *, location: str) -> None:
        self._conn = connection
        self._lock = threading.RLock()
        self.location = location
        self._conn.executescript(_SCHEMA)
        self._conn.execute(
            "INSERT OR IGNORE INTO meta (name, value) VALUES ('schema_version', ?)",
            (str(_SCHEMA_VERSION),),
        )
        self._conn.commit()

    @classmethod
    def open(cls, url: str | Path) -> ProvisioningState:
        """Open (creating if needed) the state store at ``sqlite:///abs/path``, a plain path, or ``:memory:``.

        Raises ``ConfigurationError`` naming ``SCIM_STATE_URL`` for any other URL scheme.
        """
        text = str(url).strip()
        if text in {":memory:", "sqlite://", "sqlite:///:memory:"}:
            return cls(_connect(":memory:"), location=":memory:")
        if text.startswith("sqlite://"):
            path_text = text.removeprefix("sqlite://")
            if not path_text.startswith("/"):
                raise ConfigurationError("SCIM_STATE_URL must be sqlite:///<absolute path>, a file path or :memory:")
        elif "://" in text or not text:
            raise ConfigurationError(
                "SCIM_STATE_URL must be sqlite:///<absolute path>, a file path or :memory: "
                "(other databases are not supported)"
            )
        else:
            path_text = text
        path = Path(path_text).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        return cls(_connect(str(path)), location=str(path))

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> ProvisioningState:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ProvisioningState({self.location!r})"

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    # ---- reads -------------------------------------------------------------------------------------------

    def is_empty(self) -> bool:
        """True when we manage nothing yet (the first run against a tenant adopts what matches)."""
        with self._lock:
            users = self._conn.execute("SELECT 1 FROM managed_users LIMIT 1").fetchone()
            groups = self._conn.execute("SELECT 1 FROM managed_groups LIMIT 1").fetchone()
        return users is None and groups is None

    def managed_users(
        self, shards: Iterable[int] | None = None, *, columns: Sequence[str] = USER_SNAPSHOT_COLUMNS
    ) -> pd.DataFrame:
        """Managed users (optionally only those in ``shards``) as a DataFrame; see :class:`ManagedSnapshot`."""
        unknown = set(columns) - set(USER_SNAPSHOT_COLUMNS)
        if unknown:
            raise ValueError(f"unknown managed-user columns: {sorted(unknown)}")
        sql = "SELECT " + ", ".join(_json_column(c) for c in columns) + " FROM managed_users"
        params: tuple[Any, ...] = ()
        if shards is not None:
            shard_list = sorted({int(s) for s in shards})
            sql += f" WHERE shard IN ({', '.join('?' * len(shard_list))})"
            params = tuple(shard_list)
        with self._lock:
            texts = self._conn.execute(sql, params).fetchone()
        return _frame_from_json(texts, columns)

    def managed_groups(self) -> pd.DataFrame:
        """Managed groups as a DataFrame; see :class:`ManagedSnapshot`."""
        sql = "SELECT " + ", ".join(_json_column(c) for c in GROUP_SNAPSHOT_COLUMNS) + " FROM managed_groups"
        with self._lock:
            texts = self._conn.execute(sql).fetchone()
        return _frame_from_json(texts, GROUP_SNAPSHOT_COLUMNS)

    def managed_memberships(self) -> pd.DataFrame:
        """The (group_key_norm, user_key_norm) pairs we added or adopted."""
        columns = ("group_key_norm", "user_key_norm")
        sql = "SELECT " + ", ".join(_json_column(c) for c in columns) + " FROM managed_memberships"
        with self._lock:
            texts = self._conn.execute(sql).fetchone()
        return _frame_from_json(texts, columns)

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
        table = "managed_users" if kind == "Users" else "managed_groups"
        found: dict[str, str] = {}
        with self._lock:
            for start in range(0, len(key_norms), 500):
                chunk = list(key_norms[start : start + 500])
                found.update(
                    self._conn.execute(
                        f"SELECT key_norm, attrs FROM {table} WHERE key_norm IN ({', '.join('?' * len(chunk))})",
                        chunk,
                    ).fetchall()
                )
        return found

    def counts(self, shards: Iterable[int] | None = None) -> ManagedCounts:
        """Counts of what we manage, for the guards (users limited to ``shards`` when given)."""
        where = "WHERE scim_id IS NOT NULL"
        params: tuple[Any, ...] = ()
        if shards is not None:
            shard_list = sorted({int(s) for s in shards})
            where += f" AND shard IN ({', '.join('?' * len(shard_list))})"
            params = tuple(shard_list)
        with self._lock:
            users, active = self._conn.execute(
                f"SELECT count(*), coalesce(sum(coalesce(active, 1)), 0) FROM managed_users {where}",
                params,
            ).fetchone()
            (groups,) = self._conn.execute("SELECT count(*) FROM managed_groups WHERE scim_id IS NOT NULL").fetchone()
        return ManagedCounts(users=int(users), active_users=int(active), groups=int(groups))

    def user_ids(self) -> dict[str, str]:
        """key_norm → SCIM id of every managed user that has one (manager references are resolved with it)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT key_norm, scim_id FROM managed_users WHERE scim_id IS NOT NULL"
            ).fetchall()
        return dict(rows)

    def held(self, resource_type: ResourceKind, *, now: float | None = None) -> dict[str, HeldIdentity]:
        """Identities in escrow right now, by key_norm."""
        table = "managed_users" if resource_type == "Users" else "managed_groups"
        moment = time.time() if now is None else now
        with self._lock:
            rows = self._conn.execute(
                f"SELECT key_norm, key, fail_count, next_attempt_at, last_error FROM {table} "
                "WHERE next_attempt_at IS NOT NULL AND next_attempt_at > ?",
                (moment,),
            ).fetchall()
        return {row[0]: HeldIdentity(resource_type, row[0], row[1], int(row[2]), float(row[3]), row[4]) for row in rows}

    def get_user(self, key_norm: str) -> dict[str, Any] | None:
        """One managed user's row (attrs decoded), or None."""
        return self._get_managed(
            "managed_users",
            "key_norm, key, scim_id, shard, origin, attrs, attrs_hash, active, status, last_error, fail_count, "
            "next_attempt_at",
            key_norm,
        )

    def get_group(self, key_norm: str) -> dict[str, Any] | None:
        """One managed group's row (attrs decoded), or None."""
        return self._get_managed(
            "managed_groups",
            "key_norm, key, scim_id, origin, attrs, attrs_hash, status, last_error, fail_count, next_attempt_at",
            key_norm,
        )

    def _get_managed(self, table: str, columns: str, key_norm: str) -> dict[str, Any] | None:
        with self._lock:
            cursor = self._conn.execute(f"SELECT {columns} FROM {table} WHERE key_norm = ?", (key_norm,))
            row = cursor.fetchone()
            names = [d[0] for d in cursor.description]
        if row is None:
            return None
        record = dict(zip(names, row, strict=True))
        record["attrs"] = json.loads(record["attrs"])
        return record

    def audit(self, run_id: str | None = None) -> pd.DataFrame:
        """The audit trail (optionally of one run), oldest first."""
        sql = f"SELECT {', '.join(AUDIT_COLUMNS)} FROM audit"
        params: tuple[Any, ...] = ()
        if run_id is not None:
            sql += " WHERE run_id = ?"
            params = (run_id,)
        with self._lock:
            rows = self._conn.execute(sql + " ORDER BY id", params).fetchall()
        frame = pd.DataFrame(rows, columns=list(AUDIT_COLUMNS))
        return frame

    # ---- writes ------------------------------------------------------------------------------------------

    def mark_pending_creates(self, kind: ResourceKind, rows: Iterable[tuple[str, str, int]]) -> None:
        """Commit ``pending_create`` markers (key_norm, key, shard) before their POSTs are sent.

        Existing rows keep their data; only rows without a SCIM id are marked.
        """
        now = time.time()
        with self._transaction() as conn:
            if kind == "Users":
                conn.executemany(
                    "INSERT INTO managed_users (key_norm, key, shard, status, updated_at) "
                    "VALUES (?, ?, ?, 'pending_create', ?) ON CONFLICT (key_norm) DO UPDATE SET "
                    "status = 'pending_create', updated_at = excluded.updated_at "
                    "WHERE managed_users.scim_id IS NULL",
                    ((kn, k, int(s), now) for kn, k, s in rows),
                )
            else:
                conn.executemany(
                    "INSERT INTO managed_groups (key_norm, key, status, updated_at) "
                    "VALUES (?, ?, 'pending_create', ?) ON CONFLICT (key_norm) DO UPDATE SET "
                    "status = 'pending_create', updated_at = excluded.updated_at "
                    "WHERE managed_groups.scim_id IS NULL",
                    ((kn, k, now) for kn, k, _ in rows),
                )

    def clear_pending_creates(self, kind: ResourceKind, key_norms: Iterable[str]) -> None:
        """Drop markers of creates that were never sent (a run stopped early): nothing to look up for them."""
        table = "managed_users" if kind == "Users" else "managed_groups"
        with self._transaction() as conn:
            conn.executemany(
                f"DELETE FROM {table} WHERE key_norm = ? AND scim_id IS NULL "
                "AND status = 'pending_create' AND fail_count = 0",
                ((kn,) for kn in key_norms),
            )

    def apply(self, batch: StateBatch, *, escrow: EscrowPolicy | None = None) -> None:
        """Apply a batch of outcomes in one transaction."""
        if not len(batch):
            return
        policy = escrow or EscrowPolicy()
        now = time.time()
        with self._transaction() as conn:
            if batch.user_upserts:
                conn.executemany(
                    "INSERT INTO managed_users (key_norm, key, scim_id, shard, origin, attrs, attrs_hash, "
                    "active, status, last_error, fail_count, next_attempt_at, updated_at) VALUES "
                    "(:key_norm, :key, :scim_id, :shard, coalesce(:origin, 'created'), :attrs, :attrs_hash, "
                    ":active, :status, NULL, 0, NULL, :now) ON CONFLICT (key_norm) DO UPDATE SET "
                    "key = excluded.key, scim_id = coalesce(excluded.scim_id, managed_users.scim_id), "
                    "shard = excluded.shard, origin = coalesce(:origin, managed_users.origin), "
                    "attrs = excluded.attrs, attrs_hash = excluded.attrs_hash, active = excluded.active, "
                    "status = excluded.status, last_error = NULL, fail_count = 0, "
                    "next_attempt_at = NULL, updated_at = excluded.updated_at",
                    ({**row, "now": now} for row in batch.user_upserts),
                )
            if batch.group_upserts:
                conn.executemany(
                    "INSERT INTO managed_groups (key_norm, key, scim_id, origin, attrs, attrs_hash, status, "
                    "last_error, fail_count, next_attempt_at, updated_at) VALUES "
                    "(:key_norm, :key, :scim_id, coalesce(:origin, 'created'), :attrs, :attrs_hash, :status, "
                    "NULL, 0, NULL, :now) ON CONFLICT (key_norm) DO UPDATE SET "
                    "key = excluded.key, scim_id = coalesce(excluded.scim_id, managed_groups.scim_id), "
                    "origin = coalesce(:origin, managed_groups.origin), attrs = excluded.attrs, "
                    "attrs_hash = excluded.attrs_hash, status = excluded.status, last_error = NULL, "
                    "fail_count = 0, next_attempt_at = NULL, updated_at = excluded.updated_at",
                    ({**row, "now": now} for row in batch.group_upserts),
                )
            escrow_sql = (
                "fail_count = {table}.fail_count + 1, last_error = excluded.last_error, "
                "status = CASE WHEN {table}.scim_id IS NULL THEN 'failed' ELSE {table}.status END, "
                "next_attempt_at = CASE WHEN {table}.fail_count + 1 >= :after THEN "
                ":now + min(:max_delay, :base * (1 << min({table}.fail_count + 1 - :after, 30))) "
                "ELSE NULL END, updated_at = excluded.updated_at"
            )
            escrow_params = {
                "after": policy.after_failures,
                "base": policy.base_delay_s,
                "max_delay": policy.max_delay_s,
                "now": now,
            }
            first_delay = policy.base_delay_s if policy.after_failures <= 1 else None
            if batch.user_failures:
                conn.executemany(
                    "INSERT INTO managed_users (key_norm, key, shard, status, last_error, fail_count, "
                    "next_attempt_at, updated_at) VALUES (:key_norm, :key, :shard, 'failed', :error, 1, "
                    ":first_next, :now) ON CONFLICT (key_norm) DO UPDATE SET "
                    + escrow_sql.format(table="managed_users"),
                    (
                        {
                            "key_norm": kn,
                            "key": k,
                            "shard": shard,
                            "error": err,
                            "first_next": None if first_delay is None else now + first_delay,
                            **escrow_params,
                        }
                        for kn, k, err, shard, _ in batch.user_failures
                    ),
                )
            if batch.group_failures:
                conn.executemany(
                    "INSERT INTO managed_groups (key_norm, key, status, last_error, fail_count, "
                    "next_attempt_at, updated_at) VALUES (:key_norm, :key, 'failed', :error, 1, "
                    ":first_next, :now) ON CONFLICT (key_norm) DO UPDATE SET "
                    + escrow_sql.format(table="managed_groups"),
                    (
                        {
                            "key_norm": kn,
                            "key": k,
                            "error": err,
                            "first_next": None if first_delay is None else now + first_delay,
                            **escrow_params,
                        }
                        for kn, k, err in batch.group_failures
                    ),
                )
            if batch.user_deletes:
                conn.executemany("DELETE FROM managed_users WHERE key_norm = ?", ((kn,) for kn in batch.user_deletes))
                conn.executemany(
                    "DELETE FROM managed_memberships WHERE user_key_norm = ?",
                    ((kn,) for kn in batch.user_deletes),
                )
            if batch.group_deletes:
                conn.executemany("DELETE FROM managed_groups WHERE key_norm = ?", ((kn,) for kn in batch.group_deletes))
                conn.executemany(
                    "DELETE FROM managed_memberships WHERE group_key_norm = ?",
                    ((kn,) for kn in batch.group_deletes),
                )
            if batch.user_hash_refreshes:
                conn.executemany(
                    "UPDATE managed_users SET attrs_hash = ? WHERE key_norm = ?", batch.user_hash_refreshes
                )
            if batch.group_hash_refreshes:
                conn.executemany(
                    "UPDATE managed_groups SET attrs_hash = ? WHERE key_norm = ?", batch.group_hash_refreshes
                )
            if batch.membership_adds:
                conn.executemany(
                    "INSERT OR IGNORE INTO managed_memberships (group_key_norm, user_key_norm) VALUES (?, ?)",
                    batch.membership_adds,
                )
            if batch.membership_removes:
                conn.executemany(
                    "DELETE FROM managed_memberships WHERE group_key_norm = ? AND user_key_norm = ?",
                    batch.membership_removes,
                )
            if batch.audit:
                conn.executemany(
                    "INSERT INTO audit (at, run_id, partition, resource_type, operation, key, scim_id, "
                    "http_status, scim_type, latency_ms, attempts, outcome, error) VALUES "
                    "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        (
                            r.at,
                            r.run_id,
                            r.partition,
                            r.resource_type,
                            r.operation,
                            r.key,
                            r.scim_id,
                            r.http_status,
                            r.scim_type,
                            r.latency_ms,
                            r.attempts,
                            r.outcome,
                            r.error,
                        )
                        for r in batch.audit
                    ),
                )

    def set_observed_attrs(self, kind: ResourceKind, updates: Mapping[str, Mapping[str, Any]]) -> None:
        """Replace the recorded attribute values of managed objects (key_norm → attrs), e.g. after drift."""
        table = "managed_users" if kind == "Users" else "managed_groups"
        now = time.time()
        with self._transaction() as conn:
            if kind == "Users":
                conn.executemany(
                    f"UPDATE {table} SET attrs = ?, attrs_hash = ?, active = ?, updated_at = ? WHERE key_norm = ?",
                    ((_dump_attrs(a), UNKNOWN_HASH, _active_flag(a), now, kn) for kn, a in updates.items()),
                )
            else:
                conn.executemany(
                    f"UPDATE {table} SET attrs = ?, attrs_hash = ?, updated_at = ? WHERE key_norm = ?",
                    ((_dump_attrs(a), UNKNOWN_HASH, now, kn) for kn, a in updates.items()),
                )


def _connect(database: str) -> sqlite3.Connection:
    connection = sqlite3.connect(database, isolation_level=None, check_same_thread=False, timeout=30.0)
    connection.execute("PRAGMA busy_timeout = 30000")
    if database != ":memory:":
        connection.execute("PRAGMA journal_mode = WAL")
    # WAL + NORMAL: a committed transaction survives a process crash (only an OS crash may lose the last ones).
    connection.execute("PRAGMA synchronous = NORMAL")
    connection.execute("PRAGMA foreign_keys = ON")
    return connection
