"""Delinea's PAM resources as kinds of the one sync engine: containers, container permissions and privileged-data
placements, planned from the access file (:mod:`scim_pipeline.sync.access`) and executed within Delinea's rules.

- **Reading** (in the planning step, so the guards see the whole plan): each container of the access file (and each
  one we manage) is read once — ``GET /Containers/{id}`` when its id is known, else ``name eq "…"`` — and its
  permissions with ONE filtered request, ``container.value eq "<id>"`` (an unfiltered list is refused). Privileged
  data has no container filter: it is read in one paged listing, only when the file places some.
- **Containers** are found and created by name only. One that would need renaming (its name on the target differs
  from the file's) or deleting (it left the access file) is reported as drift to fix by hand, never attempted.
- **Permissions** are added and deleted, never edited in place: other rights for a principal are a delete and an
  add. We delete only what we added (or adopted), and never what a rejected row names.
- **Privileged data** is attached to or detached from containers (a PATCH of ``container``), never created.
- **403** (the service account lacks Owner on containers) is reported once, with what to grant, and stops the
  PAM requests of the cycle: it is never retried.

The access snapshot (:meth:`PamReport.snapshot`) is that one read with the confirmed answers of this cycle's own
calls applied: every managed container's permissions, one row per right, managed by us or not — no second read.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd
import sqlalchemy as sa

from scim_pipeline.scim.errors import ScimForbidden, ScimHTTPError, ScimNotFound, ScimPipelineError
from scim_pipeline.scim.filters import eq_filter
from scim_pipeline.scim.models import (
    Container,
    ContainerPermission,
    ResourceLink,
    parse_resource,
    resource_payload,
)
from scim_pipeline.sync.access import AccessFile, DesiredPermission
from scim_pipeline.sync.execute.executor import ExecutionReport, Failure
from scim_pipeline.sync.plan.guards import GuardResult, GuardSettings
from scim_pipeline.sync.state import AuditRecord, ProvisioningState, StateBatch
from scim_pipeline.sync.state.schema import managed_containers, managed_permissions, managed_placements, upsert

if TYPE_CHECKING:
    from scim_pipeline.scim.client import ScimClient
    from scim_pipeline.sync.cycle import CycleContext

__all__ = [
    "PAM_KINDS",
    "ContainerProvisioning",
    "ManagedPam",
    "PamPlan",
    "PamReport",
    "PermissionProvisioning",
    "PlacementProvisioning",
    "plan_access",
    "read_target_access",
]

PAM_KINDS = frozenset({"containers", "permissions", "privileged_data"})
PLACEHOLDER_ID = "(created in this cycle)"
SNAPSHOT_COLUMNS = ("container", "container_id", "principal_type", "principal", "principal_id", "right", "managed")
PLACEMENT_COLUMNS = ("container", "container_id", "privileged_data", "data_id", "managed")
DRIFT_COLUMNS = ("resource_type", "key", "attribute")
FORBIDDEN_FIX = (
    "the service account lacks Owner-level rights on containers (HTTP 403): grant it Owner, Edit, Add Secret and "
    "View on the containers it manages (the seed's minimum rights; its role also needs Administer Secret Server "
    "Folders). Not retried; the next cycle tries again."
)
PrincipalKey = tuple[str, str]
"""(principal type, casefolded roster key)."""


# ---- what we manage ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ManagedPermission:
    container_id: str
    principal_type: str
    principal_key_norm: str
    principal_key: str
    principal_id: str
    rights: frozenset[str]
    scim_id: str


@dataclass
class ManagedPam:
    """The containers, permissions and placements the state store says we manage."""

    containers: dict[str, tuple[str, str]] = field(default_factory=dict)
    """name_norm → (name, SCIM id)."""
    permissions: list[ManagedPermission] = field(default_factory=list)
    placements: dict[str, tuple[str, str]] = field(default_factory=dict)
    """data id → (data key, container id)."""

    @classmethod
    def load(cls, state: ProvisioningState) -> ManagedPam:
        with state.reading() as conn:
            containers = conn.execute(
                sa.select(managed_containers.c.name_norm, managed_containers.c.name, managed_containers.c.scim_id)
            ).all()
            permissions = conn.execute(
                sa.select(
                    managed_permissions.c.container_id,
                    managed_permissions.c.principal_type,
                    managed_permissions.c.principal_key_norm,
                    managed_permissions.c.principal_key,
                    managed_permissions.c.principal_id,
                    managed_permissions.c.rights,
                    managed_permissions.c.scim_id,
                )
            ).all()
            placements = conn.execute(
                sa.select(
                    managed_placements.c.data_id, managed_placements.c.data_key, managed_placements.c.container_id
                )
            ).all()
        return cls(
            containers={str(n): (str(name), str(i)) for n, name, i in containers},
            permissions=[
                ManagedPermission(str(c), str(t), str(kn), str(k), str(p), frozenset(json.loads(r)), str(s))
                for c, t, kn, k, p, r, s in permissions
            ],
            placements={str(d): (str(k), str(c)) for d, k, c in placements},
        )

    def container_names(self) -> dict[str, str]:
        """SCIM id → name of the containers we manage."""
        return {scim_id: name for name, scim_id in self.containers.values()}


def _record_container(state: ProvisioningState, name: str, scim_id: str, origin: str) -> None:
    with state.writing() as conn:
        statement = upsert(conn, managed_containers).values(
            name_norm=name.casefold(), name=name, scim_id=scim_id, origin=origin, updated_at=time.time()
        )
        conn.execute(
            statement.on_conflict_do_update(
                index_elements=[managed_containers.c.name_norm],
                set_={"name": name, "scim_id": scim_id, "updated_at": statement.excluded.updated_at},
            )
        )


def _record_permission(state: ProvisioningState, permission: ManagedPermission) -> None:
    with state.writing() as conn:
        statement = upsert(conn, managed_permissions).values(
            container_id=permission.container_id,
            principal_type=permission.principal_type,
            principal_key_norm=permission.principal_key_norm,
            principal_key=permission.principal_key,
            principal_id=permission.principal_id,
            rights=json.dumps(sorted(permission.rights)),
            scim_id=permission.scim_id,
            updated_at=time.time(),
        )
        conn.execute(
            statement.on_conflict_do_update(
                index_elements=[
                    managed_permissions.c.container_id,
                    managed_permissions.c.principal_type,
                    managed_permissions.c.principal_key_norm,
                ],
                set_={
                    name: statement.excluded[name]
                    for name in ("principal_key", "principal_id", "rights", "scim_id", "updated_at")
                },
            )
        )


def _forget_permission(state: ProvisioningState, container_id: str, principal_type: str, key_norm: str) -> None:
    with state.writing() as conn:
        conn.execute(
            sa.delete(managed_permissions).where(
                managed_permissions.c.container_id == container_id,
                managed_permissions.c.principal_type == principal_type,
                managed_permissions.c.principal_key_norm == key_norm,
            )
        )


def _record_placement(state: ProvisioningState, data_id: str, data_key: str, container_id: str | None) -> None:
    with state.writing() as conn:
        if container_id is None:
            conn.execute(sa.delete(managed_placements).where(managed_placements.c.data_id == data_id))
            return
        statement = upsert(conn, managed_placements).values(
            data_id=data_id, data_key=data_key, container_id=container_id, updated_at=time.time()
        )
        conn.execute(
            statement.on_conflict_do_update(
                index_elements=[managed_placements.c.data_id],
                set_={"data_key": data_key, "container_id": container_id, "updated_at": statement.excluded.updated_at},
            )
        )


# ---- reading the target ------------------------------------------------------------------------------------------


@dataclass
class TargetContainer:
    scim_id: str
    name: str


@dataclass
class TargetAccess:
    """What one cycle read of the target: containers by the file's (or our) names, their permissions, and the
    privileged data when it was needed."""

    containers: dict[str, TargetContainer | None] = field(default_factory=dict)
    """name_norm → the container found (None: not on the target)."""
    permissions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """container id → its permissions as read."""
    privileged_data: list[dict[str, Any]] | None = None
    requests: int = 0
    forbidden: Failure | None = None
    failures: list[Failure] = field(default_factory=list)
    """Reads that failed (other than a 403): nothing is planned for what they would have read."""


class _Forbidden(Exception):
    """A 403 was seen: the PAM requests of this cycle stop."""


@dataclass
class _Calls:
    """The PAM requests of one cycle: counted, timed and stopped for good at the first 403."""

    client: ScimClient
    forbidden: Failure | None = None
    requests: int = 0

    async def call(self, resource_type: str, op: str, key: str, request: Callable[[], Awaitable[Any]]) -> Any:
        if self.forbidden is not None:
            raise _Forbidden
        self.requests += 1
        try:
            return await request()
        except ScimForbidden as error:
            if self.forbidden is None:
                self.forbidden = Failure(resource_type, op, key, 403, error.scim_type, FORBIDDEN_FIX)
            raise _Forbidden from None


async def read_target_access(
    client: ScimClient,
    access: AccessFile,
    managed: ManagedPam,
    *,
    calls: _Calls | None = None,
) -> TargetAccess:
    """Read, within the profile's rules, each container of the access file and each one we manage, the permissions
    of every container found (one filtered request each), and the privileged data when placements need it."""
    calls = calls or _Calls(client)
    result = TargetAccess()
    wanted: dict[str, tuple[str, str | None]] = {}
    for name_norm, (name, scim_id) in managed.containers.items():
        wanted[name_norm] = (name, scim_id)
    for container in access.containers:
        known = managed.containers.get(container.name_norm)
        wanted[container.name_norm] = (container.name, known[1] if known else container.scim_id)

    async def read_container(name_norm: str, name: str, scim_id: str | None) -> None:
        try:
            await read_one(name_norm, name, scim_id)
        except ScimPipelineError as error:
            status = error.status if isinstance(error, ScimHTTPError) else None
            result.failures.append(Failure("Containers", "read", name, status, None, str(error)))

    async def read_one(name_norm: str, name: str, scim_id: str | None) -> None:
        found: dict[str, Any] | None = None
        if scim_id is not None:
            try:
                found = (
                    await calls.call("Containers", "get", name, lambda: client.get("Containers", scim_id))
                ).resource
            except ScimNotFound:
                found = None
        if found is None:
            found = await calls.call("Containers", "find", name, lambda: client.find_one("Containers", "name", name))
        if found is None or not isinstance(found.get("id"), str):
            result.containers[name_norm] = None
            return
        model = parse_resource("Containers", found)
        target = TargetContainer(scim_id=str(model.id), name=str(getattr(model, "name", None) or name))
        permission_filter = str(eq_filter("container.value", target.scim_id))
        permissions = await calls.call(
            "ContainerPermissions",
            "read",
            name,
            lambda: client.search("ContainerPermissions", permission_filter),
        )
        # Known only once its permissions are read: a container half read is not planned for.
        result.permissions[target.scim_id] = permissions
        result.containers[name_norm] = target

    try:
        reads = [(n, name, i) for n, (name, i) in wanted.items()]
        # The first read alone: a 403 (no Owner rights) then stops the cycle's PAM requests after one request.
        for first in reads[:1]:
            await read_container(*first)
        await asyncio.gather(*(read_container(*each) for each in reads[1:]))
        if access.placements or managed.placements:
            try:
                result.privileged_data = await calls.call(
                    "PrivilegedData", "read", "(all)", lambda: client.search("PrivilegedData")
                )
            except ScimPipelineError as error:
                status = error.status if isinstance(error, ScimHTTPError) else None
                result.failures.append(Failure("PrivilegedData", "read", "(all)", status, None, str(error)))
    except _Forbidden:
        pass
    result.requests = calls.requests
    result.forbidden = calls.forbidden
    return result


# ---- the plan ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContainerChange:
    op: Literal["create", "adopt"]
    name: str
    scim_id: str | None = None


@dataclass(frozen=True)
class PermissionChange:
    op: Literal["add", "delete", "adopt", "forget"]
    container: str
    container_id: str | None
    principal_type: str
    principal: str
    principal_key_norm: str
    principal_id: str | None
    rights: frozenset[str]
    scim_id: str | None = None
    reason: str = ""


@dataclass(frozen=True)
class PlacementChange:
    op: Literal["attach", "detach", "adopt", "forget"]
    data: str
    data_key: str
    data_id: str
    container: str
    container_id: str | None
    reason: str = ""


@dataclass
class PamPlan:
    containers: list[ContainerChange] = field(default_factory=list)
    permissions: list[PermissionChange] = field(default_factory=list)
    placements: list[PlacementChange] = field(default_factory=list)
    drift: list[tuple[str, str, str]] = field(default_factory=list)
    """(resource type, key, what to fix by hand)."""
    deferred: list[tuple[str, str, str]] = field(default_factory=list)
    """(container, principal, why not written in this cycle)."""

    def count(self, kind: str, op: str) -> int:
        changes: dict[str, list[Any]] = {
            "containers": list(self.containers),
            "permissions": list(self.permissions),
            "privileged_data": list(self.placements),
        }
        return sum(1 for change in changes[kind] if change.op == op)

    @property
    def permission_removals(self) -> int:
        """Permissions deleted for good (not replaced by other rights in this cycle): what the guard counts."""
        return sum(1 for p in self.permissions if p.op == "delete" and p.reason != "rights changed")


def _rights_of(resource: Mapping[str, Any]) -> frozenset[str]:
    rights = resource.get("rights")
    if isinstance(rights, str):
        return frozenset({rights})
    return frozenset(str(r) for r in rights) if isinstance(rights, list) else frozenset()


def _principal_of(resource: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """(type, SCIM id, display) of a permission's principal."""
    for kind in ("group", "user"):
        link = resource.get(kind)
        if isinstance(link, dict) and isinstance(link.get("value"), str):
            return kind, str(link["value"]), str(link.get("display") or link["value"])
    return None


