"""Change sets: what one cycle must do on the target, computed with pandas against the provisioning state.

The plan compares the normalized roster with what we manage (:class:`~scim_pipeline.sync.state.ManagedSnapshot`)
by joins on ``key_norm`` and one 64-bit attribute hash per identity; only identities whose hash differs get a
per-attribute comparison, and only changed rows get a payload built. A cycle with no IdP change yields empty
change sets.

Users
    ``create`` (in the roster and active, not yet managed; ``lookup_first`` when an earlier create may have been
    applied without us seeing the answer), ``update`` (only the differing attributes, as PATCH operations),
    ``disable`` (``active`` becomes false: the user left the roster, or the roster says inactive), ``enable``
    (``active`` becomes true again), ``delete`` (left the roster, only with ``deprovision="delete"``), ``resolve``
    (a create whose outcome is unknown for a user who left the roster: look it up, then manage what is found).
    Inactive roster users that were never provisioned are not created. With ``shards`` set, users outside those
    shards are neither created nor deprovisioned.

Groups
    Matched by their key (``displayName`` by default — then a new display name is a new group, and the old one is
    deprovisioned — or ``externalId``, which makes a display-name change a ``rename``). ``create``, ``rename``,
    ``update``, and for groups that left the roster: ``release`` (Delinea has no group DELETE: we leave the group,
    remove the members *we* added through the membership plan, and stop managing it) or ``delete`` (RFC 7644
    targets with ``deprovision="delete"``).

Memberships
    ``add_members`` / ``remove_members`` PATCHes on the group, at most ``member_chunk`` member operations each.
    Only pairs whose user and group are managed and have a SCIM id are planned; the rest are counted as
    ``deferred`` (planned again once both exist — :func:`plan_memberships` after users and groups ran). Only
    memberships we added (``managed_memberships``) are ever removed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from itertools import compress
from typing import Any, Literal, Protocol

import numpy as np
import pandas as pd

from scim_pipeline.sync.plan.payloads import MANAGER_PATH, group_body, is_missing, patch_operations, user_body
from scim_pipeline.sync.state import UNKNOWN_HASH, ManagedSnapshot, attrs_hashes

__all__ = [
    "CHANGE_COLUMNS",
    "MEMBERSHIP_COLUMNS",
    "ChangeSet",
    "PlanSettings",
    "RosterFrames",
    "group_attribute_columns",
    "plan_changes",
    "plan_groups",
    "plan_memberships",
    "plan_users",
    "user_attribute_columns",
]

CHANGE_COLUMNS = (
    "op",
    "key_norm",
    "key",
    "scim_id",
    "shard",
    "payload",
    "attrs",
    "lookup_first",
    "reason",
    "manager_key",
    "attrs_hash",
)
MEMBERSHIP_COLUMNS = (
    "op",
    "key_norm",
    "key",
    "scim_id",
    "shard",
    "payload",
    "group_key_norm",
    "group_scim_id",
    "member_count",
    "member_key_norms",
)
_USER_META = frozenset({"key", "key_norm", "shard", "row"})
_GROUP_META = frozenset({"key", "key_norm", "row", "shard"})


class RosterFrames(Protocol):
    """The normalized roster's frames (see docs/internals.md): anything with these three DataFrames."""

    @property
    def users(self) -> pd.DataFrame: ...

    @property
    def groups(self) -> pd.DataFrame: ...

    @property
    def memberships(self) -> pd.DataFrame: ...


@dataclass(frozen=True)
class PlanSettings:
    """How a cycle plans.

    ``deprovision``: what happens to users who left the roster (``disable`` = ``active=false``, Delinea's soft
    delete; ``delete`` = DELETE). ``group_deprovision``: ``release`` (default; leave the group, remove our
    members) or ``delete`` (only where the profile allows group DELETE). ``shards``: the user shards this run
    covers (``None`` = all). ``include_groups``: plan group changes too (a per-shard run may leave them to the
    unpartitioned group step).
    """

    deprovision: Literal["disable", "delete"] = "disable"
    group_deprovision: Literal["release", "delete"] = "release"
    member_chunk: int = 100
    shards: frozenset[int] | None = None
    include_groups: bool = True

    def __post_init__(self) -> None:
        if self.member_chunk < 1:
            raise ValueError("member_chunk must be at least 1")


