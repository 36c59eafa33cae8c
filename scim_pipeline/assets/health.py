"""A target's health, in the UI: is the sync on time, are changes piling up in escrow, did the last cycle fail much,
could it obtain its token.

- **Freshness** — the provisioning assets carry a Dagster :class:`~dagster.FreshnessPolicy` (evaluated by the
  daemon's freshness evaluation, shown as the asset's freshness) and a ``freshness_check`` (Dagster's
  last-update freshness check, run by the health job): both fail once the assets were last materialized
  ``SCIM_OVERDUE_PERIODS`` periods of the sync schedule ago.
- **escrow_age** (health job, and after each sync in the same run) — fails when a change has kept failing for longer
  than ``SCIM_ESCROW_MAX_AGE`` hours; lists whose changes they are, since when and the last error.
- **failure_share** and **token_obtained** (the sync step itself, from its
  :class:`~scim_pipeline.sync.cycle.CycleReport`) — the share of the cycle's calls that failed against
  ``SCIM_MAX_FAILURE_SHARE``, and whether the token the cycle obtains first was granted.

Each failing check names whom it concerns in its ``for_whom`` metadata, which the alerts
(:mod:`scim_pipeline.assets.alerts`) pass on. Every text from a server goes through
:func:`~scim_pipeline.scim.redaction.scrub` first.
"""

import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence, Set
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pandas as pd
import sqlalchemy as sa
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckKey,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetKey,
    AssetSelection,
    AssetSpec,
    DefaultScheduleStatus,
    FreshnessPolicy,
    MetadataValue,
    ScheduleDefinition,
    SupersessionWarning,
    apply_freshness_policy,
    build_last_update_freshness_checks,
    define_asset_job,
    multi_asset_check,
)

from scim_pipeline.assets.catalogue import CHECKS, CheckEntry
from scim_pipeline.assets.render import rows_table
from scim_pipeline.scim.errors import AuthenticationError, CredentialsRefused
from scim_pipeline.scim.redaction import scrub

if TYPE_CHECKING:
    from scim_pipeline.assets.cycle import CycleAssets
    from scim_pipeline.resources.pipeline import ProvisioningStateResource
    from scim_pipeline.settings import HealthSettings
    from scim_pipeline.sync.cycle import CycleReport
    from scim_pipeline.sync.state import ProvisioningState

__all__ = [
    "ESCROW_CHECK",
    "FOR_WHOM",
    "FRESHNESS_ASSETS",
    "HEALTH_JOB",
    "EscrowItem",
    "Freshness",
    "HealthDefinitions",
    "build_health",
    "cycle_health_checks",
    "escrow_items",
    "overdue_after",
    "schedule_period",
    "token_refused_checks",
]

HEALTH_JOB = "scim_health"
FOR_WHOM = "for_whom"
"""Metadata key of a failing check: the identities (or objects) it concerns, as short lines without a secret."""
FOR_WHOM_SHOWN = 50

FRESHNESS_ASSETS = ("user_provisioning", "group_provisioning", "membership_provisioning", "provisioning_audit")
"""Materialized by every sync (the audit by every executing job), so their age is the age of the last sync."""
PAM_FRESHNESS_ASSETS = ("container_provisioning", "permission_provisioning", "privileged_data_provisioning")
"""Materialized only when an access file is configured."""

ESCROW_CHECK = CheckEntry(
    "escrow_age",
    "provisioning_audit",
    "Health: no change has kept failing (held in escrow or waiting for its retry) for longer than "
    "SCIM_ESCROW_MAX_AGE hours; lists whose changes they are, since when, and the last error.",
    blocking=False,
)
_TOKEN = next(check for check in CHECKS if check.name == "token_obtained")
_FAILURE_SHARE = next(check for check in CHECKS if check.name == "failure_share")
_NOT_A_SUCCESS = ("failed", "held", "skipped")
_ESCROW_COLUMNS = ["resource_type", "key", "fail_count", "failing_since", "age_hours", "held_until", "last_error"]

Translation = Callable[[AssetSpec, Any], AssetSpec]
CheckFn = Callable[..., Any]
"""``_CycleStep._check``: (check, passed, description, metadata) → the check's event."""


# ---- freshness --------------------------------------------------------------------------------------------------


