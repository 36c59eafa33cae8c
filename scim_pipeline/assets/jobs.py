"""Jobs and schedules, named for the sync tasks Delinea asks customers to run and monitor.

- ``scim_sync`` — the full cycle (users, groups, memberships and, with an access file, containers, permissions and
  privileged data) in one run; the hourly schedule runs it. ``scim_user_sync`` / ``scim_group_sync`` /
  ``scim_permission_sync`` — the user sync, the group sync (groups and memberships) and the permission sync
  (containers, their permissions, privileged-data placement and the access snapshot) alone.
- ``scim_plan`` — a dry run (``dry_run: true``): the roster, the change sets and their guards; nothing executed.
- ``scim_reconcile`` — a cycle that first reads the whole target: orphans adopted, drift reported and repaired.

Every job runs the same single step (see :mod:`scim_pipeline.assets.cycle`), subset to its assets, and every job
runs without a partition (= every shard): from the Launchpad, ``dagster job execute``, the schedules and the CLI.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from dagster import (
    AssetChecksDefinition,
    AssetSelection,
    DefaultScheduleStatus,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    define_asset_job,
    schedule,
)

from scim_pipeline.assets.catalogue import ASSETS
from scim_pipeline.assets.cycle import DRY_RUN_TAG, RECONCILE_TAG, CycleAssets

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

_ROSTER = ("roster_rejections",)
_PAM = frozenset({"containers", "permissions", "privileged_data", "access"})


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


def _names(*, kinds: frozenset[str] | None = None, stages: tuple[str, ...] | None = None) -> list[str]:
    return [
        asset.name
        for asset in ASSETS
        if (kinds is None or asset.kind in kinds or asset.name in _ROSTER) and (stages is None or asset.stage in stages)
    ]


def build_jobs(
    cycle: CycleAssets, names: JobNames, *, label: str = "", without_checks: Sequence[AssetChecksDefinition] = ()
) -> list[Any]:
    """The six jobs of one target (``define_asset_job`` results, resolved by ``Definitions``). ``without_checks``:
    checks defined apart from the step (the health job's) that these jobs leave out."""

    def assets(*catalogue_names: str) -> AssetSelection:
        selection = AssetSelection.assets(*cycle.selection(*catalogue_names))
        return selection - AssetSelection.checks(*without_checks) if without_checks else selection

    everything = assets(*(asset.name for asset in ASSETS))
    return [
        define_asset_job(
            names.sync,
            selection=everything,
            description=label
            + "One sync cycle: roster → plan → guards → individual SCIM calls → audit, in one step. Launch it "
            "without a partition for every shard (the schedule does), for one shard, or backfill shards to onboard.",
        ),
        define_asset_job(
            names.user_sync,
            selection=assets(*_names(kinds=frozenset({"users"})), "provisioning_audit"),
            description=label + "User sync: create, update and deprovision users only.",
        ),
        define_asset_job(
            names.group_sync,
            selection=assets(*_names(kinds=frozenset({"groups", "memberships"})), "provisioning_audit"),
            description=label + "Group sync: groups and their memberships only.",
        ),
        define_asset_job(
            names.permission_sync,
            selection=assets("idp_groups", *_names(kinds=_PAM), "provisioning_audit"),
            description=label + "Permission sync: Delinea containers, their permissions and privileged-data "
            "placement from the access file (SCIM_ACCESS), and the access snapshot.",
        ),
        define_asset_job(
            names.plan,
            selection=assets(*_names(stages=("idp", "changes"))),
            tags={DRY_RUN_TAG: "true"},
            description=label + "Dry run: the roster, the change sets and the guards; nothing is executed.",
        ),
        define_asset_job(
            names.reconcile,
            selection=everything,
            tags={RECONCILE_TAG: "true"},
            description=label + "A sync cycle that first reads the whole target: orphans adopted, drift repaired.",
        ),
    ]


def build_schedules(
    names: JobNames, *, sync_cron: str = "0 * * * *", reconcile_cron: str = "30 3 * * *"
) -> list[ScheduleDefinition]:
    """The sync and the reconciliation, each one run over every shard per tick (stopped until turned on)."""

    def whole_cycle(job_name: str, schedule_cron: str, description: str) -> ScheduleDefinition:
        @schedule(
            name=f"{job_name}_schedule",
            job_name=job_name,
            cron_schedule=schedule_cron,
            description=description,
            default_status=DefaultScheduleStatus.STOPPED,
        )
        def _schedule(context: ScheduleEvaluationContext) -> Iterator[RunRequest]:
            # One run without a partition: every shard, the whole cycle in one step, one audit, one status.
            scheduled = context.scheduled_execution_time
            yield RunRequest(run_key=f"{job_name}:{scheduled.isoformat() if scheduled else 'manual'}")

        return _schedule

    return [
        whole_cycle(names.sync, sync_cron, "Sync every shard (hourly by default)."),
        whole_cycle(names.reconcile, reconcile_cron, "Daily reconciliation: read the target in full, repair drift."),
    ]
