"""The leaver sensor: a leaver is disabled on the target within a minute, not at the next hourly sync.

Every ``SCIM_LEAVER_POLL_SECONDS`` (15 s) the sensor asks the roster source for its cheap change signal
(:mod:`scim_pipeline.sources._signal`: file times and sizes, LDAP ``contextCSN`` / ``highestCommittedUSN``, a SQL
query) — never the SCIM target, so an idle poll costs the target nothing — and keeps it in its cursor:

- the first evaluation only records the signal (switching the sensor on must not start a sync by itself; what
  changed before it was on is the scheduled sync's);
- an unchanged signal skips with a reason;
- a changed one launches the target's user sync (``scim_user_sync``), run key derived from the old and new signal,
  and moves the cursor — unless a run of this target's jobs is queued or in progress: then the sensor skips and
  keeps the old cursor, so the change is launched as soon as that run ends (a run that read the roster before the
  change would not have seen it). The engine's writer lease stays the one-writer guarantee for everything else
  (a backfill, the CLI, another location): a second writer waits for it (``SCIM_LEASE_WAIT``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from dagster import (
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from scim_pipeline.assets.jobs import JobNames
from scim_pipeline.resources.pipeline import RosterSourceResource
from scim_pipeline.sources._signal import change_signal

__all__ = ["LEAVER_SENSOR", "LEAVER_TRIGGER_TAG", "build_leaver_sensor"]

LEAVER_SENSOR = "scim_leaver_sensor"
#: Tag on the runs the sensor launches (the UI's run list can filter on it).
LEAVER_TRIGGER_TAG = "scim/trigger"

#: A run in one of these states still reads or writes the target.
_ACTIVE = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
]


def _writing_jobs(names: JobNames) -> tuple[str, ...]:
    """The jobs of one target that write to it (the dry run does not)."""
    return (names.sync, names.user_sync, names.group_sync, names.permission_sync, names.reconcile)


def _active_run(context: SensorEvaluationContext, jobs: Iterable[str]) -> str | None:
    """A queued or running run of ``jobs`` (``"job run-id"``), or None."""
    for job in jobs:
        runs = context.instance.get_runs(filters=RunsFilter(job_name=job, statuses=_ACTIVE), limit=1)
        if runs:
            return f"{job} {runs[0].run_id[:8]} ({runs[0].status.value})"
    return None


def build_leaver_sensor(
    names: JobNames,
    roster: RosterSourceResource,
    *,
    poll_seconds: int,
    running: bool,
    suffix: str = "",
) -> SensorDefinition:
    """The leaver sensor of one target: polls ``roster``'s change signal, launches ``names.user_sync``."""

    @sensor(
        name=f"{LEAVER_SENSOR}{suffix}",
        job_name=names.user_sync,
        minimum_interval_seconds=poll_seconds,
        default_status=DefaultSensorStatus.RUNNING if running else DefaultSensorStatus.STOPPED,
        description=f"Leavers within a minute: every {poll_seconds} s, polls the roster source's change signal (no "
        f"call to the SCIM target) and launches {names.user_sync} when it moved. SCIM_LEAVER_SENSOR=true starts "
        "it with the location.",
    )
    def _leaver_sensor(context: SensorEvaluationContext) -> SensorResult | SkipReason:
        signal = change_signal(roster.roster_source(instance=context.instance))
        previous = context.cursor
        if previous is None:
            return SensorResult(
                skip_reason=f"first poll: recorded the change signal ({signal.probe}); a later change launches "
                f"{names.user_sync}",
                cursor=signal.value,
            )
        if signal.value == previous:
            return SkipReason(f"no change ({signal.probe}, {signal.requests} source requests, 0 SCIM requests)")
        active = _active_run(context, _writing_jobs(names))
        if active is not None:
            # The cursor stays: the change is launched once that run has ended.
            return SkipReason(f"the source changed ({signal.probe}) but {active} is queued or running; next poll")
        run_key = hashlib.sha256(f"{previous}>{signal.value}".encode()).hexdigest()[:24]
        return SensorResult(
            run_requests=[
                RunRequest(
                    run_key=f"leaver-{run_key}",
                    tags={LEAVER_TRIGGER_TAG: "leaver_sensor", "scim/change_signal": signal.value},
                )
            ],
            cursor=signal.value,
        )

    return _leaver_sensor