@dataclass(frozen=True)
class ChangeSet:
    """The three change frames of one cycle (see the module docstring for the operations).

    ``users`` / ``groups``: op, key_norm, key, scim_id, shard, payload (JSON: the body of a create, the PATCH
    operations of an update), attrs (JSON: the values recorded once the call succeeded), lookup_first, reason.
    ``memberships``: op, key_norm (= group_key_norm), key (group key), scim_id (= group_scim_id), shard,
    payload, group_key_norm, group_scim_id, member_count, member_key_norms (JSON list).
    """

    users: pd.DataFrame
    groups: pd.DataFrame
    memberships: pd.DataFrame
    deferred: int = 0
    notes: dict[str, int] = field(default_factory=dict)

    @classmethod
    def empty(cls) -> ChangeSet:
        return cls(_empty(CHANGE_COLUMNS), _empty(CHANGE_COLUMNS), _empty(MEMBERSHIP_COLUMNS))

    @property
    def is_empty(self) -> bool:
        """True when the plan calls the target for nothing (state-only ``refresh`` rows aside)."""
        only_refresh = self.users["op"].eq("refresh").all() and self.groups["op"].eq("refresh").all()
        return bool(only_refresh) and self.memberships.empty

    def replace(
        self,
        *,
        users: pd.DataFrame | None = None,
        groups: pd.DataFrame | None = None,
        memberships: pd.DataFrame | None = None,
        deferred: int | None = None,
    ) -> ChangeSet:
        """A copy with some frames replaced."""
        return ChangeSet(
            users=self.users if users is None else users,
            groups=self.groups if groups is None else groups,
            memberships=self.memberships if memberships is None else memberships,
            deferred=self.deferred if deferred is None else deferred,
            notes=dict(self.notes),
        )

    def summary(self) -> dict[str, int]:
        """Numeric counts for metadata: creates, updates, disables, enables, deletes, renames, member_adds,
        member_removes, deferred, and per-kind details."""
        user_ops = self.users["op"].value_counts()
        group_ops = self.groups["op"].value_counts()
        member_ops = self.memberships.groupby("op")["member_count"].sum()

        def count(series: pd.Series, op: str) -> int:
            return int(series.get(op, 0))

        return {
            "creates": count(user_ops, "create") + count(group_ops, "create"),
            "updates": count(user_ops, "update") + count(group_ops, "update"),
            "disables": count(user_ops, "disable"),
            "enables": count(user_ops, "enable"),
            "deletes": count(user_ops, "delete") + count(group_ops, "delete"),
            "renames": count(group_ops, "rename"),
            "member_adds": count(member_ops, "add_members"),
            "member_removes": count(member_ops, "remove_members"),
            "deferred": int(self.deferred),
            "user_creates": count(user_ops, "create"),
            "user_updates": count(user_ops, "update"),
            "user_deletes": count(user_ops, "delete"),
            "user_resolves": count(user_ops, "resolve"),
            "group_creates": count(group_ops, "create"),
            "group_updates": count(group_ops, "update"),
            "group_releases": count(group_ops, "release"),
            "group_deletes": count(group_ops, "delete"),
            "membership_requests": len(self.memberships),
            "refreshes": count(user_ops, "refresh") + count(group_ops, "refresh"),
        }


_EMPTY: dict[tuple[str, ...], pd.DataFrame] = {}


def _empty(columns: tuple[str, ...]) -> pd.DataFrame:
    # Building typed empty frames costs ~10 ms each; a cycle asks for dozens, so copy one made once.
    template = _EMPTY.get(columns)
    if template is None:
        template = _EMPTY[columns] = pd.DataFrame({name: pd.Series([], dtype=_dtype(name)) for name in columns})
    return template.copy()


