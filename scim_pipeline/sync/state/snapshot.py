"""What we manage, read as typed DataFrames: the input of a plan (:class:`ManagedSnapshot`) and of the guards."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import sqlalchemy as sa

from scim_pipeline.sync.state.batch import ResourceKind

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


USER_ROW_COLUMNS = (*USER_SNAPSHOT_COLUMNS, "last_error")
GROUP_ROW_COLUMNS = (*GROUP_SNAPSHOT_COLUMNS, "last_error")
_INT_COLUMNS = frozenset({"shard", "fail_count", "attrs_hash"})


def frame_from_rows(rows: Sequence[tuple[Any, ...]], columns: Sequence[str]) -> pd.DataFrame:
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


def fetch_tuples(conn: sa.Connection, statement: sa.Select[Any]) -> list[tuple[Any, ...]]:
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
