"""Jobs and schedules: the hourly sync over every shard, the daily reconciliation, and the dry-run plan."""

from collections.abc import Iterator

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

from scim_pipeline.assets.partitions import range_tags
from scim_pipeline.assets.sync_assets import SyncAssets

SYNC_JOB = "scim_sync"
PLAN_JOB = "scim_plan"
RECONCILE_JOB = "scim_reconcile"
RECONCILE_RUN_CONFIG = {"ops": {"target_snapshot": {"config": {"reconcile": True}}}}


def build_jobs(sync_assets: SyncAssets, *, demo: bool = False) -> list[UnresolvedAssetJobDefinition]:
    """The sync job (everything), the plan job (change sets only) and the reconciliation job."""
    label = "[DEMO MODE: embedded emulator + sample roster] " if demo else ""
    everything = AssetSelection.assets(*sync_assets.change_keys, *sync_assets.provisioning_keys)
    return [
        define_asset_job(
            SYNC_JOB,
            selection=everything,
            description=label
            + "One sync cycle: roster → change sets → individual SCIM calls → audit. Launch it for one "
            "shard, a range, or backfill any set of shards to onboard a population shard by shard.",
        ),
        define_asset_job(
            PLAN_JOB,
            selection=AssetSelection.assets(*sync_assets.change_keys),
            description=label + "Dry run: materialize the change sets and the guards, execute nothing.",
        ),
        define_asset_job(
            RECONCILE_JOB,
            selection=everything,
            config=RECONCILE_RUN_CONFIG,
            description=label + "A sync cycle that first reads the whole target and reports and repairs drift.",
        ),
    ]


def build_schedules(shards: int, *, cron: str = "0 * * * *") -> list[ScheduleDefinition]:
    """Hourly: one run over every shard. Daily: a reconciling run over every shard."""

    def every_shard(job_name: str, schedule_cron: str, description: str) -> ScheduleDefinition:
        @schedule(
            name=f"{job_name}_schedule",
            job_name=job_name,
            cron_schedule=schedule_cron,
            description=description,
            default_status=DefaultScheduleStatus.STOPPED,
        )
        def _schedule(context: ScheduleEvaluationContext) -> Iterator[RunRequest]:
            # One run covering the whole shard range keeps the cycle atomic in the UI: groups before memberships,
            # one audit, one red or green status.
            scheduled = context.scheduled_execution_time
            yield RunRequest(
                run_key=f"{job_name}:{scheduled.isoformat() if scheduled else 'manual'}",
                tags=range_tags(0, shards - 1),
            )

        return _schedule

    return [
        every_shard(SYNC_JOB, cron, "Sync every shard (hourly by default)."),
        every_shard(
            RECONCILE_JOB,
            "30 3 * * *",
            "Daily reconciliation: read the target in full, repair drift.",
        ),
    ]
