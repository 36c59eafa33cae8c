"""The software-defined assets of one sync cycle.

roster files ─► idp_users / idp_groups / idp_memberships / roster_rejections
            ─► user_changes (per shard) / group_changes / membership_changes   (+ blocking guard checks)
            ─► user_provisioning (per shard) / group_provisioning / membership_provisioning
            ─► provisioning_audit      and target_snapshot (adoption on a first run, reconciliation)

The Dagster layer stays thin: every decision lives in `scim_pipeline.sync`; these functions wire resources to it and
turn its results into materializations the UI can plot.
"""

import asyncio
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetDep,
    AssetExecutionContext,
    AssetKey,
    AssetOut,
    AssetsDefinition,
    AssetSpec,
    BackfillPolicy,
    Config,
    Failure,
    MetadataValue,
    Output,
    TableColumnDep,
    TableColumnLineage,
    asset,
    multi_asset,
)
from pydantic import Field

from scim_pipeline.assets.metadata import counts_metadata, frame_metadata, markdown_table
from scim_pipeline.assets.partitions import shard_partitions, shards_of
from scim_pipeline.resources.pipeline import (
    ProvisioningStateResource,
    RosterSourceResource,
    SyncPolicyResource,
)
from scim_pipeline.resources.target import ScimTargetResource
from scim_pipeline.sync.holds import hold_rejected

POOL = "scim_target"
ROSTER_FILES = AssetKey("roster_files")

progress_logger = logging.getLogger("scim_pipeline.progress")


class SnapshotConfig(Config):
    """Run configuration of `target_snapshot`."""

    reconcile: bool = Field(
        default=False,
        description="Read the whole target and compare it with what we manage (drift), even when the state is not "
        "empty. A first run against an empty state store always reads it, to adopt existing objects.",
    )


@dataclass(frozen=True)
class SyncAssets:
    """Everything the code location needs from this module."""

    assets: list[AssetsDefinition | AssetSpec]
    change_keys: list[AssetKey]
    provisioning_keys: list[AssetKey]


