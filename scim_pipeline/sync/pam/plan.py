"""The PAM change sets: what brings the target to the access file, planned from what we manage and what the cycle
read — one pandas frame per kind, like the users', groups' and memberships' change sets.

Every frame has ``op``, ``key`` (what a person reads: a container's name, ``<container> / <type> <principal>``, the
privileged data as the file names it), ``key_norm`` (the escrow key the executor holds a failing object by),
``scim_id``, ``reason`` and ``payload`` (JSON: what is sent); then per kind:

- ``containers`` (:data:`CONTAINER_COLUMNS`): ``create`` (``payload``: the POST body) or ``adopt`` (found by name:
  recorded, no call; ``scim_id`` the one found). ``key_norm`` is the casefolded name.
- ``permissions`` (:data:`PERMISSION_COLUMNS`): ``add`` (``payload``: the POST body, once the container and the
  principal have ids), ``delete`` (``scim_id``: the permission's; ``reason`` ``rights changed`` when an add of the
  file's rights follows, ``left the access file`` otherwise), ``adopt`` (already there with the file's rights: no
  call), ``forget`` (ours, already gone from the target: no call). ``container``, ``container_id`` (None: created in
  this cycle), ``principal_type`` (``user``/``group``), ``principal`` (the roster key), ``principal_key_norm``,
  ``principal_id`` (its SCIM id, or :data:`PLACEHOLDER_ID` for one created in this cycle), ``rights`` (JSON sorted
  list). ``key_norm`` is the slot's escrow key (:func:`~scim_pipeline.sync.state.pam_tables.permission_slot_key`),
  set once the container id is known.
- ``placements`` (:data:`PLACEMENT_COLUMNS`): ``attach`` / ``detach`` (``payload``: the PATCH operations of
  ``container``), ``adopt`` (already in the file's container: no call), ``forget`` (no longer where we put it: no
  call). ``scim_id`` and ``key_norm`` are the privileged data's id; ``data_key`` how the state store names it;
  ``container``, ``container_id``.

The plan never renames or deletes a container (drift, to fix by hand), never edits a permission in place (a delete
and an add), never creates privileged data (drift if missing).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from scim_pipeline.scim.models import Container, ContainerPermission, ResourceLink, resource_payload
from scim_pipeline.sync.pam.access import AccessFile, DesiredPermission
from scim_pipeline.sync.pam.managed import ManagedPam
from scim_pipeline.sync.pam.read import TargetAccess
from scim_pipeline.sync.plan.guards import GuardResult, GuardSettings
from scim_pipeline.sync.state.pam_tables import permission_slot_key

__all__ = [
    "CONTAINER_COLUMNS",
    "PAM_KINDS",
    "PERMISSION_COLUMNS",
    "PLACEHOLDER_ID",
    "PLACEMENT_COLUMNS",
    "PamPlan",
    "PrincipalKey",
    "attach_payload",
    "permission_guard",
    "permission_payload",
    "plan_access",
    "principal_of",
    "rights_of",
]

PAM_KINDS = frozenset({"containers", "permissions", "privileged_data"})
PLACEHOLDER_ID = "(created in this cycle)"
PrincipalKey = tuple[str, str]
"""(principal type, casefolded roster key)."""

_COMMON = ("op", "key", "key_norm", "scim_id", "reason", "payload")
CONTAINER_COLUMNS: tuple[str, ...] = _COMMON
PERMISSION_COLUMNS: tuple[str, ...] = (
    *_COMMON,
    "container",
    "container_id",
    "principal_type",
    "principal",
    "principal_key_norm",
    "principal_id",
    "rights",
)
PLACEMENT_COLUMNS: tuple[str, ...] = (*_COMMON, "data_key", "container", "container_id")
_KIND_COLUMNS = {
    "containers": CONTAINER_COLUMNS,
    "permissions": PERMISSION_COLUMNS,
    "privileged_data": PLACEMENT_COLUMNS,
}


def change_frame(kind: str, rows: Iterable[Mapping[str, Any]] = ()) -> pd.DataFrame:
    """A change frame of ``kind`` (``containers``, ``permissions``, ``privileged_data``): its columns, text typed."""
    columns = list(_KIND_COLUMNS[kind])
    built = pd.DataFrame([{name: row.get(name) for name in columns} for row in rows], columns=columns)
    return built.astype(dict.fromkeys(columns, "object"))


@dataclass
class PamPlan:
    containers: pd.DataFrame = field(default_factory=lambda: change_frame("containers"))
    permissions: pd.DataFrame = field(default_factory=lambda: change_frame("permissions"))
    placements: pd.DataFrame = field(default_factory=lambda: change_frame("privileged_data"))
    drift: list[tuple[str, str, str]] = field(default_factory=list)
    """(resource type, key, what to fix by hand)."""
    deferred: list[tuple[str, str, str]] = field(default_factory=list)
    """(container, principal, why not written in this cycle)."""

    def frame_of(self, kind: str) -> pd.DataFrame:
        return {"containers": self.containers, "permissions": self.permissions, "privileged_data": self.placements}[
            kind
        ]

    def count(self, kind: str, op: str) -> int:
        return int(self.frame_of(kind)["op"].eq(op).sum())

    @property
    def permission_removals(self) -> int:
        """Permissions deleted for good (not replaced by other rights in this cycle): what the guard counts."""
        permissions = self.permissions
        return int((permissions["op"].eq("delete") & permissions["reason"].ne("rights changed")).sum())


def rights_of(resource: Mapping[str, Any]) -> frozenset[str]:
    rights = resource.get("rights")
    if isinstance(rights, str):
        return frozenset({rights})
    return frozenset(str(r) for r in rights) if isinstance(rights, list) else frozenset()


def principal_of(resource: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """(type, SCIM id, display) of a permission's principal."""
    for kind in ("group", "user"):
        link = resource.get(kind)
        if isinstance(link, dict) and isinstance(link.get("value"), str):
            return kind, str(link["value"]), str(link.get("display") or link["value"])
    return None