def plan_access(
    access: AccessFile,
    managed: ManagedPam,
    target: TargetAccess,
    principal_ids: Mapping[PrincipalKey, str],
    *,
    kinds: Iterable[str] = PAM_KINDS,
) -> PamPlan:
    """The changes that bring the target to the access file: pure, from what we manage and what was read.

    ``principal_ids`` maps (``user``/``group``, casefolded roster key) to the principal's SCIM id, or to
    :data:`PLACEHOLDER_ID` for one created earlier in this cycle."""
    wanted_kinds = frozenset(kinds)
    plan = PamPlan()
    names_by_id = managed.container_names()
    file_names = {c.name_norm for c in access.containers}

    container_ids: dict[str, str | None] = {}
    for container in access.containers:
        found = target.containers.get(container.name_norm)
        if container.name_norm not in target.containers:
            continue  # not read (a 403 stopped the read): nothing is planned for it
        if found is None:
            if container.scim_id is not None:
                plan.drift.append(
                    ("Containers", container.name, f"no container with id {container.scim_id} on the target")
                )
                continue
            if "containers" in wanted_kinds:
                plan.containers.append(ContainerChange("create", container.name))
            container_ids[container.name_norm] = None
            continue
        if found.name.casefold() != container.name_norm:
            plan.drift.append(
                (
                    "Containers",
                    container.name,
                    f"named {found.name!r} on the target: rename it by hand in Secret Server (Delinea's SCIM API "
                    "cannot rename containers) or use that name in the access file; not attempted",
                )
            )
            continue
        if container.name_norm not in managed.containers and "containers" in wanted_kinds:
            plan.containers.append(ContainerChange("adopt", container.name, found.scim_id))
        container_ids[container.name_norm] = found.scim_id
    for name_norm, (name, _scim_id) in managed.containers.items():
        if name_norm not in file_names and name_norm not in access.held_containers:
            plan.drift.append(
                (
                    "Containers",
                    name,
                    "no longer in the access file: Delinea's SCIM API cannot delete containers — delete it by hand in "
                    "Secret Server if it should go; its permissions are left as they are",
                )
            )

    if "permissions" in wanted_kinds:
        _plan_permissions(access, managed, target, principal_ids, container_ids, names_by_id, plan)
    if "privileged_data" in wanted_kinds and target.privileged_data is not None:
        _plan_placements(access, managed, target, container_ids, names_by_id, plan)
    return plan