def build_sync_assets(shards: int) -> SyncAssets:
    """Build the asset graph for `shards` user partitions."""
    partitions = shard_partitions(shards)

    roster_files = AssetSpec(
        ROSTER_FILES,
        description="The IdP roster folder (SCIM_ROSTER): users, groups and memberships files. Not materialized "
        "here; the IdP (or its export job) owns it.",
        group_name="idp",
        kinds={"csv", "parquet"},
    )

    @multi_asset(
        outs={
            "idp_users": AssetOut(description="Users in scope, validated and mapped to SCIM attributes."),
            "idp_groups": AssetOut(description="Groups in scope, validated and mapped."),
            "idp_memberships": AssetOut(description="Group memberships between accepted users and groups."),
            "roster_rejections": AssetOut(description="Roster rows set aside, one reason per row."),
        },
        deps=[ROSTER_FILES],
        group_name="idp",
        can_subset=False,
    )
    def idp_roster(context: AssetExecutionContext, roster: RosterSourceResource) -> Iterator[Output[pd.DataFrame]]:
        loaded = roster.load(shards)
        source = "bundled sample roster (demo)" if roster.uses_sample else str(roster.folder())
        users: pd.DataFrame = loaded.users
        lineage = _column_lineage(loaded)
        yield Output(
            users,
            output_name="idp_users",
            metadata={
                **frame_metadata(users, preview_columns=["key", "shard", "displayName", "active"]),
                "source": source,
                **({"dagster/column_lineage": lineage} if lineage is not None else {}),
                **counts_metadata(_roster_stats(loaded)),
            },
        )
        yield Output(
            loaded.groups,
            output_name="idp_groups",
            metadata=frame_metadata(loaded.groups, preview_columns=["key", "displayName"]),
        )
        yield Output(
            loaded.memberships,
            output_name="idp_memberships",
            metadata=frame_metadata(loaded.memberships, preview_columns=["group_key_norm", "user_key_norm"]),
        )
        rejected: pd.DataFrame = loaded.rejected
        if len(rejected):
            context.log.warning(f"{len(rejected)} roster rows were set aside; see the roster_rejections asset")
        yield Output(
            rejected,
            output_name="roster_rejections",
            metadata={
                **frame_metadata(rejected, preview_columns=["table", "row", "field", "reason"]),
                "rejected_users": int((rejected["table"] == "users").sum()) if len(rejected) else 0,
                "rejected_groups": int((rejected["table"] == "groups").sum()) if len(rejected) else 0,
                "rejected_memberships": int((rejected["table"] == "memberships").sum()) if len(rejected) else 0,
            },
        )

    @asset(
        group_name="target",
        pool=POOL,
        kinds={"scim"},
        check_specs=[
            AssetCheckSpec(
                "target_matches_managed_state",
                asset="target_snapshot",
                description="Reconciliation: the target holds what we manage, as we last wrote it (drift made in "
                "Delinea instead of the IdP is reported here and repaired by the next cycle).",
            )
        ],
        description="The target as read in full (paged, with filters the profile allows). Read on the first run "
        "against an empty state store — existing objects that match the roster are adopted, never duplicated — "
        "and whenever reconciliation is asked for.",
    )
    def target_snapshot(
        context: AssetExecutionContext,
        config: SnapshotConfig,
        idp_users: pd.DataFrame,
        idp_groups: pd.DataFrame,
        idp_memberships: pd.DataFrame,
        scim_target: ScimTargetResource,
        roster: RosterSourceResource,
        provisioning_state: ProvisioningStateResource,
    ) -> Iterator[Output[pd.DataFrame] | AssetCheckResult]:
        with provisioning_state.open(context.instance) as state:
            first_run = state.is_empty()
            if not (first_run or config.reconcile):
                yield Output(
                    _empty_snapshot(),
                    metadata={"read": False, "reason": "state store not empty and reconciliation not requested"},
                )
                yield AssetCheckResult(
                    check_name="target_matches_managed_state",
                    passed=True,
                    description="not checked in this run (run with reconcile: true, or the scim_reconcile job)",
                    metadata={"checked": False},
                )
                return

            async def read_target() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
                async with scim_target.get_client() as client:
                    return await client.search("Users"), await client.search("Groups")

            # Imported only when the target is read: most cycles skip it.
            from scim_pipeline.sync import reconcile

            target_users, target_groups = asyncio.run(read_target())
            adoption_counts: dict[str, int] = {}
            drift = pd.DataFrame(columns=list(reconcile.DRIFT_COLUMNS))
            if first_run:
                user_match, group_match = roster.match_attributes()
                adoption = reconcile.adopt_existing(
                    state,
                    _RosterFrames(users=idp_users, groups=idp_groups, memberships=idp_memberships),
                    target_users,
                    target_groups,
                    user_match,
                    group_match_attribute=group_match,
                )
                adoption_counts = {
                    "users_adopted": adoption.users_adopted,
                    "groups_adopted": adoption.groups_adopted,
                    "memberships_adopted": adoption.memberships_adopted,
                    "ambiguous_matches": len(adoption.ambiguous),
                }
                for resource_type, key in adoption.ambiguous[:20]:
                    context.log.warning(f"{resource_type} {key!r}: several target objects match; none was adopted")
            else:
                drift = reconcile.detect_drift(state, target_users, target_groups)
                reconcile.apply_drift(state, drift)
            snapshot = _snapshot_frame(state, target_users, target_groups)
        yield Output(
            snapshot,
            metadata={
                **frame_metadata(snapshot, preview_columns=["resource_type", "key", "managed"]),
                "read": True,
                **counts_metadata(adoption_counts),
                "drifted_attributes": len(drift),
            },
        )
        yield AssetCheckResult(
            check_name="target_matches_managed_state",
            passed=drift.empty,
            severity=AssetCheckSeverity.WARN,
            description=(
                "the target matches what we manage"
                if drift.empty
                else f"{len(drift)} managed attribute(s) differ on the target; the next cycle restores the IdP's "
                "values — make such changes in the IdP, not in Delinea"
            ),
            metadata={
                "drifted_attributes": len(drift),
                "drifted_objects": int(drift["scim_id"].nunique()) if len(drift) else 0,
                "preview": MetadataValue.md(
                    markdown_table(drift[["resource_type", "key", "attribute"]].head(20)) if len(drift) else "_none_"
                ),
            },
        )

    guard_specs = [
        AssetCheckSpec(
            name,
            asset="user_changes",
            blocking=True,
            description=description,
        )
        for name, description in (
            (
                "deletion_threshold",
                "Disables + deletes in this cycle stay under SCIM_MAX_DELETES / the share limit.",
            ),
            ("empty_roster", "The roster has users in scope whenever we manage some."),
            ("shrunken_roster", "The roster did not lose half of the active users we manage in one cycle."),
            ("mass_update", "A mapping change does not rewrite nearly every managed user at once."),
        )
    ]

    @asset(
        partitions_def=partitions,
        backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=1),
        deps=[AssetDep("target_snapshot")],
        group_name="changes",
        check_specs=guard_specs,
        kinds={"pandas"},
        description="Per shard: creates, updates (only the differing attributes, as PATCH operations), disables "
        "and deletes for users, computed against what we manage. Guarded by blocking checks.",
    )
    def user_changes(
        context: AssetExecutionContext,
        idp_users: pd.DataFrame,
        roster_rejections: pd.DataFrame,
        provisioning_state: ProvisioningStateResource,
        sync_policy: SyncPolicyResource,
    ) -> Iterator[Output[pd.DataFrame] | AssetCheckResult]:
        from scim_pipeline.sync import changes, guards

        run_shards = frozenset(shards_of(context.partition_keys))
        settings = changes.PlanSettings(deprovision=sync_policy.deprovision, shards=run_shards, include_groups=False)
        with provisioning_state.open(context.instance) as state:
            planned = changes.plan_users(idp_users, _managed(state, users=True, user_shards=run_shards), settings)
            managed_counts = state.counts(run_shards)
        planned = hold_rejected(planned, roster_rejections, table="users")
        change_set = changes.ChangeSet.empty().replace(users=planned)
        yield Output(
            planned,
            metadata={
                **frame_metadata(planned, preview_columns=["op", "key", "shard", "reason"]),
                **counts_metadata(_user_counts(change_set.summary())),
                "shards": ", ".join(context.partition_keys),
            },
        )
        results = guards.evaluate_guards(
            change_set,
            _RosterFrames(users=idp_users),
            managed_counts,
            settings=sync_policy.guard_settings(),
            shards=run_shards,
        )
        for result in results:
            yield AssetCheckResult(
                check_name=result.name,
                passed=result.passed,
                description=result.message,
                metadata={"observed": result.observed, "limit": result.limit},
            )

    @asset(
        deps=[AssetDep("target_snapshot")],
        group_name="changes",
        kinds={"pandas"},
        description="Group creates, renames and deprovisions, against what we manage. A group that leaves the roster "
        "is released (we remove the members we added) unless SCIM_DEPROVISION=delete and the profile allows a group "
        "DELETE (Delinea does not).",
    )
    def group_changes(
        context: AssetExecutionContext,
        idp_groups: pd.DataFrame,
        roster_rejections: pd.DataFrame,
        provisioning_state: ProvisioningStateResource,
        sync_policy: SyncPolicyResource,
        scim_target: ScimTargetResource,
    ) -> Output[pd.DataFrame]:
        from scim_pipeline.sync import changes

        settings = changes.PlanSettings(
            deprovision=sync_policy.deprovision,
            group_deprovision=scim_target.group_deprovision(sync_policy.deprovision),
        )
        with provisioning_state.open(context.instance) as state:
            planned = changes.plan_groups(idp_groups, _managed(state, groups=True), settings)
        planned = hold_rejected(planned, roster_rejections, table="groups")
        summary = changes.ChangeSet.empty().replace(groups=planned).summary()
        return Output(
            planned,
            metadata={
                **frame_metadata(planned, preview_columns=["op", "key", "reason"]),
                **counts_metadata(_group_counts(summary)),
            },
        )

    @asset(
        partitions_def=partitions,
        backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=1),
        group_name="provisioning",
        pool=POOL,
        kinds={"scim"},
        description="Per shard: the user change set executed as individual SCIM calls, each outcome recorded in "
        "the state store and the audit trail at once.",
    )
    def user_provisioning(
        context: AssetExecutionContext,
        user_changes: pd.DataFrame,
        scim_target: ScimTargetResource,
        provisioning_state: ProvisioningStateResource,
        roster: RosterSourceResource,
    ) -> Output[pd.DataFrame]:
        return _execute(context, "users", user_changes, scim_target, provisioning_state, roster)

    @asset(
        group_name="provisioning",
        pool=POOL,
        kinds={"scim"},
        description="The group change set executed as individual SCIM calls (before memberships).",
    )
    def group_provisioning(
        context: AssetExecutionContext,
        group_changes: pd.DataFrame,
        scim_target: ScimTargetResource,
        provisioning_state: ProvisioningStateResource,
        roster: RosterSourceResource,
    ) -> Output[pd.DataFrame]:
        return _execute(context, "groups", group_changes, scim_target, provisioning_state, roster)

    @asset(
        deps=[AssetDep("group_provisioning"), AssetDep("user_provisioning")],
        group_name="changes",
        kinds={"pandas"},
        description="Membership adds and removes as group PATCHes, chunked; only between users and groups we "
        "manage that already have a SCIM id (others wait for a later cycle and are counted as deferred).",
    )
    def membership_changes(
        context: AssetExecutionContext,
        idp_users: pd.DataFrame,
        idp_groups: pd.DataFrame,
        idp_memberships: pd.DataFrame,
        provisioning_state: ProvisioningStateResource,
        scim_target: ScimTargetResource,
    ) -> Output[pd.DataFrame]:
        from scim_pipeline.sync import changes

        settings = changes.PlanSettings(member_chunk=scim_target.member_chunk)
        roster_frames = _RosterFrames(users=idp_users, groups=idp_groups, memberships=idp_memberships)
        with provisioning_state.open(context.instance) as state:
            managed = _managed(state, users=True, user_columns=_MEMBERSHIP_USER_COLUMNS, groups=True, memberships=True)
            planned, deferred = changes.plan_memberships(roster_frames, managed, settings)
        summary = changes.ChangeSet.empty().replace(memberships=planned, deferred=deferred).summary()
        return Output(
            planned,
            metadata={
                **frame_metadata(planned, preview_columns=["op", "key", "member_count"]),
                **counts_metadata(_membership_counts(summary)),
            },
        )

    @asset(
        group_name="provisioning",
        pool=POOL,
        kinds={"scim"},
        description="The membership change set executed as group PATCH calls.",
    )
    def membership_provisioning(
        context: AssetExecutionContext,
        membership_changes: pd.DataFrame,
        scim_target: ScimTargetResource,
        provisioning_state: ProvisioningStateResource,
        roster: RosterSourceResource,
    ) -> Output[pd.DataFrame]:
        return _execute(context, "memberships", membership_changes, scim_target, provisioning_state, roster)

    @asset(
        deps=[
            AssetDep("user_provisioning"),
            AssetDep("group_provisioning"),
            AssetDep("membership_provisioning"),
        ],
        group_name="audit",
        kinds={"sqlite"},
        description="Every SCIM call of this run: when, what, on which key, the outcome, HTTP status, scimType, "
        "latency and attempts. Never a secret, never an attribute value beyond the matching key. Fails the run "
        "when any call failed, so the next cycle retries it.",
    )
    def provisioning_audit(
        context: AssetExecutionContext, provisioning_state: ProvisioningStateResource
    ) -> Iterator[Output[pd.DataFrame]]:
        with provisioning_state.open(context.instance) as state:
            audit = state.audit(run_id=context.run.run_id)
        failed = int((audit["outcome"] == "failed").sum()) if len(audit) else 0
        outcomes = audit["outcome"].value_counts().to_dict() if len(audit) else {}
        yield Output(
            audit,
            metadata={
                **frame_metadata(
                    audit,
                    preview_columns=[
                        "at",
                        "resource_type",
                        "operation",
                        "key",
                        "http_status",
                        "outcome",
                    ],
                ),
                "calls": len(audit),
                **counts_metadata({f"outcome_{name}": count for name, count in outcomes.items()}),
                "failures": failed,
            },
        )
        if failed:
            raise Failure(
                description=f"{failed} SCIM call(s) failed in this run; see provisioning_audit for each reason. "
                "The next cycle retries them.",
                metadata={"failures": failed},
            )

    return SyncAssets(
        assets=[
            roster_files,
            idp_roster,
            target_snapshot,
            user_changes,
            group_changes,
            membership_changes,
            user_provisioning,
            group_provisioning,
            membership_provisioning,
            provisioning_audit,
        ],
        change_keys=[
            AssetKey(name)
            for name in (
                "idp_users",
                "idp_groups",
                "idp_memberships",
                "roster_rejections",
                "target_snapshot",
                "user_changes",
                "group_changes",
                "membership_changes",
            )
        ],
        provisioning_keys=[
            AssetKey(name)
            for name in (
                "user_provisioning",
                "group_provisioning",
                "membership_provisioning",
                "provisioning_audit",
            )
        ],
    )