def schedule_period(cron: str, *, timezone: str = "UTC", now: float | None = None) -> timedelta:
    """The longest gap between two ticks of ``cron`` over the coming week (a weekday schedule's period is the
    weekend, so Monday's first tick is not called overdue)."""
    from dagster._utils.schedules import cron_string_iterator

    start = time.time() if now is None else now
    ticks = cron_string_iterator(start, cron, timezone)
    previous = next(ticks)
    longest = timedelta(0)
    for _ in range(2000):
        tick = next(ticks)
        longest = max(longest, tick - previous)
        if (tick.timestamp() - start) > 8 * 86400:
            break
        previous = tick
    return longest


def overdue_after(cron: str, periods: float) -> timedelta:
    """How old the last sync may be before it is overdue: ``periods`` periods of the sync schedule."""
    return schedule_period(cron) * periods


# ---- escrow -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EscrowItem:
    """A change that keeps failing: whose, since when (the first failure since its last success), the last error."""

    resource_type: str
    key: str
    fail_count: int
    failing_since: float
    held_until: float | None
    last_error: str | None

    def age_hours(self, now: float) -> float:
        return max(0.0, now - self.failing_since) / 3600.0

    def describe(self, now: float) -> str:
        held = f", held until {_when(self.held_until)}" if self.held_until is not None and self.held_until > now else ""
        error = f": {scrub(self.last_error)}" if self.last_error else ""
        return (
            f"{self.resource_type} {self.key} failing for {self.age_hours(now):.1f} h "
            f"({self.fail_count} failures{held}){error}"
        )[:300]


def escrow_items(state: "ProvisioningState") -> list[EscrowItem]:
    """The users and groups whose changes are failing (``fail_count`` > 0), oldest first. Since when: the first
    failed call of each since its last successful one in the audit trail (the row's last update when the audit
    holds none)."""
    from scim_pipeline.sync.state.schema import audit, managed_groups, managed_users

    items: list[EscrowItem] = []
    with state.reading() as conn:
        for resource_type, table in (("Users", managed_users), ("Groups", managed_groups)):
            rows = conn.execute(
                sa.select(
                    table.c.key, table.c.fail_count, table.c.next_attempt_at, table.c.last_error, table.c.updated_at
                ).where(table.c.fail_count > 0)
            ).all()
            if not rows:
                continue
            since: dict[str, float] = {}
            keys = [str(row[0]) for row in rows]
            later = audit.alias("later")
            last_success = (
                sa.select(sa.func.max(later.c.at))
                .where(
                    later.c.key == audit.c.key,
                    later.c.resource_type == audit.c.resource_type,
                    later.c.outcome.not_in(_NOT_A_SUCCESS),
                )
                .scalar_subquery()
            )
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                statement = (
                    sa.select(audit.c.key, sa.func.min(audit.c.at))
                    .where(
                        audit.c.resource_type == resource_type,
                        audit.c.key.in_(chunk),
                        audit.c.outcome == "failed",
                        audit.c.at > sa.func.coalesce(last_success, 0.0),
                    )
                    .group_by(audit.c.key)
                )
                since.update({str(key): float(at) for key, at in conn.execute(statement).tuples()})
            for key, fail_count, next_attempt_at, last_error, updated_at in rows:
                items.append(
                    EscrowItem(
                        resource_type,
                        str(key),
                        int(fail_count),
                        since.get(str(key), float(updated_at)),
                        None if next_attempt_at is None else float(next_attempt_at),
                        None if last_error is None else str(last_error),
                    )
                )
    items.sort(key=lambda item: item.failing_since)
    return items


def escrow_check_result(
    items: Sequence[EscrowItem], *, key: AssetKey, max_age_hours: float, now: float
) -> AssetCheckResult:
    """``escrow_age`` over ``items``: failed when any is older than ``max_age_hours``."""
    overdue = [item for item in items if item.age_hours(now) > max_age_hours]
    oldest = max((item.age_hours(now) for item in items), default=0.0)
    if not items:
        description = "no change is failing"
    elif not overdue:
        description = (
            f"{len(items)} change(s) failing, the oldest for {oldest:.1f} h (limit {max_age_hours:g} h); "
            "the next cycles retry them"
        )
    else:
        description = (
            f"{len(overdue)} change(s) have kept failing for longer than {max_age_hours:g} h (the oldest for "
            f"{oldest:.1f} h): fix the cause (see last_error) — the pipeline alone will not get them through"
        )
    frame = pd.DataFrame(
        [
            {
                "resource_type": item.resource_type,
                "key": item.key,
                "fail_count": item.fail_count,
                "failing_since": _when(item.failing_since),
                "age_hours": round(item.age_hours(now), 2),
                "held_until": _when(item.held_until) if item.held_until is not None else None,
                "last_error": scrub(item.last_error or ""),
            }
            for item in items
        ],
        columns=_ESCROW_COLUMNS,
    )
    return AssetCheckResult(
        asset_key=key,
        check_name=ESCROW_CHECK.name,
        passed=not overdue,
        description=description,
        severity=AssetCheckSeverity.WARN,
        metadata={
            "failing_changes": len(items),
            "over_age": len(overdue),
            "oldest_hours": round(oldest, 2),
            "max_age_hours": max_age_hours,
            "escrow": rows_table(frame, _ESCROW_COLUMNS),
            FOR_WHOM: MetadataValue.json([item.describe(now) for item in overdue[:FOR_WHOM_SHOWN]]),
        },
    )