def _dtype(name: str) -> Any:
    if name in {"shard", "member_count", "attrs_hash"}:
        return "int64"
    if name == "lookup_first":
        return "bool"
    return "string"


def _left_roster_frame(
    rows: pd.DataFrame,
    op: str,
    shards: Any,
    *,
    payloads: list[str] | None = None,
    attrs: list[str] | None = None,
) -> pd.DataFrame:
    """Changes for managed objects that left the roster: a deprovisioning ``op`` on their SCIM id, or ``resolve`` (a
    create that may have landed without us learning its id: looked up before it is forgotten)."""
    count = len(rows)
    data: dict[str, Any] = {
        "op": [op] * count,
        "key_norm": rows["key_norm"].to_numpy(dtype=object),
        "key": rows["key"].to_numpy(dtype=object),
        "shard": shards,
        "payload": [""] * count if payloads is None else payloads,
        "attrs": ["{}"] * count if attrs is None else attrs,
        "reason": ["left_roster"] * count,
    }
    if op == "resolve":
        data["lookup_first"] = [True] * count
    else:
        data["scim_id"] = rows["scim_id"].to_numpy(dtype=object)
    return _frame(CHANGE_COLUMNS, data)


def _frame(columns: tuple[str, ...], data: dict[str, Any]) -> pd.DataFrame:
    length = max((len(v) for v in data.values() if not np.isscalar(v)), default=0)
    out: dict[str, Any] = {}
    for name in columns:
        value = data.get(name)
        if value is None:
            value = (
                [False] * length
                if name == "lookup_first"
                else [UNKNOWN_HASH] * length
                if name == "attrs_hash"
                else [None] * length
            )
        out[name] = (
            pd.Series(np.asarray(value, dtype=object), dtype=_dtype(name))
            if length
            else pd.Series([], dtype=_dtype(name))
        )
    return pd.DataFrame(out)


def user_attribute_columns(users: pd.DataFrame) -> list[str]:
    """The SCIM attribute-path columns of a roster users frame."""
    return [c for c in users.columns if c not in _USER_META]


def group_attribute_columns(groups: pd.DataFrame) -> list[str]:
    """The SCIM attribute-path columns of a roster groups frame."""
    return [c for c in groups.columns if c not in _GROUP_META]


# One encoder for every payload: `json.dumps` with options builds a new one per call (two per planned create).
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _dumps(value: Any) -> str:
    return _ENCODER.encode(value)


def _records(frame: pd.DataFrame, columns: list[str]) -> list[dict[str, Any]]:
    """Rows as dicts of present values (NA left out), for the changed rows only."""
    if frame.empty:
        return []
    values: list[list[Any]] = []
    present: list[list[bool]] = []
    for name in columns:
        column = frame[name]
        objects = column.astype(object).to_numpy()
        values.append(objects.tolist())
        # Which values are present, a column at a time where the dtype says what can be missing (a first onboarding
        # builds a record per roster user); any other dtype asks `is_missing` value by value.
        if isinstance(column.dtype, pd.StringDtype):
            present.append((column.notna() & column.ne("")).fillna(False).to_numpy(dtype=bool).tolist())
        elif column.dtype == bool:
            present.append([True] * len(column))
        else:
            present.append([not is_missing(value) for value in objects])
    return [
        dict(compress(zip(columns, row, strict=True), keep))
        for row, keep in zip(zip(*values, strict=True), zip(*present, strict=True), strict=True)
    ]


def _manager_resolver(managed_users: pd.DataFrame) -> Callable[[str], str | None]:
    """Manager key → SCIM id from the managed users; the lookup table is built on first use only."""
    ids: dict[str, str] = {}
    built = False

    def resolve(manager_key: str) -> str | None:
        nonlocal built
        if not built:
            with_id = managed_users[managed_users["scim_id"].notna()]
            ids.update(zip(with_id["key_norm"].astype(object), with_id["scim_id"].astype(object), strict=True))
            built = True
        found = ids.get(manager_key.casefold())
        return None if found is None else str(found)

    return resolve