_RESOURCE_TYPE_OF_KIND = {"users": "Users", "groups": "Groups", "memberships": "Groups"}


def _execute(
    context: AssetExecutionContext,
    kind: str,
    planned: pd.DataFrame,
    scim_target: ScimTargetResource,
    provisioning_state: ProvisioningStateResource,
    roster: RosterSourceResource,
) -> Output[pd.DataFrame]:
    """Run one change set through the SCIM client; every outcome is already in the state store when this returns."""
    from scim_pipeline.sync import changes, executor

    partition = (
        ",".join(context.partition_keys) if context.has_partition_key_range or context.has_partition_key else None
    )
    empty = changes.ChangeSet.empty()
    if kind == "users":
        change_set = empty.replace(users=planned)
    elif kind == "groups":
        change_set = empty.replace(groups=planned)
    else:
        change_set = empty.replace(memberships=planned)
    reporter = _ProgressReporter(context, kind)
    run_id = context.run.run_id

    user_match, group_match = roster.match_attributes()

    async def run(state: Any) -> executor.ExecutionReport:
        async with scim_target.get_client() as client:
            return await executor.execute(
                client,
                state,
                change_set,
                run_id=run_id,
                partition=partition,
                progress=reporter,
                user_match_attribute=user_match,
                group_match_attribute=group_match,
            )

    with provisioning_state.open(context.instance) as state:
        report = asyncio.run(run(state))
        outcomes = _outcomes_of(state.audit(run_id=run_id), planned, kind)
    if report.failed:
        for failure in report.failures[:50]:
            context.log.error(
                f"{failure.resource_type} {failure.op} {failure.key!r} failed: {failure.message}"
                f" (HTTP {failure.status}, scimType {failure.scim_type})"
            )
        if report.circuit_message:
            context.log.error(report.circuit_message)
    for held in report.held[:50]:
        context.log.warning(f"{held.resource_type} {held.key!r} held back after repeated failures: {held.reason}")
    return Output(
        outcomes,
        metadata={
            **frame_metadata(outcomes, preview_columns=["operation", "key", "outcome", "http_status", "error"]),
            **counts_metadata(report.summary()),
            "target": scim_target.describe(),
            **({"circuit_breaker": report.circuit_message} if report.circuit_message else {}),
            **({"failure_examples": MetadataValue.text(_failure_lines(report))} if report.failures else {}),
        },
    )


