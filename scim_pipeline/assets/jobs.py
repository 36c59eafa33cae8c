"""Jobs and schedules, named for the sync tasks Delinea asks customers to run and monitor.

- ``scim_sync`` — the full cycle (users, groups, memberships and, with an access file, containers, permissions and
  privileged data) in one run; the hourly schedule runs it over every shard. ``scim_user_sync`` / ``scim_group_sync``
  / ``scim_permission_sync`` — the user sync, the group sync (groups and memberships) and the permission sync
  (containers, their permissions, privileged-data placement and the access snapshot) alone.
- ``scim_plan`` — a dry run: the roster, the target read and the change sets with their guards; nothing executed.
- ``scim_reconcile`` — a cycle that first reads the whole target: orphans adopted, drift reported and repaired.

Every job runs the same single step (see :mod:`scim_pipeline.assets.cycle`), subset to its assets.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from dagster import (
    AssetSelection,
    DefaultScheduleStatus,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    define_asset_job,
    schedule,
)
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from scim_pipeline.assets.cycle import (
    ALL_CYCLE_ASSETS,
    CHANGE_ASSETS,
    PAM_ASSETS,
    PAM_CHANGE_ASSETS,
    ROSTER_ASSETS,
    CycleAssets,
)
from scim_pipeline.assets.partitions import range_tags

__all__ = [
    "PERMISSION_SYNC_JOB",
    "PLAN_JOB",
    "RECONCILE_JOB",
    "SYNC_JOB",
    "JobNames",
    "build_jobs",
    "build_schedules",
    "cycle_run_config",
]

SYNC_JOB = "scim_sync"
PLAN_JOB = "scim_plan"
RECONCILE_JOB = "scim_reconcile"
USER_SYNC_JOB = "scim_user_sync"
GROUP_SYNC_JOB = "scim_group_sync"
PERMISSION_SYNC_JOB = "scim_permission_sync"


@dataclass(frozen=True)
class JobNames:
    """The job names of one target (suffixed per Component instance)."""

    sync: str = SYNC_JOB
    plan: str = PLAN_JOB
    reconcile: str = RECONCILE_JOB
    user_sync: str = USER_SYNC_JOB
    group_sync: str = GROUP_SYNC_JOB
    permission_sync: str = PERMISSION_SYNC_JOB

    @classmethod
    def for_instance(cls, name: str | None) -> JobNames:
        if not name:
            return cls()
        jobs = (SYNC_JOB, PLAN_JOB, RECONCILE_JOB, USER_SYNC_JOB, GROUP_SYNC_JOB, PERMISSION_SYNC_JOB)
        return cls(*(f"{job}_{name}" for job in jobs))


def cycle_run_config(op_name: str, **values: Any) -> dict[str, Any]:
    """Run config for the sync step (``dry_run``, ``reconcile``, ``allow_mass_changes``)."""
    return {"ops": {op_name: {"config": values}}}


def build_jobs(cycle: CycleAssets, names: JobNames, *, label: str = "") -> list[UnresolvedAssetJobDefinition]:
    everything = AssetSelection.assets(*cycle.selection(*ALL_CYCLE_ASSETS))
    snapshot = ("target_snapshot", "provisioning_audit")
    return [
        define_asset_job(
            names.sync,
            selection=everything,
            description=label
            + "One sync cycle: roster → plan → guards → individual SCIM calls → audit, in one step. Launch it for "
            "all shards (the schedule does), one shard, or backfill a set of shards to onboard them.",
        ),
        define_asset_job(
            names.user_sync,
            selection=AssetSelection.assets(
                *cycle.selection(*ROSTER_ASSETS, *snapshot, "user_changes", "user_provisioning")
            ),
            description=label + "User sync: create, update and deprovision users only.",
        ),
        define_asset_job(
            names.group_sync,
            selection=AssetSelection.assets(
                *cycle.selection(
                    *ROSTER_ASSETS,
                    *snapshot,
                    "group_changes",
                    "membership_changes",
                    "group_provisioning",
                    "membership_provisioning",
                )
            ),
            description=label + "Group sync: groups and their memberships only.",
        ),
        define_asset_job(
            names.permission_sync,
            selection=AssetSelection.assets(*cycle.selection(*ROSTER_ASSETS, *snapshot, *PAM_ASSETS)),
            description=label + "Permission sync: Delinea containers, their permissions and privileged-data "
            "placement from the access file (SCIM_ACCESS), and the access snapshot.",
        ),
        define_asset_job(
            names.plan,
            selection=AssetSelection.assets(
                *cycle.selection(*ROSTER_ASSETS, "target_snapshot", *CHANGE_ASSETS, *PAM_CHANGE_ASSETS)
            ),
            description=label + "Dry run: the roster, the change sets and the guards; nothing is executed.",
        ),
        define_asset_job(
            names.reconcile,
            selection=everything,
            config=cycle_run_config(cycle.op_name, reconcile=True),
            description=label + "A sync cycle that first reads the whole target: orphans adopted, drift repaired.",
        ),
    ]


def build_schedules(
    names: JobNames, shards: int, *, sync_cron: str = "0 * * * *", reconcile_cron: str = "30 3 * * *"
) -> list[ScheduleDefinition]:
    """The sync and the reconciliation, each one run over every shard per tick (stopped until turned on)."""

    def every_shard(job_name: str, schedule_cron: str, description: str) -> ScheduleDefinition:
        @schedule(
            name=f"{job_name}_schedule",
            job_name=job_name,
            cron_schedule=schedule_cron,
            description=description,
            default_status=DefaultScheduleStatus.STOPPED,
        )
        def _schedule(context: ScheduleEvaluationContext) -> Iterator[RunRequest]:
            # One run over the whole shard range: the whole cycle in one step, one audit, one status.
            scheduled = context.scheduled_execution_time
            yield RunRequest(
                run_key=f"{job_name}:{scheduled.isoformat() if scheduled else 'manual'}",
                tags=range_tags(0, shards - 1),
            )

        return _schedule

    return [
        every_shard(names.sync, sync_cron, "Sync every shard (hourly by default)."),
        every_shard(names.reconcile, reconcile_cron, "Daily reconciliation: read the target in full, repair drift."),
    ]
