"""What the PAM kinds of one cycle read, planned and did (:class:`PamReport`), and the access snapshot: the cycle's
one read with the confirmed answers of its own calls applied — every managed container's permissions, one row per
right, managed by us or not — no second read."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from scim_pipeline.scim.client import ScimResult
from scim_pipeline.sync.execute.executor import ExecutionReport, ForbiddenStop
from scim_pipeline.sync.pam.access import AccessFile
from scim_pipeline.sync.pam.managed import ManagedPam
from scim_pipeline.sync.pam.plan import PamPlan, principal_of, rights_of
from scim_pipeline.sync.pam.read import TargetAccess
from scim_pipeline.sync.plan.guards import GuardResult
from scim_pipeline.sync.state import ProvisioningState

__all__ = ["DRIFT_COLUMNS", "PLACEMENT_SNAPSHOT_COLUMNS", "SNAPSHOT_COLUMNS", "PamReport"]

SNAPSHOT_COLUMNS = ("container", "container_id", "principal_type", "principal", "principal_id", "right", "managed")
PLACEMENT_SNAPSHOT_COLUMNS = ("container", "container_id", "privileged_data", "data_id", "managed")
DRIFT_COLUMNS = ("resource_type", "key", "attribute")


@dataclass
class PamReport:
    """What the PAM kinds of one cycle read, planned and did."""

    access: AccessFile
    managed: ManagedPam
    target: TargetAccess
    plan: PamPlan
    stop: ForbiddenStop
    """The cycle's first 403, shared by its PAM reads and calls."""
    guard: GuardResult | None = None
    executed: ExecutionReport = field(default_factory=ExecutionReport)
    """The PAM calls of the cycle (also merged into the cycle's execution report)."""
    created_permissions: list[dict[str, Any]] = field(default_factory=list)
    deleted_permissions: set[str] = field(default_factory=set)
    placed: dict[str, str | None] = field(default_factory=dict)
    """data id → container id after this cycle's attaches (None: detached)."""
    read_s: float = 0.0
    access_snapshot: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(SNAPSHOT_COLUMNS)))
    """Every read container's permissions after this cycle, one row per right (see the module docstring)."""
    placement_snapshot: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=list(PLACEMENT_SNAPSHOT_COLUMNS))
    )
    access_drift: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(DRIFT_COLUMNS)))
    """The snapshot against the access file."""

    def confirm(self, row: Any, result: ScimResult) -> None:
        """Apply one confirmed PAM answer to what the snapshot shows (the executor's ``confirmed`` callback)."""
        if row.op == "add" and result.resource is not None:
            self.created_permissions.append(result.resource)
        elif row.op == "delete":
            self.deleted_permissions.add(str(row.scim_id))
        elif row.op in ("attach", "detach"):
            self.placed[str(row.scim_id)] = str(row.container_id) if row.op == "attach" else None

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
        for op, name in self.plan.containers[["op", "key"]].itertuples(index=False):
            rows.append({"kind": "container", "op": str(op), "key": str(name), "detail": ""})
        permissions = self.plan.permissions
        for op, container, principal_type, principal, rights, reason in permissions[
            ["op", "container", "principal_type", "principal", "rights", "reason"]
        ].itertuples(index=False):
            if op == "forget":
                continue
            detail = f"{', '.join(json.loads(str(rights)))} on {container}" + (f" ({reason})" if reason else "")
            rows.append({"kind": "permission", "op": str(op), "key": f"{principal_type} {principal}", "detail": detail})
        for op, data, container in self.plan.placements[["op", "key", "container"]].itertuples(index=False):
            if op == "forget":
                continue
            detail = f"{'to' if op != 'detach' else 'from'} {container}"
            rows.append({"kind": "privileged_data", "op": str(op), "key": str(data), "detail": detail})
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
                principal = principal_of(permission)
                if principal is None:
                    continue
                for right in sorted(rights_of(permission)):
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
            return pd.DataFrame(columns=list(PLACEMENT_SNAPSHOT_COLUMNS))
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
        return pd.DataFrame(rows, columns=list(PLACEMENT_SNAPSHOT_COLUMNS))

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