def _failure_lines(report: Any, limit: int = 10) -> str:
    """The first failures, one line each, for the UI and the CLI summary (the audit has them all)."""
    lines = [
        f"{failure.resource_type} {failure.op} {failure.key!r}: {failure.message}"
        for failure in report.failures[:limit]
    ]
    if len(report.failures) > limit:
        lines.append(f"… and {len(report.failures) - limit} more (see provisioning_audit)")
    return "\n".join(lines)


def _outcomes_of(audit: pd.DataFrame, planned: pd.DataFrame, kind: str) -> pd.DataFrame:
    """This step's rows of the run's audit trail, with the shard of each user so per-shard storage can split them."""
    resource_type = _RESOURCE_TYPE_OF_KIND[kind]
    rows = audit[audit["resource_type"] == resource_type]
    if kind == "memberships":
        rows = rows[rows["operation"].isin(["add_members", "remove_members"])]
    elif kind == "groups":
        rows = rows[~rows["operation"].isin(["add_members", "remove_members"])]
    rows = rows.reset_index(drop=True)
    if kind == "users":
        shard_of_key = planned.drop_duplicates("key").set_index("key")["shard"] if len(planned) else pd.Series()
        rows["shard"] = rows["key"].map(shard_of_key).fillna(-1).astype("int64")
    return rows


