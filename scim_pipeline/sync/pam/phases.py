"""The PAM kinds' part of a cycle: read and plan (in the cycle's planning step, so the guards see the whole plan),
then three execution phases — containers, permissions, privileged data — each handing the executor a
:class:`~scim_pipeline.sync.execute.executor.PamChangeSet` through the cycle's own ``execute`` (the same pool,
circuit breaker, escrow, audit, progress and state batches as the users').

The phases see the cycle through :class:`PamCycle`, a protocol :class:`~scim_pipeline.sync.cycle.CycleContext`
meets: this package never imports the cycle.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

import pandas as pd

from scim_pipeline.sync.execute.executor import ExecutionReport, PamChangeSet
from scim_pipeline.sync.pam.managed import ManagedPam
from scim_pipeline.sync.pam.plan import (
    PAM_KINDS,
    PLACEHOLDER_ID,
    PrincipalKey,
    attach_payload,
    change_frame,
    permission_guard,
    permission_payload,
    plan_access,
)
from scim_pipeline.sync.pam.read import PamReads, read_target_access
from scim_pipeline.sync.pam.report import PamReport
from scim_pipeline.sync.state.pam_tables import permission_slot_key

if TYPE_CHECKING:
    from scim_pipeline.scim.client import ScimClient
    from scim_pipeline.sync.pam.access import AccessFile
    from scim_pipeline.sync.plan.changes import ChangeSet
    from scim_pipeline.sync.plan.guards import GuardSettings
    from scim_pipeline.sync.state import ProvisioningState

__all__ = [
    "PAM_PHASES",
    "ContainerProvisioning",
    "PamCycle",
    "PermissionProvisioning",
    "PlacementProvisioning",
    "plan_pam",
    "principal_ids_of",
]


class _Options(Protocol):
    @property
    def kinds(self) -> frozenset[str]: ...
    @property
    def guards(self) -> GuardSettings | None: ...


class _Report(Protocol):
    pam: PamReport | None
    execution: ExecutionReport


class PamCycle(Protocol):
    """What the PAM phases use of a cycle (:class:`~scim_pipeline.sync.cycle.CycleContext`)."""

    @property
    def client(self) -> ScimClient: ...
    @property
    def state(self) -> ProvisioningState: ...
    @property
    def access(self) -> AccessFile | None: ...
    @property
    def options(self) -> _Options: ...
    @property
    def report(self) -> _Report: ...

    async def execute(self, change_set: ChangeSet | PamChangeSet) -> ExecutionReport: ...


async def plan_pam(context: PamCycle, principal_ids: Mapping[PrincipalKey, str]) -> PamReport | None:
    """Read the target and plan the PAM kinds (part of the cycle's planning step)."""
    access = context.access
    if access is None or not (context.options.kinds & PAM_KINDS):
        return None
    managed = ManagedPam.load(context.state)
    reads = PamReads(context.client)
    started = time.perf_counter()
    target = await read_target_access(context.client, access, managed, reads=reads)
    plan = plan_access(access, managed, target, principal_ids, kinds=context.options.kinds)
    report = PamReport(access=access, managed=managed, target=target, plan=plan, stop=reads.stop)
    report.read_s = time.perf_counter() - started
    report.guard = permission_guard(plan, managed, context.options.guards)
    failures = [*([target.forbidden] if target.forbidden is not None else []), *target.failures]
    if failures:
        # Reported once, here: the executor sends no PAM request after a 403.
        context.report.execution = context.report.execution.merge(ExecutionReport(failures=failures))
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


class _PamPhase:
    kind: str | None = None
    name = ""

    @staticmethod
    def _report(context: PamCycle) -> PamReport | None:
        report = context.report.pam
        if report is None or report.stop.tripped:
            return None
        return report

    @staticmethod
    async def _execute(
        context: PamCycle,
        report: PamReport,
        *,
        containers: pd.DataFrame | None = None,
        permissions: pd.DataFrame | None = None,
        placements: pd.DataFrame | None = None,
    ) -> None:
        changes = PamChangeSet(
            containers=change_frame("containers") if containers is None else containers,
            permissions=change_frame("permissions") if permissions is None else permissions,
            placements=change_frame("privileged_data") if placements is None else placements,
            stop=report.stop,
            confirmed=report.confirm,
        )
        if changes.is_empty:
            return
        result = await context.execute(changes)
        report.executed = report.executed.merge(result)


def _created_container_ids(context: PamCycle) -> dict[str, str]:
    """name_norm → SCIM id of the containers we manage now (those created in this cycle included)."""
    return {name_norm: scim_id for name_norm, (_name, scim_id) in ManagedPam.load(context.state).containers.items()}


class ContainerProvisioning(_PamPhase):
    """Containers created by name; found ones adopted (recorded as managed, no call)."""

    name = "container provisioning"
    kind: str | None = "containers"

    async def run(self, context: PamCycle) -> None:
        report = self._report(context)
        if report is not None:
            await self._execute(context, report, containers=report.plan.containers)


class PermissionProvisioning(_PamPhase):
    """Permissions deleted (those left the file, and those whose rights change) then added; adoptions recorded.
    Containers and principals created earlier in this cycle get their ids here; what still has none is deferred."""

    name = "permission provisioning"
    kind: str | None = "permissions"

    async def run(self, context: PamCycle) -> None:
        report = self._report(context)
        if report is None or report.plan.permissions.empty:
            return
        state = context.state
        container_ids = _created_container_ids(context)
        principal_ids = principal_ids_of(state.managed_users(columns=("key_norm", "scim_id")), state.managed_groups())
        rows = report.plan.permissions.copy()
        ready = []
        for index, row in rows.iterrows():
            container_id = row["container_id"]
            if container_id is None or pd.isna(container_id):
                container_id = container_ids.get(str(row["container"]).casefold())
            principal_id = principal_ids.get((str(row["principal_type"]), str(row["principal_key_norm"])))
            if row["op"] in ("delete", "forget"):
                principal_id = principal_id or row["principal_id"]
            if container_id is None or principal_id is None or principal_id == PLACEHOLDER_ID:
                what = "container" if container_id is None else str(row["principal_type"])
                report.plan.deferred.append(
                    (str(row["container"]), str(row["principal"]), f"the {what} was not created")
                )
                continue
            rows.at[index, "container_id"] = container_id
            rows.at[index, "principal_id"] = principal_id
            rows.at[index, "key_norm"] = permission_slot_key(
                container_id, str(row["principal_type"]), str(row["principal_key_norm"])
            )
            if row["op"] == "add":
                rights = json.loads(str(row["rights"]))
                rows.at[index, "payload"] = permission_payload(
                    container_id, str(row["principal_type"]), principal_id, rights
                )
            ready.append(index)
        await self._execute(context, report, permissions=rows.loc[ready])


class PlacementProvisioning(_PamPhase):
    """Privileged data attached to (or detached from) containers with a PATCH of ``container``; never created."""

    name = "privileged data placement"
    kind: str | None = "privileged_data"

    async def run(self, context: PamCycle) -> None:
        report = self._report(context)
        if report is None or report.plan.placements.empty:
            return
        container_ids = _created_container_ids(context)
        rows = report.plan.placements.copy()
        ready = []
        for index, row in rows.iterrows():
            container_id = row["container_id"]
            if container_id is None or pd.isna(container_id):
                container_id = container_ids.get(str(row["container"]).casefold())
            if container_id is None:
                report.plan.deferred.append((str(row["container"]), str(row["key"]), "the container was not created"))
                continue
            rows.at[index, "container_id"] = container_id
            if row["op"] == "attach":
                rows.at[index, "payload"] = attach_payload("attach", container_id)
            ready.append(index)
        await self._execute(context, report, placements=rows.loc[ready])


PAM_PHASES = (ContainerProvisioning(), PermissionProvisioning(), PlacementProvisioning())