def _align(roster_keys: pd.Series, managed_keys: pd.Series) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Positions of the full outer join of two unique key columns: every roster row (with its managed row or -1),
    then the managed rows absent from the roster (roster position -1). One hash pass over both key sets."""
    keys = pd.concat([roster_keys.astype("string"), managed_keys.astype("string")], ignore_index=True)
    codes, uniques = pd.factorize(keys)
    n_roster = len(roster_keys)
    managed_of_code = np.full(len(uniques), -1, dtype=np.int64)
    managed_of_code[codes[n_roster:]] = np.arange(len(managed_keys))
    roster_of_code = np.full(len(uniques), -1, dtype=np.int64)
    roster_of_code[codes[:n_roster]] = np.arange(n_roster)
    r_to_m = managed_of_code[codes[:n_roster]]
    absent = np.flatnonzero(roster_of_code[codes[n_roster:]] < 0)
    r_pos = np.concatenate([np.arange(n_roster), np.full(len(absent), -1, dtype=np.int64)])
    m_pos = np.concatenate([r_to_m, absent])
    return r_pos, m_pos


def _at(values: np.ndarray[Any, Any], positions: np.ndarray[Any, Any], default: Any) -> np.ndarray[Any, Any]:
    """``values[positions]`` with ``default`` where the position is -1."""
    if len(values) == 0:
        return np.full(len(positions), default, dtype=values.dtype)
    taken: np.ndarray[Any, Any] = values[np.maximum(positions, 0)]
    result: np.ndarray[Any, Any] = np.where(positions >= 0, taken, default).astype(values.dtype, copy=False)
    return result


def _in_shards(frame: pd.DataFrame, shards: frozenset[int] | None) -> pd.DataFrame:
    if shards is None:
        return frame
    return frame[frame["shard"].isin(sorted(shards))]


def plan_users(
    roster_users: pd.DataFrame,
    managed: ManagedSnapshot,
    settings: PlanSettings,
    *,
    managers: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The user change frame (see :class:`ChangeSet`). ``managers``: the managed users a manager reference is
    resolved from, when ``managed`` holds fewer (one identity provisioned on demand); default ``managed.users``."""
    attr_cols = user_attribute_columns(roster_users)
    roster = _in_shards(roster_users, settings.shards)
    current = _in_shards(managed.users, settings.shards)
    resolve_manager = _manager_resolver(managed.users if managers is None else managers)

    r_pos, m_pos = _align(roster["key_norm"], current["key_norm"])
    in_roster, in_state = r_pos >= 0, m_pos >= 0
    has_id = _at(current["scim_id"].notna().to_numpy(dtype=bool), m_pos, False)
    m_active = _at(current["active"].fillna(True).to_numpy(dtype=bool), m_pos, True)
    r_hash = _at(attrs_hashes(roster, attr_cols), r_pos, 0)
    m_hash = _at(current["attrs_hash"].to_numpy(dtype=np.int64), m_pos, 0)

    if "active" in roster.columns:
        roster_active_all = roster["active"].astype("boolean").fillna(True).to_numpy(dtype=bool)
        roster_active = _at(roster_active_all, r_pos, True)
    else:
        roster_active = np.ones(len(r_pos), dtype=bool)

    frames: list[pd.DataFrame] = []

    # Creates: in the roster and active, with no SCIM id yet.
    create_mask = in_roster & ~has_id & roster_active
    if create_mask.any():
        rows = roster.iloc[r_pos[create_mask]]
        records = _records(rows, attr_cols)
        built = [user_body(rec, resolve_manager=resolve_manager) for rec in records]
        frames.append(
            _frame(
                CHANGE_COLUMNS,
                {
                    "op": ["create"] * len(rows),
                    "key_norm": rows["key_norm"].to_numpy(dtype=object),
                    "key": rows["key"].to_numpy(dtype=object),
                    "shard": rows["shard"].to_numpy(),
                    "payload": [_dumps(body) for body, _ in built],
                    "attrs": [_dumps(written) for _, written in built],
                    "lookup_first": in_state[create_mask],
                    "reason": ["new"] * len(rows),
                    # A manager created in this same cycle has no SCIM id yet: the executor creates managers
                    # first and fills it in at send time, so a first cycle leaves nothing for the next one.
                    "manager_key": [
                        rec.get(MANAGER_PATH) if MANAGER_PATH not in written else None
                        for rec, (_, written) in zip(records, built, strict=True)
                    ],
                    # Stored once the create succeeds in full (a manager filled in at send time included).
                    "attrs_hash": [
                        int(h) if _create_recorded_in_full(written, rec) else UNKNOWN_HASH
                        for h, rec, (_, written) in zip(r_hash[create_mask], records, built, strict=True)
                    ],
                },
            )
        )

    # Left the roster (within the shards of this run).
    gone = ~in_roster & has_id
    # "delete" also removes users an earlier cycle only disabled.
    deprovision_mask = gone if settings.deprovision == "delete" else gone & m_active
    if deprovision_mask.any():
        rows = current.iloc[m_pos[deprovision_mask]]
        if settings.deprovision == "delete":
            payloads = [""] * len(rows)
            attrs = ["{}"] * len(rows)
            op = "delete"
        else:
            old = [json.loads(a) for a in managed.attrs_of("Users", rows)]
            payloads = [_dumps([{"op": "replace", "path": "active", "value": False}])] * len(rows)
            attrs = [_dumps({**o, "active": False}) for o in old]
            op = "disable"
        frames.append(_left_roster_frame(rows, op, rows["shard"].to_numpy(), payloads=payloads, attrs=attrs))

    # A create of someone who left the roster may have landed: look it up before forgetting it.
    resolve_mask = ~in_roster & in_state & ~has_id
    if resolve_mask.any():
        rows = current.iloc[m_pos[resolve_mask]]
        frames.append(_left_roster_frame(rows, "resolve", rows["shard"].to_numpy()))

    # Updates: managed, still in the roster, attribute hash differs.
    update_mask = in_roster & has_id & (r_hash != m_hash)
    if update_mask.any():
        new_rows = roster.iloc[r_pos[update_mask]]
        old_rows = current.iloc[m_pos[update_mask]]
        new_records = _records(new_rows, attr_cols)
        old_records = [json.loads(a) for a in managed.attrs_of("Users", old_rows)]
        diffs = [
            patch_operations(old, new, paths=attr_cols, resolve_manager=resolve_manager)
            for old, new in zip(old_records, new_records, strict=True)
        ]
        update_hashes = r_hash[update_mask]
        complete = [
            _recorded_in_full(written, new, attr_cols) for (_, written), new in zip(diffs, new_records, strict=True)
        ]
        changed = np.array([bool(ops) for ops, _ in diffs], dtype=bool)
        if changed.any():
            chosen = np.flatnonzero(changed)
            ops_list = [diffs[i] for i in chosen]
            old_active = [old_records[i].get("active", True) for i in chosen]
            labels = [_update_label(ops, was_active) for (ops, _), was_active in zip(ops_list, old_active, strict=True)]
            picked = new_rows.iloc[chosen]
            frames.append(
                _frame(
                    CHANGE_COLUMNS,
                    {
                        "op": labels,
                        "key_norm": picked["key_norm"].to_numpy(dtype=object),
                        "key": picked["key"].to_numpy(dtype=object),
                        "scim_id": old_rows["scim_id"].to_numpy(dtype=object)[changed],
                        "shard": picked["shard"].to_numpy(),
                        "payload": [_dumps(ops) for ops, _ in ops_list],
                        "attrs": [_dumps(written) for _, written in ops_list],
                        "reason": ["roster_changed"] * len(picked),
                        "attrs_hash": [int(update_hashes[i]) if complete[i] else UNKNOWN_HASH for i in chosen],
                    },
                )
            )
        frames.append(_refreshes(new_rows, old_rows, changed, complete, update_hashes))

    if not frames:
        return _empty(CHANGE_COLUMNS)
    return pd.concat(frames, ignore_index=True)