def _plan_permissions(
    access: AccessFile,
    managed: ManagedPam,
    target: TargetAccess,
    principal_ids: Mapping[PrincipalKey, str],
    container_ids: Mapping[str, str | None],
    names_by_id: Mapping[str, str],
    plan: PamPlan,
) -> None:
    managed_by_slot = {(m.container_id, m.principal_type, m.principal_key_norm): m for m in managed.permissions}
    desired_slots: set[tuple[str, str, str]] = set()
    for permission in access.permissions:
        if permission.container_norm not in container_ids:
            continue  # the container is skipped (drift) or was not read
        container_id = container_ids[permission.container_norm]
        principal_id = principal_ids.get((permission.principal_type, permission.principal_key_norm))
        if principal_id is None:
            plan.deferred.append(
                (
                    permission.container,
                    permission.principal,
                    f"the {permission.principal_type} is not on the target yet (held, failed or in escrow)",
                )
            )
            if container_id is not None:
                desired_slots.add((container_id, permission.principal_type, permission.principal_key_norm))
            continue
        change = _change(permission, container_id, principal_id)
        if container_id is None:
            plan.permissions.append(change("add", None, ""))
            continue
        slot: tuple[str, str, str] = (container_id, permission.principal_type, permission.principal_key_norm)
        desired_slots.add(slot)
        current = [
            p
            for p in target.permissions.get(container_id, [])
            if (principal := _principal_of(p)) is not None
            and principal[0] == permission.principal_type
            and principal[1] == principal_id
        ]
        if not current:
            plan.permissions.append(change("add", None, ""))
            continue
        ours = managed_by_slot.get(slot)
        same = [p for p in current if _rights_of(p) == permission.rights]
        for other in current:
            if other in same[:1]:
                continue
            # Never edited in place: other rights are deleted, the file's are added below.
            plan.permissions.append(change("delete", str(other.get("id")), "rights changed", rights=_rights_of(other)))
        if same:
            if ours is None or ours.scim_id != same[0].get("id") or ours.rights != permission.rights:
                plan.permissions.append(change("adopt", str(same[0].get("id")), ""))
        else:
            plan.permissions.append(change("add", None, ""))

    planned_containers = {cid for cid in container_ids.values() if cid is not None}
    for ours in managed.permissions:
        slot = (ours.container_id, ours.principal_type, ours.principal_key_norm)
        if slot in desired_slots or ours.container_id not in planned_containers:
            continue  # still wanted; or its container left the file, drifted or was not read (a 403)
        container = names_by_id.get(ours.container_id, ours.container_id)
        if access.is_held(container.casefold(), ours.principal_type, ours.principal_key_norm):
            continue
        present = any(p.get("id") == ours.scim_id for p in target.permissions[ours.container_id])
        base = PermissionChange(
            op="delete" if present else "forget",
            container=container,
            container_id=ours.container_id,
            principal_type=ours.principal_type,
            principal=ours.principal_key,
            principal_key_norm=ours.principal_key_norm,
            principal_id=ours.principal_id,
            rights=ours.rights,
            scim_id=ours.scim_id,
            reason="left the access file" if present else "already gone from the target",
        )
        plan.permissions.append(base)