# ---- checks of the cycle step -----------------------------------------------------------------------------------


def token_refused_checks(check: CheckFn, selected: Set[str], error: AuthenticationError) -> Iterator[Any]:
    """``token_obtained`` failed: the cycle stopped before its plan because the token endpoint said no (or did not
    answer). The message names the setting to fix, never the secret."""
    if _TOKEN.asset not in selected:
        return
    refused = isinstance(error, CredentialsRefused)
    reason = "refused the credentials" if refused else "could not be reached"
    metadata: dict[str, Any] = {
        "token_endpoint": _endpoint(error.token_url),
        "http_status": error.status if error.status is not None else "no answer",
        "oauth_error": error.oauth_error or "",
    }
    if refused:
        metadata["setting"] = getattr(error, "setting", "")
    metadata[FOR_WHOM] = MetadataValue.json(["every identity: no change was attempted in this cycle"])
    yield check(_TOKEN, False, f"no token: the token endpoint {reason}: {scrub(str(error))}"[:1000], metadata)


def cycle_health_checks(
    check: CheckFn, selected: Set[str], report: "CycleReport", *, max_failure_share: float
) -> Iterator[Any]:
    """``token_obtained`` (passed: the cycle got past its first contact, which obtains the token) and
    ``failure_share`` of a cycle that ran."""
    if _TOKEN.asset not in selected:
        return
    yield check(
        _TOKEN,
        True,
        "a token was obtained at the start of this cycle",
        {"target": report.target, "dry_run": report.dry_run},
    )
    if report.dry_run:
        return
    execution = report.execution
    calls = int(execution.calls)
    failures = list(execution.failures)
    share = len(failures) / calls if calls else 0.0
    passed = share <= max_failure_share and execution.circuit_message is None
    frame = pd.DataFrame(
        [
            {"resource_type": f.resource_type, "op": f.op, "key": str(f.key), "message": scrub(str(f.message))}
            for f in failures
        ],
        columns=["resource_type", "op", "key", "message"],
    )
    if not calls:
        description = "no SCIM call was needed in this cycle"
    elif passed:
        description = f"{len(failures)} of {calls} call(s) failed ({share:.1%}, limit {max_failure_share:.1%})"
    else:
        description = (
            f"{len(failures)} of {calls} call(s) failed ({share:.1%}, over the limit of {max_failure_share:.1%})"
            + (f"; {scrub(execution.circuit_message)}" if execution.circuit_message else "")
            + "; the next cycle retries them"
        )
    yield check(
        _FAILURE_SHARE,
        passed,
        description,
        {
            "calls": calls,
            "failed": len(failures),
            "failure_share": round(share, 4),
            "max_failure_share": max_failure_share,
            "failures": rows_table(frame, ["resource_type", "op", "key", "message"]),
            FOR_WHOM: MetadataValue.json(
                [
                    f"{row.resource_type} {row.op} {row.key}: {row.message}"[:300]
                    for row in frame.head(FOR_WHOM_SHOWN).itertuples(index=False)
                ]
            ),
        },
    )


# ---- the definitions of one target ------------------------------------------------------------------------------


@dataclass(frozen=True)
class HealthDefinitions:
    """What one target's health adds to its code location."""

    checks: list[AssetChecksDefinition]
    job: Any
    schedule: ScheduleDefinition

    def check_keys(self, cycle: "CycleAssets") -> list[AssetCheckKey]:
        """Every check of the target: the cycle's (guards, token, failure share) and these health checks."""
        keys = [AssetCheckKey(cycle.key(check.asset), check.name) for check in CHECKS]
        return keys + [key for definition in self.checks for key in definition.check_keys]