def _refreshes(
    new_rows: pd.DataFrame,
    old_rows: pd.DataFrame,
    changed: np.ndarray[Any, Any],
    complete: list[bool],
    hashes: np.ndarray[Any, Any],
) -> pd.DataFrame:
    """State-only ``refresh`` rows: the recorded values already equal the roster's (an adopted or drift-repaired
    object, a mapping that added an empty attribute) — store the roster hash so later plans skip them cheaply."""
    refresh = ~changed & np.asarray(complete, dtype=bool)
    if not refresh.any():
        return _empty(CHANGE_COLUMNS)
    picked = new_rows.iloc[np.flatnonzero(refresh)]
    return _frame(
        CHANGE_COLUMNS,
        {
            "op": ["refresh"] * len(picked),
            "key_norm": picked["key_norm"].to_numpy(dtype=object),
            "key": picked["key"].to_numpy(dtype=object),
            "scim_id": old_rows["scim_id"].to_numpy(dtype=object)[refresh],
            "shard": picked["shard"].to_numpy() if "shard" in picked.columns else [0] * len(picked),
            "payload": [""] * len(picked),
            "attrs": ["{}"] * len(picked),
            "reason": ["state_only"] * len(picked),
            "attrs_hash": [int(h) for h in hashes[refresh]],
        },
    )