def permission_payload(container_id: str, principal_type: str, principal_id: str, rights: Iterable[str]) -> str:
    """The POST body of a permission (JSON)."""
    link = ResourceLink(value=principal_id)
    model = ContainerPermission(
        container=ResourceLink(value=container_id),
        user=link if principal_type == "user" else None,
        group=link if principal_type == "group" else None,
        rights=sorted(rights),
    )
    return json.dumps(resource_payload(model))


def attach_payload(op: str, container_id: str | None) -> str:
    """The PATCH operations that attach privileged data to a container, or detach it (JSON)."""
    if op == "attach":
        return json.dumps([{"op": "replace", "path": "container", "value": {"value": container_id}}])
    return json.dumps([{"op": "remove", "path": "container"}])


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

    containers: list[dict[str, Any]] = []
    container_ids: dict[str, str | None] = {}
    for container in access.containers:
        found = target.containers.get(container.name_norm)
        if container.name_norm not in target.containers:
            continue  # not read (a 403 stopped the read): nothing is planned for it
        base = {"key": container.name, "key_norm": container.name_norm, "reason": ""}
        if found is None:
            if container.scim_id is not None:
                plan.drift.append(
                    ("Containers", container.name, f"no container with id {container.scim_id} on the target")
                )
                continue
            if "containers" in wanted_kinds:
                payload = json.dumps(resource_payload(Container(name=container.name)))
                containers.append(base | {"op": "create", "payload": payload})
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
            containers.append(base | {"op": "adopt", "scim_id": found.scim_id})
        container_ids[container.name_norm] = found.scim_id
    plan.containers = change_frame("containers", containers)
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
        plan.permissions = _plan_permissions(access, managed, target, principal_ids, container_ids, names_by_id, plan)
    if "privileged_data" in wanted_kinds and target.privileged_data is not None:
        plan.placements = _plan_placements(access, managed, target, container_ids, names_by_id, plan)
    return plan