class _ProgressReporter:
    """Logs progress of a long change set every few seconds, to Dagster and to the CLI."""

    def __init__(self, context: AssetExecutionContext, kind: str) -> None:
        self._context = context
        self._kind = kind
        self._last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self._last < 2.0:
            return
        self._last = now
        message = f"{self._kind}: {done:,}/{total:,} changes done"
        self._context.log.info(message)
        progress_logger.info(message)


_MEMBERSHIP_USER_COLUMNS = ("key_norm", "scim_id", "shard")
"""The managed-user columns a membership plan reads (the SCIM ids members are added by)."""


def _managed(
    state: Any,
    *,
    users: bool = False,
    user_shards: frozenset[int] | None = None,
    user_columns: tuple[str, ...] | None = None,
    groups: bool = False,
    memberships: bool = False,
) -> Any:
    """What we manage, limited to what one planning step reads.

    `state.snapshot()` reads every managed user, group and membership; the user, group and membership steps would
    each pay for all of it (the memberships are the largest read) and use a part. Users are read for `user_shards`
    (None: all) with `user_columns` (default: the plan's); the parts left out are empty frames with the snapshot's
    columns.
    """
    from scim_pipeline.sync.state import PLAN_USER_COLUMNS, ManagedSnapshot

    empty = ManagedSnapshot.empty()
    return ManagedSnapshot(
        users=state.managed_users(user_shards, columns=user_columns or PLAN_USER_COLUMNS) if users else empty.users,
        groups=state.managed_groups() if groups else empty.groups,
        memberships=state.managed_memberships() if memberships else empty.memberships,
        attrs_loader=state.load_attrs,
    )