def _recorded_in_full(written: Mapping[str, Any], record: Mapping[str, Any], columns: list[str]) -> bool:
    """Whether the values recorded after a call are the roster row's on every mapped column (then the roster's
    hash may be stored with them)."""
    return all(written.get(c) == record.get(c) for c in columns)


def _create_recorded_in_full(written: dict[str, Any], record: dict[str, Any]) -> bool:
    """`_recorded_in_full` of a create, a manager filled in at send time counting as written.

    Both dicts hold only present values (never None) of mapped columns, so comparing them whole (in C) answers the
    same as the column-by-column walk, at a fraction of its cost per planned create.
    """
    if MANAGER_PATH in record and MANAGER_PATH not in written:
        written = {**written, MANAGER_PATH: record[MANAGER_PATH]}
    return written == record


def _update_label(operations: list[dict[str, Any]], was_active: Any) -> str:
    for operation in operations:
        if operation.get("path") == "active" and operation.get("op") == "replace":
            if operation.get("value") is False:
                return "disable"
            if operation.get("value") is True and was_active is False:
                return "enable"
    return "update"


def plan_groups(roster_groups: pd.DataFrame, managed: ManagedSnapshot, settings: PlanSettings) -> pd.DataFrame:
    """The group change frame (see :class:`ChangeSet`)."""
    attr_cols = group_attribute_columns(roster_groups)
    current = managed.groups
    r_pos, m_pos = _align(roster_groups["key_norm"], current["key_norm"])
    in_roster, in_state = r_pos >= 0, m_pos >= 0
    has_id = _at(current["scim_id"].notna().to_numpy(dtype=bool), m_pos, False)
    r_hash = _at(attrs_hashes(roster_groups, attr_cols), r_pos, 0)
    m_hash = _at(current["attrs_hash"].to_numpy(dtype=np.int64), m_pos, 0)
    frames: list[pd.DataFrame] = []

    create_mask = in_roster & ~has_id
    if create_mask.any():
        rows = roster_groups.iloc[r_pos[create_mask]]
        records = _records(rows, attr_cols)
        frames.append(
            _frame(
                CHANGE_COLUMNS,
                {
                    "op": ["create"] * len(rows),
                    "key_norm": rows["key_norm"].to_numpy(dtype=object),
                    "key": rows["key"].to_numpy(dtype=object),
                    "shard": [0] * len(rows),
                    "payload": [_dumps(group_body(rec)) for rec in records],
                    "attrs": [_dumps(rec) for rec in records],
                    "attrs_hash": [int(h) for h in r_hash[create_mask]],
                    "lookup_first": in_state[create_mask],
                    "reason": ["new"] * len(rows),
                },
            )
        )

    # A run over some shards sees only part of the memberships: groups are deprovisioned by full runs only.
    gone_mask = ~in_roster & has_id & (settings.shards is None)
    if gone_mask.any():
        rows = current.iloc[m_pos[gone_mask]]
        op = "delete" if settings.group_deprovision == "delete" else "release"
        frames.append(_left_roster_frame(rows, op, [0] * len(rows)))

    resolve_mask = ~in_roster & in_state & ~has_id
    if resolve_mask.any():
        rows = current.iloc[m_pos[resolve_mask]]
        frames.append(_left_roster_frame(rows, "resolve", [0] * len(rows)))

    update_mask = in_roster & has_id & (r_hash != m_hash)
    if update_mask.any():
        new_rows = roster_groups.iloc[r_pos[update_mask]]
        old_rows = current.iloc[m_pos[update_mask]]
        new_records = _records(new_rows, attr_cols)
        old_records = [json.loads(a) for a in managed.attrs_of("Groups", old_rows)]
        diffs = [patch_operations(old, new, paths=attr_cols) for old, new in zip(old_records, new_records, strict=True)]
        update_hashes = r_hash[update_mask]
        complete = [
            _recorded_in_full(written, new, attr_cols) for (_, written), new in zip(diffs, new_records, strict=True)
        ]
        changed = np.array([bool(ops) for ops, _ in diffs], dtype=bool)
        if changed.any():
            chosen = np.flatnonzero(changed)
            ops_list = [diffs[i] for i in chosen]
            picked = new_rows.iloc[chosen]
            frames.append(
                _frame(
                    CHANGE_COLUMNS,
                    {
                        "op": [
                            "rename" if any(o.get("path") == "displayName" for o in ops) else "update"
                            for ops, _ in ops_list
                        ],
                        "key_norm": picked["key_norm"].to_numpy(dtype=object),
                        "key": picked["key"].to_numpy(dtype=object),
                        "scim_id": old_rows["scim_id"].to_numpy(dtype=object)[changed],
                        "shard": [0] * len(picked),
                        "payload": [_dumps(ops) for ops, _ in ops_list],
                        "attrs": [_dumps(written) for _, written in ops_list],
                        "reason": ["roster_changed"] * len(picked),
                        "attrs_hash": [int(update_hashes[i]) if complete[i] else UNKNOWN_HASH for i in chosen],
                    },
                )
            )
        frames.append(_refreshes(new_rows, old_rows, changed, complete, update_hashes))

    if not frames:
        return _empty(CHANGE_COLUMNS)
    return pd.concat(frames, ignore_index=True)