def permission_row(
    op: str,
    *,
    container: str,
    container_id: str | None,
    principal_type: str,
    principal: str,
    principal_key_norm: str,
    principal_id: str | None,
    rights: Iterable[str],
    scim_id: str | None = None,
    reason: str = "",
) -> dict[str, Any]:
    """One permission change row (see the module docstring); the payload of an add is set once its ids are known."""
    ready = container_id is not None and principal_id is not None and principal_id != PLACEHOLDER_ID
    return {
        "op": op,
        "key": f"{container} / {principal_type} {principal}",
        "key_norm": None
        if container_id is None
        else permission_slot_key(container_id, principal_type, principal_key_norm),
        "scim_id": scim_id,
        "reason": reason,
        "payload": (
            permission_payload(str(container_id), principal_type, str(principal_id), rights)
            if op == "add" and ready
            else None
        ),
        "container": container,
        "container_id": container_id,
        "principal_type": principal_type,
        "principal": principal,
        "principal_key_norm": principal_key_norm,
        "principal_id": principal_id,
        "rights": json.dumps(sorted(rights)),
    }


def _plan_permissions(
    access: AccessFile,
    managed: ManagedPam,
    target: TargetAccess,
    principal_ids: Mapping[PrincipalKey, str],
    container_ids: Mapping[str, str | None],
    names_by_id: Mapping[str, str],
    plan: PamPlan,
) -> pd.DataFrame:
    rows: list[dict[str, Any]] = []
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

        def change(
            op: str,
            scim_id: str | None,
            reason: str,
            *,
            rights: frozenset[str] | None = None,
            permission: DesiredPermission = permission,
            container_id: str | None = container_id,
            principal_id: str = principal_id,
        ) -> dict[str, Any]:
            return permission_row(
                op,
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

        if container_id is None:
            rows.append(change("add", None, ""))
            continue
        slot: tuple[str, str, str] = (container_id, permission.principal_type, permission.principal_key_norm)
        desired_slots.add(slot)
        current = [
            p
            for p in target.permissions.get(container_id, [])
            if (principal := principal_of(p)) is not None
            and principal[0] == permission.principal_type
            and principal[1] == principal_id
        ]
        if not current:
            rows.append(change("add", None, ""))
            continue
        ours = managed_by_slot.get(slot)
        same = [p for p in current if rights_of(p) == permission.rights]
        for other in current:
            if other in same[:1]:
                continue
            # Never edited in place: other rights are deleted, the file's are added below.
            rows.append(change("delete", str(other.get("id")), "rights changed", rights=rights_of(other)))
        if same:
            if ours is None or ours.scim_id != same[0].get("id") or ours.rights != permission.rights:
                rows.append(change("adopt", str(same[0].get("id")), ""))
        else:
            rows.append(change("add", None, ""))

    planned_containers = {cid for cid in container_ids.values() if cid is not None}
    for ours in managed.permissions:
        slot = (ours.container_id, ours.principal_type, ours.principal_key_norm)
        if slot in desired_slots or ours.container_id not in planned_containers:
            continue  # still wanted; or its container left the file, drifted or was not read (a 403)
        container = names_by_id.get(ours.container_id, ours.container_id)
        if access.is_held(container.casefold(), ours.principal_type, ours.principal_key_norm):
            continue
        present = any(p.get("id") == ours.scim_id for p in target.permissions[ours.container_id])
        rows.append(
            permission_row(
                "delete" if present else "forget",
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
        )
    return change_frame("permissions", rows)


def _placement_row(
    op: str, data: str, data_key: str, data_id: str, container: str, container_id: str | None, reason: str = ""
) -> dict[str, Any]:
    ready = op == "detach" or container_id is not None
    return {
        "op": op,
        "key": data,
        "key_norm": data_id,
        "scim_id": data_id,
        "reason": reason,
        "payload": attach_payload(op, container_id) if op in ("attach", "detach") and ready else None,
        "data_key": data_key,
        "container": container,
        "container_id": container_id,
    }


def _plan_placements(
    access: AccessFile,
    managed: ManagedPam,
    target: TargetAccess,
    container_ids: Mapping[str, str | None],
    names_by_id: Mapping[str, str],
    plan: PamPlan,
) -> pd.DataFrame:
    rows: list[dict[str, Any]] = []
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
            rows.append(
                _placement_row("attach", placement.data, placement.data_key, data_id, placement.container, container_id)
            )
        elif managed.placements.get(data_id, ("", ""))[1] != container_id:
            rows.append(
                _placement_row("adopt", placement.data, placement.data_key, data_id, placement.container, container_id)
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
        op = "detach" if current == container_id else "forget"
        rows.append(_placement_row(op, data_key, data_key, data_id, container, container_id, "left the file"))
    return change_frame("privileged_data", rows)


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