@dataclass(frozen=True)
class Freshness:
    """When a target's sync is overdue, and which provisioning assets say so. The PAM provisioning assets are
    watched when an access file is configured (demo mode bundles one)."""

    overdue_after: timedelta
    assets: tuple[str, ...]

    @classmethod
    def of(cls, settings: "HealthSettings", *, sync_cron: str, with_pam: bool) -> "Freshness":
        return cls(
            overdue_after(sync_cron, settings.overdue_periods),
            FRESHNESS_ASSETS + (PAM_FRESHNESS_ASSETS if with_pam else ()),
        )

    @property
    def policy(self) -> FreshnessPolicy:
        return FreshnessPolicy.time_window(fail_window=self.overdue_after)

    def translation(
        self, then: "Callable[[AssetSpec, Any], AssetSpec] | None"
    ) -> Callable[[AssetSpec, Any], AssetSpec]:
        """The Component's translation (``then``), followed by the freshness policy on the provisioning assets
        (a policy the translation set is kept)."""

        def translate(spec: AssetSpec, props: Any) -> AssetSpec:
            spec = then(spec, props) if then is not None else spec
            if getattr(props, "name", None) in self.assets:
                fresh: AssetSpec = apply_freshness_policy(spec, self.policy, overwrite_existing=False)
                return fresh
            return spec

        return translate


def build_health(
    cycle: "CycleAssets",
    *,
    settings: "HealthSettings",
    freshness: Freshness,
    state: "ProvisioningStateResource",
    suffix: str = "",
    demo: bool = False,
) -> HealthDefinitions:
    """The health checks, job and schedule of one target (``suffix``: ``_<instance name>`` or empty). The schedule
    runs by default with a real target, and is stopped in demo mode (whose sync schedule is never on)."""
    overdue = freshness.overdue_after
    keys = [cycle.key(name) for name in freshness.assets]
    with warnings.catch_warnings():
        # Dagster prefers FreshnessPolicy (attached above, evaluated by the daemon); the checks are kept as well: a
        # check result is what the Checks tab lists, the health job evaluates without the daemon, and alerts read.
        warnings.simplefilter("ignore", SupersessionWarning)
        freshness_checks = build_last_update_freshness_checks(assets=keys, lower_bound_delta=overdue)
    audit_key = cycle.key(ESCROW_CHECK.asset)
    max_age = settings.escrow_max_age

    @multi_asset_check(
        name=f"scim_escrow_check{suffix}",
        specs=[AssetCheckSpec(ESCROW_CHECK.name, asset=audit_key, description=ESCROW_CHECK.description)],
        description="Reads the state store's failing changes and the audit trail; no SCIM call.",
    )
    def escrow_check(context: AssetCheckExecutionContext) -> Iterator[AssetCheckResult]:
        now = time.time()
        with state.open(context.instance) as store:
            items = escrow_items(store)
        yield escrow_check_result(items, key=audit_key, max_age_hours=max_age, now=now)

    checks: list[AssetChecksDefinition] = [*freshness_checks, escrow_check]
    job_name = f"{HEALTH_JOB}{suffix}"
    job = define_asset_job(
        job_name,
        selection=AssetSelection.checks(*checks),
        description="Health: the provisioning assets' freshness (a sync overdue by "
        f"{settings.overdue_periods:g} schedule periods = {_duration(overdue)} fails) and the escrow's age. "
        "Reads Dagster's event log and the state store; makes no SCIM call.",
    )
    schedule = ScheduleDefinition(
        name=f"{job_name}_schedule",
        job_name=job_name,
        cron_schedule=settings.health_schedule,
        description="Evaluates the health checks (freshness, escrow age) between syncs.",
        default_status=DefaultScheduleStatus.STOPPED if demo else DefaultScheduleStatus.RUNNING,
    )
    return HealthDefinitions(checks=checks, job=job, schedule=schedule)


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return ""
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:g} h" if hours >= 1 else f"{delta.total_seconds() / 60:g} min"


def _endpoint(url: str) -> str:
    """The token endpoint without query or userinfo (a misconfigured URL could carry a credential)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"


def metadata_for_whom(metadata: Mapping[str, Any]) -> list[str]:
    """The ``for_whom`` lines of a check's metadata (as stored: a JSON metadata value)."""
    value = metadata.get(FOR_WHOM)
    data = getattr(value, "data", value)
    return [str(line) for line in data] if isinstance(data, list) else []