def plan_memberships(
    roster: RosterFrames, managed: ManagedSnapshot, settings: PlanSettings
) -> tuple[pd.DataFrame, int]:
    """The membership change frame and the number of deferred membership changes.

    Plan it again after users and groups were provisioned in the same cycle, so pairs whose user or group was
    just created are not deferred.
    """
    desired = roster.memberships[["group_key_norm", "user_key_norm"]].astype("string")
    current = managed.memberships[["group_key_norm", "user_key_norm"]].astype("string")
    if settings.shards is not None:
        roster_users = _in_shards(roster.users, settings.shards)
        desired = desired[desired["user_key_norm"].isin(roster_users["key_norm"].astype("string"))]
        managed_in_scope = _in_shards(managed.users, settings.shards)["key_norm"]
        current = current[current["user_key_norm"].isin(managed_in_scope)]

    pairs = desired.merge(current, on=["group_key_norm", "user_key_norm"], how="outer", indicator=True)
    adds = pairs[pairs["_merge"] == "left_only"][["group_key_norm", "user_key_norm"]]
    removes = pairs[pairs["_merge"] == "right_only"][["group_key_norm", "user_key_norm"]]

    users_with_id = managed.users[managed.users["scim_id"].notna()][["key_norm", "scim_id"]].rename(
        columns={"key_norm": "user_key_norm", "scim_id": "user_scim_id"}
    )
    groups_with_id = managed.groups[managed.groups["scim_id"].notna()][["key_norm", "key", "scim_id"]].rename(
        columns={"key_norm": "group_key_norm", "key": "group_key", "scim_id": "group_scim_id"}
    )

    def resolve(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
        joined = frame.merge(users_with_id, on="user_key_norm", how="left").merge(
            groups_with_id, on="group_key_norm", how="left"
        )
        ready = joined["user_scim_id"].notna() & joined["group_scim_id"].notna()
        return joined[ready], int((~ready).sum())

    ready_adds, deferred_adds = resolve(adds)
    ready_removes, deferred_removes = resolve(removes)
    frames = [
        _chunk(ready_adds, "add_members", settings.member_chunk),
        _chunk(ready_removes, "remove_members", settings.member_chunk),
    ]
    frames = [f for f in frames if not f.empty]
    plan = pd.concat(frames, ignore_index=True) if frames else _empty(MEMBERSHIP_COLUMNS)
    return plan, deferred_adds + deferred_removes


def _chunk(pairs: pd.DataFrame, op: str, size: int) -> pd.DataFrame:
    if pairs.empty:
        return _empty(MEMBERSHIP_COLUMNS)
    ordered = pairs.sort_values(["group_key_norm", "user_key_norm"], kind="stable").reset_index(drop=True)
    ordered["chunk"] = ordered.groupby("group_key_norm", sort=False).cumcount() // size
    grouped = ordered.groupby(["group_key_norm", "chunk"], sort=True).agg(
        key=("group_key", "first"),
        group_scim_id=("group_scim_id", "first"),
        member_ids=("user_scim_id", list),
        member_keys=("user_key_norm", list),
    )
    grouped = grouped.reset_index()
    if op == "add_members":
        payloads = [
            _dumps([{"op": "add", "path": "members", "value": [{"value": i} for i in ids]}])
            for ids in grouped["member_ids"]
        ]
    else:
        payloads = [
            _dumps([{"op": "remove", "path": f"members[value eq {json.dumps(i)}]"} for i in ids])
            for ids in grouped["member_ids"]
        ]
    return _frame(
        MEMBERSHIP_COLUMNS,
        {
            "op": [op] * len(grouped),
            "key_norm": grouped["group_key_norm"].to_numpy(dtype=object),
            "key": grouped["key"].to_numpy(dtype=object),
            "scim_id": grouped["group_scim_id"].to_numpy(dtype=object),
            "shard": [0] * len(grouped),
            "payload": payloads,
            "group_key_norm": grouped["group_key_norm"].to_numpy(dtype=object),
            "group_scim_id": grouped["group_scim_id"].to_numpy(dtype=object),
            "member_count": [len(ids) for ids in grouped["member_ids"]],
            "member_key_norms": [_dumps([str(k) for k in keys]) for keys in grouped["member_keys"]],
        },
    )


def plan_changes(roster: RosterFrames, managed: ManagedSnapshot, settings: PlanSettings | None = None) -> ChangeSet:
    """Plan one cycle: users, groups (unless ``settings.include_groups`` is false) and memberships."""
    config = settings or PlanSettings()
    users = plan_users(roster.users, managed, config)
    groups = plan_groups(roster.groups, managed, config) if config.include_groups else _empty(CHANGE_COLUMNS)
    memberships, deferred = plan_memberships(roster, managed, config)
    return ChangeSet(users=users, groups=groups, memberships=memberships, deferred=deferred)