def _change(
    permission: DesiredPermission, container_id: str | None, principal_id: str
) -> Callable[..., PermissionChange]:
    def make(
        op: Literal["add", "delete", "adopt"], scim_id: str | None, reason: str, *, rights: frozenset[str] | None = None
    ) -> PermissionChange:
        return PermissionChange(
            op=op,
            container=permission.container,
            container_id=container_id,
            principal_type=permission.principal_type,
            principal=permission.principal,
            principal_key_norm=permission.principal_key_norm,
            principal_id=principal_id,
            rights=permission.rights if rights is None else rights,
            scim_id=scim_id,
            reason=reason,
        )

    return make


def _plan_placements(
    access: AccessFile,
    managed: ManagedPam,
    target: TargetAccess,
    container_ids: Mapping[str, str | None],
    names_by_id: Mapping[str, str],
    plan: PamPlan,
) -> None:
    data = target.privileged_data or []
    by_id = {str(d.get("id")): d for d in data}
    by_name: dict[str, list[dict[str, Any]]] = {}
    for item in data:
        if isinstance(item.get("name"), str):
            by_name.setdefault(str(item["name"]).casefold(), []).append(item)
    placed: set[str] = set()
    for placement in access.placements:
        if placement.container_norm not in container_ids:
            continue
        if placement.by == "id":
            found = by_id.get(placement.data)
        else:
            matches = by_name.get(placement.data.casefold(), [])
            if len(matches) > 1:
                plan.drift.append(
                    ("PrivilegedData", placement.data, f"{len(matches)} privileged data share this name: name it by id")
                )
                continue
            found = matches[0] if matches else None
        if found is None:
            plan.drift.append(
                (
                    "PrivilegedData",
                    placement.data,
                    "not found on the target: privileged data is never created through SCIM — create it in Secret "
                    "Server first",
                )
            )
            continue
        data_id = str(found.get("id"))
        placed.add(data_id)
        container_id = container_ids[placement.container_norm]
        link = found.get("container")
        current = str(link.get("value")) if isinstance(link, dict) and link.get("value") else None
        if container_id is None or current != container_id:
            plan.placements.append(
                PlacementChange(
                    "attach", placement.data, placement.data_key, data_id, placement.container, container_id
                )
            )
        elif managed.placements.get(data_id, ("", ""))[1] != container_id:
            plan.placements.append(
                PlacementChange("adopt", placement.data, placement.data_key, data_id, placement.container, container_id)
            )
    for data_id, (data_key, container_id) in managed.placements.items():
        if data_id in placed or data_key.casefold() in access.held_placements:
            continue
        container = names_by_id.get(container_id, container_id)
        if container.casefold() in access.held_containers:
            continue
        listed = by_id.get(data_id)
        link = listed.get("container") if listed is not None else None
        current = str(link.get("value")) if isinstance(link, dict) and link.get("value") else None
        op: Literal["detach", "forget"] = "detach" if current == container_id else "forget"
        plan.placements.append(
            PlacementChange(op, data_key, data_key, data_id, container, container_id, "left the file")
        )


