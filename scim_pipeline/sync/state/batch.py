"""What one flush of outcomes changes in the state store: upserts, failures, deletes, hash refreshes, membership
pairs, Delinea's PAM objects and audit rows (:class:`StateBatch`), and the attribute hash a plan compares
(:func:`attrs_hashes`)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from scim_pipeline.sync.state.audit import AuditRecord

Origin = Literal["created", "adopted"]
ResourceKind = Literal["Users", "Groups"]


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


@dataclass(frozen=True)
class ContainerRecord:
    """A container we manage (``scim_id`` None: only a failed create is counted, escrow)."""

    name: str
    scim_id: str | None
    origin: Origin | None = None
    error: str | None = None
    """For a failure: what failed (no secret, no value)."""

    @property
    def name_norm(self) -> str:
        return self.name.casefold()


@dataclass(frozen=True)
class PermissionRecord:
    """A container permission we manage: one principal's rights on one container (``scim_id`` None: only a failed
    add is counted, escrow)."""

    container_id: str
    principal_type: str
    principal_key_norm: str
    principal_key: str
    principal_id: str
    rights: tuple[str, ...]
    scim_id: str | None
    error: str | None = None

    @property
    def slot(self) -> tuple[str, str, str]:
        return (self.container_id, self.principal_type, self.principal_key_norm)


@dataclass(frozen=True)
class PlacementRecord:
    """Privileged data we placed in a container (``container_id`` None: only a failed attach is counted, escrow)."""

    data_id: str
    data_key: str
    container_id: str | None
    error: str | None = None


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
    container_upserts: list[ContainerRecord] = field(default_factory=list)
    container_failures: list[ContainerRecord] = field(default_factory=list)
    permission_upserts: list[PermissionRecord] = field(default_factory=list)
    permission_failures: list[PermissionRecord] = field(default_factory=list)
    permission_deletes: list[tuple[str, str, str]] = field(default_factory=list)
    """Permission slots (container id, principal type, principal key_norm) we no longer manage."""
    placement_upserts: list[PlacementRecord] = field(default_factory=list)
    placement_failures: list[PlacementRecord] = field(default_factory=list)
    placement_deletes: list[str] = field(default_factory=list)
    """Privileged data ids we no longer place."""
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
            + self.pam_len()
            + len(self.audit)
        )

    def pam_len(self) -> int:
        """How many PAM changes the batch holds."""
        return (
            len(self.container_upserts)
            + len(self.container_failures)
            + len(self.permission_upserts)
            + len(self.permission_failures)
            + len(self.permission_deletes)
            + len(self.placement_upserts)
            + len(self.placement_failures)
            + len(self.placement_deletes)
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
                attrs=dump_attrs(attrs),
                attrs_hash=int(attrs_hash),
                origin=origin,
                status=status,
                shard=int(shard),
                active=active_flag(attrs),
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
                attrs=dump_attrs(attrs),
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

    def upsert_container(self, name: str, *, scim_id: str, origin: Origin | None = None) -> None:
        """Record a container we manage (created or adopted); clears its escrow counters."""
        self.container_upserts.append(ContainerRecord(name, scim_id, origin))

    def fail_container(self, name: str, *, error: str) -> None:
        """Count a failed call for a container (escrow)."""
        self.container_failures.append(ContainerRecord(name, None, error=error))

    def upsert_permission(self, permission: PermissionRecord) -> None:
        """Record a permission we manage (added or adopted); clears the slot's escrow counters."""
        self.permission_upserts.append(permission)

    def fail_permission(self, permission: PermissionRecord, *, error: str) -> None:
        """Count a failed call for a permission slot (escrow); a slot we manage keeps its recorded permission."""
        self.permission_failures.append(
            PermissionRecord(
                *permission.slot, permission.principal_key, permission.principal_id, permission.rights, None, error
            )
        )

    def forget_permission(self, container_id: str, principal_type: str, principal_key_norm: str) -> None:
        """Stop managing a permission slot (deleted, or gone from the target)."""
        self.permission_deletes.append((container_id, principal_type, principal_key_norm))

    def upsert_placement(self, data_id: str, *, data_key: str, container_id: str) -> None:
        """Record privileged data we placed (attached or adopted); clears its escrow counters."""
        self.placement_upserts.append(PlacementRecord(data_id, data_key, container_id))

    def fail_placement(self, data_id: str, *, data_key: str, error: str) -> None:
        """Count a failed call for a placement (escrow)."""
        self.placement_failures.append(PlacementRecord(data_id, data_key, None, error))

    def forget_placement(self, data_id: str) -> None:
        """Stop managing a placement (detached, or gone from the target)."""
        self.placement_deletes.append(data_id)


def dump_attrs(attrs: Mapping[str, Any]) -> str:
    clean = {path: value for path, value in attrs.items() if not _is_missing(value)}
    return json.dumps(clean, sort_keys=True, ensure_ascii=False, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    raise TypeError(f"cannot store a {type(value).__name__} attribute value")


def active_flag(attrs: Mapping[str, Any]) -> int | None:
    value = attrs.get("active")
    if _is_missing(value):
        return None
    return 1 if bool(value) else 0