class _RosterFrames:
    """The roster frames a planner or guard reads, rebuilt from the materialized idp_* assets."""

    def __init__(
        self,
        *,
        users: pd.DataFrame,
        groups: pd.DataFrame | None = None,
        memberships: pd.DataFrame | None = None,
    ) -> None:
        self.users = users
        self.groups = groups if groups is not None else pd.DataFrame(columns=["key", "key_norm", "row"])
        self.memberships = (
            memberships if memberships is not None else pd.DataFrame(columns=["group_key_norm", "user_key_norm", "row"])
        )


def _user_counts(summary: dict[str, int]) -> dict[str, int]:
    return {name: summary[name] for name in ("creates", "updates", "disables", "enables", "deletes")}


def _group_counts(summary: dict[str, int]) -> dict[str, int]:
    return {
        "creates": summary["group_creates"],
        "renames": summary["renames"],
        "updates": summary["group_updates"],
        "releases": summary["group_releases"],
        "deletes": summary["group_deletes"],
    }


def _membership_counts(summary: dict[str, int]) -> dict[str, int]:
    return {name: summary[name] for name in ("member_adds", "member_removes", "deferred", "membership_requests")}


def _snapshot_frame(state: Any, users: list[dict[str, Any]], groups: list[dict[str, Any]]) -> pd.DataFrame:
    """The target as read: one row per object, and whether we manage it (no attribute values beyond the key)."""
    managed_ids = set(state.managed_users()["scim_id"].dropna()) | set(state.managed_groups()["scim_id"].dropna())
    rows = [
        ("Users", user.get("id"), user.get("userName"), user.get("active"), user.get("id") in managed_ids)
        for user in users
    ] + [
        ("Groups", group.get("id"), group.get("displayName"), None, group.get("id") in managed_ids) for group in groups
    ]
    return pd.DataFrame(
        {
            "resource_type": pd.array([row[0] for row in rows], dtype="string"),
            "scim_id": pd.array([row[1] for row in rows], dtype="string"),
            "key": pd.array([row[2] for row in rows], dtype="string"),
            "active": pd.array([row[3] for row in rows], dtype="boolean"),
            "managed": pd.array([row[4] for row in rows], dtype="bool"),
        }
    )


def _empty_snapshot() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "resource_type": pd.Series(dtype="string"),
            "scim_id": pd.Series(dtype="string"),
            "key": pd.Series(dtype="string"),
            "managed": pd.Series(dtype="bool"),
        }
    )


def _roster_stats(loaded: Any) -> dict[str, int]:
    stats = getattr(loaded, "stats", None) or {}
    return {str(name): int(value) for name, value in stats.items() if isinstance(value, int | float)}


def _column_lineage(loaded: Any) -> TableColumnLineage | None:
    """Which roster file column feeds each SCIM attribute of idp_users, from the mapping in effect."""
    sources: dict[str, list[str]] | None = getattr(loaded, "attribute_sources", None)
    if not sources:
        return None
    return TableColumnLineage(
        deps_by_column={
            attribute: [TableColumnDep(asset_key=ROSTER_FILES, column_name=column) for column in columns]
            for attribute, columns in sources.items()
            if columns
        }
    )