def permission_guard(plan: PamPlan, managed: ManagedPam, settings: GuardSettings | None) -> GuardResult:
    """Permissions removed in one cycle count like deletions: at most ``SCIM_MAX_DELETES`` (default 20 % of the
    permissions we manage, never below 10); an access file that removes every one we manage is a lost file."""
    config = settings or GuardSettings()
    removals = plan.permission_removals
    managed_count = len(managed.permissions)
    limit = (
        config.max_deletes
        if config.max_deletes is not None
        else max(config.min_delete_limit, math.floor(config.max_delete_share * managed_count))
    )
    passed = removals <= limit or config.allow_mass_changes
    hint = "or set SCIM_ALLOW_MASS_CHANGES=1 for one run if this is intended"
    return GuardResult(
        name="permission_removals",
        passed=passed,
        observed=removals,
        limit=limit,
        message=(
            f"{removals} container permissions removed (limit {limit})"
            if passed
            else f"{removals} of the {managed_count} container permissions we manage would be removed in one cycle "
            f"(limit {limit}): check the access file; nothing was changed (set SCIM_MAX_DELETES={removals}, {hint})"
        ),
    )


# ---- the report ----------------------------------------------------------------------------------------------


@dataclass
class PamReport:
    """What the PAM kinds of one cycle read, planned and did."""

    access: AccessFile
    managed: ManagedPam
    target: TargetAccess
    plan: PamPlan
    guard: GuardResult | None = None
    executed: ExecutionReport = field(default_factory=ExecutionReport)
    created_permissions: list[dict[str, Any]] = field(default_factory=list)
    deleted_permissions: set[str] = field(default_factory=set)
    placed: dict[str, str | None] = field(default_factory=dict)
    """data id → container id after this cycle's attaches (None: detached)."""
    calls: _Calls | None = None
    read_s: float = 0.0
    forbidden_reported: bool = False
    access_snapshot: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(SNAPSHOT_COLUMNS)))
    """Every read container's permissions after this cycle, one row per right (see the module docstring)."""
    placement_snapshot: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(PLACEMENT_COLUMNS)))
    access_drift: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(DRIFT_COLUMNS)))
    """The snapshot against the access file."""

    def finish(self, state: ProvisioningState) -> None:
        """Compute the snapshots from the read and this cycle's confirmed answers (called once, at the end)."""
        managed = ManagedPam.load(state)
        keys: dict[str, str] = {}
        for frame in (state.managed_users(columns=("key", "scim_id")), state.managed_groups()):
            present = frame[frame["scim_id"].notna()]
            keys.update(zip(present["scim_id"].astype(str), present["key"].astype(str), strict=True))
        self.access_snapshot = self._snapshot(managed, keys)
        self.placement_snapshot = self._placements_snapshot(managed)
        self.access_drift = self._snapshot_drift(self.access_snapshot)

    def counts(self) -> dict[str, int]:
        plan = self.plan
        return {
            "container_creates": plan.count("containers", "create"),
            "container_adoptions": plan.count("containers", "adopt"),
            "permission_adds": plan.count("permissions", "add"),
            "permission_deletes": plan.count("permissions", "delete"),
            "permission_adoptions": plan.count("permissions", "adopt"),
            "placement_attaches": plan.count("privileged_data", "attach"),
            "placement_detaches": plan.count("privileged_data", "detach"),
            "access_drift": len(plan.drift),
            "permissions_deferred": len(plan.deferred),
            "access_rejected_rows": len(self.access.rejected),
        }

    def change_rows(self) -> list[dict[str, str]]:
        """One row per container, permission or placement change (kind, op, key, detail), never a secret."""
        rows: list[dict[str, str]] = []
        for container in self.plan.containers:
            rows.append({"kind": "container", "op": container.op, "key": container.name, "detail": ""})
        for p in self.plan.permissions:
            if p.op == "forget":
                continue
            rights = ", ".join(sorted(p.rights))
            detail = f"{rights} on {p.container}" + (f" ({p.reason})" if p.reason else "")
            rows.append(
                {"kind": "permission", "op": p.op, "key": f"{p.principal_type} {p.principal}", "detail": detail}
            )
        for d in self.plan.placements:
            if d.op == "forget":
                continue
            detail = f"{'to' if d.op != 'detach' else 'from'} {d.container}"
            rows.append({"kind": "privileged_data", "op": d.op, "key": d.data, "detail": detail})
        return rows

    def _snapshot(self, managed: ManagedPam, keys: Mapping[str, str]) -> pd.DataFrame:
        ours = {m.scim_id for m in managed.permissions}
        names = {c.scim_id: c.name for c in self.target.containers.values() if c is not None}
        names.update(managed.container_names())
        rows: list[dict[str, Any]] = []
        permissions = {cid: list(found) for cid, found in self.target.permissions.items()}
        for created in self.created_permissions:
            link = created.get("container")
            if isinstance(link, dict):
                permissions.setdefault(str(link.get("value")), []).append(created)
        for container_id, found in sorted(permissions.items(), key=lambda item: names.get(item[0], item[0])):
            for permission in found:
                if permission.get("id") in self.deleted_permissions:
                    continue
                principal = _principal_of(permission)
                if principal is None:
                    continue
                for right in sorted(_rights_of(permission)):
                    rows.append(
                        {
                            "container": names.get(container_id, container_id),
                            "container_id": container_id,
                            "principal_type": principal[0],
                            # The roster key of a principal we know, else what the target calls it.
                            "principal": keys.get(principal[1], principal[2]),
                            "principal_id": principal[1],
                            "right": right,
                            "managed": permission.get("id") in ours,
                        }
                    )
        return pd.DataFrame(rows, columns=list(SNAPSHOT_COLUMNS))

    def _placements_snapshot(self, managed: ManagedPam) -> pd.DataFrame:
        """The privileged data in the containers read, after this cycle's attaches and detaches."""
        if self.target.privileged_data is None:
            return pd.DataFrame(columns=list(PLACEMENT_COLUMNS))
        names = {c.scim_id: c.name for c in self.target.containers.values() if c is not None}
        names.update(managed.container_names())
        rows = []
        for item in self.target.privileged_data:
            data_id = str(item.get("id"))
            link = item.get("container")
            container_id = str(link.get("value")) if isinstance(link, dict) and link.get("value") else None
            container_id = self.placed.get(data_id, container_id)
            if container_id is None or container_id not in names:
                continue
            rows.append(
                {
                    "container": names[container_id],
                    "container_id": container_id,
                    "privileged_data": str(item.get("name") or data_id),
                    "data_id": data_id,
                    "managed": managed.placements.get(data_id, ("", ""))[1] == container_id,
                }
            )
        return pd.DataFrame(rows, columns=list(PLACEMENT_COLUMNS))

    def _snapshot_drift(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The snapshot against the access file: rights missing or different, and principals the file does not
        name on its containers (one row each, with what differs)."""
        held: dict[tuple[str, str, str], set[str]] = {}
        for container, principal_type, principal, right in frame[
            ["container", "principal_type", "principal", "right"]
        ].itertuples(index=False):
            held.setdefault((str(container).casefold(), str(principal_type), str(principal).casefold()), set()).add(
                str(right)
            )
        rows: list[tuple[str, str, str]] = []
        named: set[tuple[str, str, str]] = set()
        read = {name_norm for name_norm, found in self.target.containers.items() if found is not None}
        for p in self.access.permissions:
            slot: tuple[str, str, str] = (p.container_norm, p.principal_type, p.principal_key_norm)
            named.add(slot)
            if p.container_norm not in read:
                continue
            rights = held.get(slot)
            if rights is None:
                rows.append(("ContainerPermissions", f"{p.container} / {p.principal}", "missing on the target"))
            elif rights != p.rights:
                rows.append(
                    (
                        "ContainerPermissions",
                        f"{p.container} / {p.principal}",
                        f"holds {', '.join(sorted(rights))}, the file says {', '.join(sorted(p.rights))}",
                    )
                )
        file_containers = {c.name_norm for c in self.access.containers}
        for slot in sorted(set(held) - named):
            if slot[0] in file_containers:
                rows.append(("ContainerPermissions", f"{slot[0]} / {slot[2]}", "not in the access file"))
        return pd.DataFrame(rows, columns=list(DRIFT_COLUMNS))


# ---- the phases ------------------------------------------------------------------------------------------------


async def plan_pam(context: CycleContext, principal_ids: Mapping[PrincipalKey, str]) -> PamReport | None:
    """Read the target and plan the PAM kinds (part of the cycle's planning step)."""
    access = context.access
    if access is None or not (context.options.kinds & PAM_KINDS):
        return None
    managed = ManagedPam.load(context.state)
    calls = _Calls(context.client)
    started = time.perf_counter()
    target = await read_target_access(context.client, access, managed, calls=calls)
    plan = plan_access(access, managed, target, principal_ids, kinds=context.options.kinds)
    report = PamReport(access=access, managed=managed, target=target, plan=plan, calls=calls)
    report.read_s = time.perf_counter() - started
    report.guard = permission_guard(plan, managed, context.options.guards)
    if target.forbidden is not None:
        _fail_once(context, report)
    if target.failures:
        context.report.execution = context.report.execution.merge(ExecutionReport(failures=list(target.failures)))
    # The reads are counted in the report (``target.requests``), not as calls: like the roster's reads, they change
    # nothing, and a cycle that changes nothing makes no call.
    return report


def principal_ids_of(users: pd.DataFrame, groups: pd.DataFrame) -> dict[PrincipalKey, str]:
    """(type, key_norm) → SCIM id (or the placeholder of a create in this cycle) from managed-snapshot frames."""
    ids: dict[PrincipalKey, str] = {}
    for kind, frame in (("user", users), ("group", groups)):
        if frame.empty:
            continue
        present = frame[frame["scim_id"].notna()]
        for key_norm, scim_id in zip(present["key_norm"].astype(str), present["scim_id"].astype(str), strict=True):
            ids[(kind, key_norm)] = scim_id
    return ids


def _fail_once(context: CycleContext, report: PamReport) -> None:
    calls = report.calls
    if calls is None or calls.forbidden is None or report.forbidden_reported:
        return
    report.forbidden_reported = True
    context.report.execution = context.report.execution.merge(ExecutionReport(failures=[calls.forbidden]))


class _PamPhase:
    kind: str | None = None
    name = ""

    def _report(self, context: CycleContext) -> PamReport | None:
        report = context.report.pam
        if report is None or report.calls is None or report.calls.forbidden is not None:
            return None
        return report

    async def _execute(
        self,
        context: CycleContext,
        report: PamReport,
        work: list[tuple[str, str, str, Callable[[], Awaitable[Any]], Callable[[Any], None]]],
    ) -> None:
        """Run (resource type, op, key, request, on success) items concurrently: audit each, count each, stop at a
        403 (reported once)."""
        if not work:
            return
        calls = report.calls
        assert calls is not None
        before = calls.requests
        started = time.perf_counter()
        batch = StateBatch()
        execution = ExecutionReport()

        async def one(resource_type: str, op: str, key: str, request: Callable[[], Awaitable[Any]], done: Any) -> None:
            began = time.perf_counter()
            try:
                result = await calls.call(resource_type, op, key, request)
            except _Forbidden:
                if calls.forbidden is not None and calls.forbidden.key == key and calls.forbidden.op == op:
                    batch.audit.append(_audit(context, resource_type, op, key, "failed", 403, began, FORBIDDEN_FIX))
                    execution.counts[(resource_type, op, "failed")] += 1
                else:
                    execution.not_attempted += 1
                return
            except (ScimHTTPError, ScimPipelineError) as error:
                status = error.status if isinstance(error, ScimHTTPError) else None
                scim_type = error.scim_type if isinstance(error, ScimHTTPError) else None
                message = str(error)
                execution.failures.append(Failure(resource_type, op, key, status, scim_type, message))
                execution.counts[(resource_type, op, "failed")] += 1
                batch.audit.append(_audit(context, resource_type, op, key, "failed", status, began, message))
                return
            done(result)
            status = getattr(result, "status", None)
            execution.counts[(resource_type, op, "ok")] += 1
            batch.audit.append(_audit(context, resource_type, op, key, "ok", status, began, None, result))

        await one(*work[0])  # alone first, as the reads: a 403 is then one request
        await asyncio.gather(*(one(*item) for item in work[1:]))
        execution.calls = calls.requests - before
        execution.wall_s = time.perf_counter() - started
        context.state.apply(batch)
        report.executed = report.executed.merge(execution)
        context.report.execution = context.report.execution.merge(execution)
        _fail_once(context, report)


def _audit(
    context: CycleContext,
    resource_type: str,
    op: str,
    key: str,
    outcome: Literal["ok", "failed"],
    status: int | None,
    began: float,
    error: str | None,
    result: Any = None,
) -> AuditRecord:
    return AuditRecord(
        resource_type=resource_type,
        operation=op,
        key=key,
        outcome=outcome,
        scim_id=getattr(result, "scim_id", None),
        http_status=status,
        latency_ms=(time.perf_counter() - began) * 1000.0,
        attempts=getattr(result, "attempts", None),
        error=error,
        run_id=context.options.run_id,
        partition=context.options.partition,
    )


class ContainerProvisioning(_PamPhase):
    """Containers created by name; found ones adopted (recorded as managed, no call)."""

    name = "container provisioning"
    kind: str | None = "containers"

    async def run(self, context: CycleContext) -> None:
        report = self._report(context)
        if report is None:
            return
        state = context.state
        work: list[tuple[str, str, str, Callable[[], Awaitable[Any]], Callable[[Any], None]]] = []
        for change in report.plan.containers:
            if change.op == "adopt" and change.scim_id is not None:
                _record_container(state, change.name, change.scim_id, "adopted")
                continue
            payload = resource_payload(Container(name=change.name))

            def create(payload: dict[str, Any] = payload) -> Awaitable[Any]:
                return context.client.create("Containers", payload, match_attribute="name")

            def created(result: Any, name: str = change.name) -> None:
                if result.scim_id is not None:
                    _record_container(state, name, result.scim_id, "adopted" if result.adopted else "created")

            work.append(("Containers", "create", change.name, create, created))
        await self._execute(context, report, work)


class PermissionProvisioning(_PamPhase):
    """Permissions deleted (those left the file, and those whose rights change) then added; adoptions recorded."""

    name = "permission provisioning"
    kind: str | None = "permissions"

    async def run(self, context: CycleContext) -> None:
        report = self._report(context)
        if report is None:
            return
        state = context.state
        managed = ManagedPam.load(state)
        principal_ids = principal_ids_of(state.managed_users(columns=("key_norm", "scim_id")), state.managed_groups())
        deletes: list[tuple[str, str, str, Callable[[], Awaitable[Any]], Callable[[Any], None]]] = []
        adds: list[tuple[str, str, str, Callable[[], Awaitable[Any]], Callable[[Any], None]]] = []
        for change in report.plan.permissions:
            key = f"{change.container} / {change.principal_type} {change.principal}"
            if change.op == "forget" and change.container_id is not None:
                _forget_permission(state, change.container_id, change.principal_type, change.principal_key_norm)
                continue
            container_id = change.container_id or managed.containers.get(change.container.casefold(), ("", None))[1]
            principal_id = principal_ids.get((change.principal_type, change.principal_key_norm))
            if container_id is None or principal_id is None:
                what = "container" if container_id is None else change.principal_type
                report.plan.deferred.append((change.container, change.principal, f"the {what} was not created"))
                continue
            resolved = ManagedPermission(
                container_id=container_id,
                principal_type=change.principal_type,
                principal_key_norm=change.principal_key_norm,
                principal_key=change.principal,
                principal_id=principal_id,
                rights=change.rights,
                scim_id=change.scim_id or "",
            )
            if change.op == "adopt":
                _record_permission(state, resolved)
            elif change.op == "delete" and change.scim_id is not None:
                deletes.append(self._delete(context, report, key, resolved, change.reason == "rights changed"))
            elif change.op == "add":
                adds.append(self._add(context, report, key, resolved))
        await self._execute(context, report, deletes)
        await self._execute(context, report, adds)

    @staticmethod
    def _delete(
        context: CycleContext, report: PamReport, key: str, permission: ManagedPermission, replaced: bool
    ) -> tuple[str, str, str, Callable[[], Awaitable[Any]], Callable[[Any], None]]:
        state = context.state

        def request() -> Awaitable[Any]:
            return context.client.delete("ContainerPermissions", permission.scim_id)

        def done(_result: Any) -> None:
            report.deleted_permissions.add(permission.scim_id)
            if not replaced:
                _forget_permission(
                    state, permission.container_id, permission.principal_type, permission.principal_key_norm
                )

        return ("ContainerPermissions", "delete", key, request, done)

    @staticmethod
    def _add(
        context: CycleContext, report: PamReport, key: str, permission: ManagedPermission
    ) -> tuple[str, str, str, Callable[[], Awaitable[Any]], Callable[[Any], None]]:
        link = ResourceLink(value=permission.principal_id)
        model = ContainerPermission(
            container=ResourceLink(value=permission.container_id),
            user=link if permission.principal_type == "user" else None,
            group=link if permission.principal_type == "group" else None,
            rights=sorted(permission.rights),
        )
        payload = resource_payload(model)
        state = context.state

        def request() -> Awaitable[Any]:
            return context.client.create("ContainerPermissions", payload)

        def done(result: Any) -> None:
            if result.resource is not None:
                report.created_permissions.append(result.resource)
            _record_permission(
                state,
                ManagedPermission(
                    container_id=permission.container_id,
                    principal_type=permission.principal_type,
                    principal_key_norm=permission.principal_key_norm,
                    principal_key=permission.principal_key,
                    principal_id=permission.principal_id,
                    rights=permission.rights,
                    scim_id=str(result.scim_id or ""),
                ),
            )

        return ("ContainerPermissions", "add", key, request, done)


class PlacementProvisioning(_PamPhase):
    """Privileged data attached to (or detached from) containers with a PATCH of ``container``; never created."""

    name = "privileged data placement"
    kind: str | None = "privileged_data"

    async def run(self, context: CycleContext) -> None:
        report = self._report(context)
        if report is None:
            return
        state = context.state
        managed = ManagedPam.load(state)
        work: list[tuple[str, str, str, Callable[[], Awaitable[Any]], Callable[[Any], None]]] = []
        for change in report.plan.placements:
            container_id = change.container_id or managed.containers.get(change.container.casefold(), ("", None))[1]
            if change.op in ("adopt", "forget"):
                _record_placement(
                    state, change.data_id, change.data_key, container_id if change.op == "adopt" else None
                )
                continue
            if container_id is None:
                report.plan.deferred.append((change.container, change.data, "the container was not created"))
                continue
            operations: list[dict[str, Any]] = (
                [{"op": "replace", "path": "container", "value": {"value": container_id}}]
                if change.op == "attach"
                else [{"op": "remove", "path": "container"}]
            )

            def request(data_id: str = change.data_id, operations: list[dict[str, Any]] = operations) -> Awaitable[Any]:
                return context.client.patch("PrivilegedData", data_id, operations)

            def done(_result: Any, change: PlacementChange = change, container_id: str = container_id) -> None:
                placed = container_id if change.op == "attach" else None
                report.placed[change.data_id] = placed
                _record_placement(state, change.data_id, change.data_key, placed)

            work.append(("PrivilegedData", change.op, change.data, request, done))
        await self._execute(context, report, work)


PAM_PHASES = (ContainerProvisioning(), PermissionProvisioning(), PlacementProvisioning())
