"""The asset graph of one sync cycle — a single step that runs the sync engine.

    roster_files ─► idp_users / idp_groups / idp_memberships / roster_rejections
                 ─► target_snapshot
                 ─► user_changes / group_changes / membership_changes          (+ the guards, as asset checks)
                 ─► group_provisioning ─► user_provisioning ─► membership_provisioning
    access_file  ─► container_changes / permission_changes / privileged_data_changes   (Delinea's PAM kinds)
                 ─► container_provisioning ─► permission_provisioning / privileged_data_provisioning
                 ─► access_snapshot
                 ─► provisioning_audit

Every asset above is an output of ONE multi-asset step, ``scim_cycle``, which runs
:func:`scim_pipeline.sync.cycle.run_cycle`: it reads the roster, plans every kind against the state store, evaluates
the guards over the whole plan, and executes that plan — in the same step. No change set computed by another run
can ever be executed: change sets are shown (metadata, previews) but never stored for a later step to replay.

The step is subsettable: selecting only the user assets runs a user sync, only the change sets (or ``dry_run``)
plans without executing, and any selection re-reads the current roster. Users are partitioned by shard; a run covers
one shard, a range, or all of them (the schedule and "Materialize all" do the whole cycle in one run).
"""

import asyncio
import json
import logging
import os
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetsDefinition,
    AssetSpec,
    BackfillPolicy,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    TableColumnDep,
    TableColumnLineage,
    multi_asset,
)
from pydantic import Field

from scim_pipeline.assets.metadata import counts_metadata, frame_metadata, markdown_table
from scim_pipeline.assets.partitions import shard_partitions, shards_of
from scim_pipeline.resources.home import pipeline_home
from scim_pipeline.resources.pipeline import ProvisioningStateResource, RosterSourceResource, SyncPolicyResource
from scim_pipeline.resources.target import ScimTargetResource
from scim_pipeline.scim.errors import ConfigurationError

__all__ = ["CycleAssets", "CycleConfig", "build_cycle_assets", "report_path"]

progress_logger = logging.getLogger("scim_pipeline.progress")

PREVIEW_LIMIT = 20
QUIRKS_NAMESPACE = "target_quirks"
LEASE_TTL_S = 60.0
GUARDS_BY_ASSET = {
    "user_changes": ("deletion_threshold", "empty_roster", "shrunken_roster", "mass_update"),
    "group_changes": ("group_removals",),
    "membership_changes": ("membership_removals",),
    "permission_changes": ("permission_removals",),
}
GUARD_DESCRIPTIONS = {
    "deletion_threshold": "Disables + deletes in this cycle stay under SCIM_MAX_DELETES (default 20 % of the active "
    "users we manage, never less than 10).",
    "empty_roster": "The roster has users in scope whenever we manage some.",
    "shrunken_roster": "The roster did not lose half of the active users we manage in one cycle.",
    "mass_update": "A mapping change does not rewrite nearly every managed user at once.",
    "group_removals": "Groups released or deleted in one cycle stay under 20 % of the groups we manage (at least 5), "
    "and an empty groups file never releases them all.",
    "membership_removals": "Members removed in one cycle stay under 20 % of the memberships we added (at least 100).",
    "permission_removals": "Container permissions removed in one cycle stay under SCIM_MAX_DELETES (default 20 % of "
    "the permissions we manage, at least 10).",
}
KIND_OF_PROVISIONING = {
    "group_provisioning": "groups",
    "user_provisioning": "users",
    "membership_provisioning": "memberships",
    "container_provisioning": "containers",
    "permission_provisioning": "permissions",
    "privileged_data_provisioning": "privileged_data",
}
PAM_RESOURCE_TYPES = {
    "container_provisioning": "Containers",
    "permission_provisioning": "ContainerPermissions",
    "privileged_data_provisioning": "PrivilegedData",
}


class CycleConfig(Config):
    """Run configuration of the sync step."""

    dry_run: bool = Field(default=False, description="Plan and evaluate the guards; execute nothing.")
    reconcile: bool = Field(
        default=False,
        description="Read the whole target first: adopt unmanaged objects matching roster identities, report and "
        "repair drift. A run against an empty state store always reads the target, to adopt existing objects.",
    )
    allow_mass_changes: bool = Field(
        default=False,
        description="Let this one run pass the deletion, empty-roster, shrunken-roster, mass-update and removal "
        "guards (SCIM_ALLOW_MASS_CHANGES=1 does the same).",
    )


@dataclass(frozen=True)
class ResourceKeys:
    """The resource keys one target's step uses (suffixed per Component instance)."""

    target: str = "scim_target"
    roster: str = "roster"
    state: str = "provisioning_state"
    policy: str = "sync_policy"

    @classmethod
    def for_instance(cls, name: str | None) -> "ResourceKeys":
        if not name:
            return cls()
        return cls(
            target=f"scim_target_{name}",
            roster=f"roster_{name}",
            state=f"provisioning_state_{name}",
            policy=f"sync_policy_{name}",
        )


@dataclass(frozen=True)
class CycleAssets:
    """What a code location needs from this module for one target."""

    assets: list[AssetsDefinition | AssetSpec]
    cycle: AssetsDefinition
    op_name: str
    keys: dict[str, AssetKey]

    def key(self, name: str) -> AssetKey:
        return self.keys[name]

    def selection(self, *names: str) -> list[AssetKey]:
        return [self.keys[name] for name in names]


ROSTER_ASSETS = ("idp_users", "idp_groups", "idp_memberships", "roster_rejections")
CHANGE_ASSETS = ("user_changes", "group_changes", "membership_changes")
PROVISIONING_ASSETS = ("group_provisioning", "user_provisioning", "membership_provisioning")
PAM_CHANGE_ASSETS = ("container_changes", "permission_changes", "privileged_data_changes")
PAM_PROVISIONING_ASSETS = ("container_provisioning", "permission_provisioning", "privileged_data_provisioning")
PAM_ASSETS = (*PAM_CHANGE_ASSETS, *PAM_PROVISIONING_ASSETS, "access_snapshot")
ALL_CYCLE_ASSETS = (
    *ROSTER_ASSETS,
    "target_snapshot",
    *CHANGE_ASSETS,
    *PROVISIONING_ASSETS,
    *PAM_ASSETS,
    "provisioning_audit",
)


def report_path(instance: Any, run_id: str) -> Any:
    """Where the step writes the typed outcome of a run (the CLI reads it back)."""
    return pipeline_home(instance) / "reports" / f"{run_id}.json"


def build_cycle_assets(
    *,
    shards: int,
    shards_per_run: int | None = None,
    prefix: Sequence[str] = (),
    resource_keys: ResourceKeys | None = None,
    pool: str = "scim_target",
    label: str = "",
    upstream: Mapping[str, AssetKey] | None = None,
) -> CycleAssets:
    """Build the asset graph of one target: ``prefix`` keeps several targets apart in one code location.

    ``upstream`` names assets of the user's own project (``users``, optionally ``groups`` and ``memberships``:
    DataFrames in the default roster columns, or those the mapping file names) that replace the roster source,
    so lineage runs from the user's HR model to the target."""
    keys = resource_keys or ResourceKeys()
    upstream = dict(upstream or {})
    if upstream and "users" not in upstream:
        raise ConfigurationError("an upstream roster needs a users asset (upstream_users)")
    partitions = shard_partitions(shards)

    def key(name: str) -> AssetKey:
        return AssetKey([*prefix, name])

    names = {name: key(name) for name in ("roster_files", "access_file", *ALL_CYCLE_ASSETS)}
    roster_files = AssetSpec(
        names["roster_files"],
        description="The IdP roster (SCIM_ROSTER folder, or the configured source). Not materialized here: the "
        "IdP, or its export job, owns it.",
        group_name=_group(prefix, "idp"),
        kinds={"csv"},
    )
    access_file = AssetSpec(
        names["access_file"],
        description="The access file (SCIM_ACCESS, docs/access.md): Delinea containers, the rights of roster groups "
        "and users on each, and which existing privileged data belongs where. Not materialized here: the identity "
        "team owns it (in git or a spreadsheet export).",
        group_name=_group(prefix, "idp"),
        kinds={"yaml"},
    )
    roster_deps = {table: [names["roster_files"]] for table in ("users", "groups", "memberships")}
    if upstream:
        roster_deps = {table: [upstream.get(table, upstream["users"])] for table in ("users", "groups", "memberships")}
    deps: dict[str, list[str]] = {
        "idp_users": [],
        "idp_groups": [],
        "idp_memberships": [],
        "roster_rejections": [],
        "target_snapshot": ["idp_users", "idp_groups"],
        "user_changes": ["idp_users", "roster_rejections", "target_snapshot"],
        "group_changes": ["idp_groups", "roster_rejections", "target_snapshot"],
        # Planned again once the users and groups created in this run have ids.
        "membership_changes": [
            "idp_memberships",
            "user_changes",
            "group_changes",
            "group_provisioning",
            "user_provisioning",
        ],
        "group_provisioning": ["group_changes"],
        "user_provisioning": ["user_changes", "group_provisioning"],
        "membership_provisioning": ["membership_changes", "user_provisioning", "group_provisioning"],
        "container_changes": ["target_snapshot"],
        # Permissions name the SCIM ids the group and user provisioning produced: roster → groups → permissions.
        "permission_changes": [
            "idp_groups",
            "idp_users",
            "container_changes",
            "group_provisioning",
            "user_provisioning",
        ],
        "privileged_data_changes": ["container_changes"],
        "container_provisioning": ["container_changes"],
        "permission_provisioning": ["permission_changes", "container_provisioning"],
        "privileged_data_provisioning": ["privileged_data_changes", "container_provisioning"],
        "access_snapshot": ["permission_provisioning", "privileged_data_provisioning"],
        "provisioning_audit": [
            "group_provisioning",
            "user_provisioning",
            "membership_provisioning",
            "container_provisioning",
            "permission_provisioning",
            "privileged_data_provisioning",
        ],
    }
    descriptions = {
        "idp_users": "Users in scope, validated and mapped to SCIM attributes (read by the sync step itself).",
        "idp_groups": "Groups in scope, validated and mapped.",
        "idp_memberships": "Group memberships between accepted users and groups.",
        "roster_rejections": "Roster rows set aside, with the file, row number and reason of each.",
        "target_snapshot": "The target as read in full: on the first run against an empty state store (existing "
        "objects matching the roster are adopted, never duplicated) and on reconciliation runs (orphans adopted, "
        "drift reported and repaired).",
        "user_changes": "Per shard: creates, updates (only the differing attributes), disables and deletes — "
        "planned in this run, against what we manage, and executed by this same run. Guarded.",
        "group_changes": "Group creates, renames, updates and removals (release: we remove the members we added; "
        "delete only where the profile allows it).",
        "membership_changes": "Member adds and removes as group PATCHes (chunked), planned again once the users and "
        "groups created in this run have ids.",
        "group_provisioning": "The group changes executed as individual SCIM calls.",
        "user_provisioning": "Per shard: the user changes executed as individual SCIM calls (managers first).",
        "membership_provisioning": "The membership changes executed as group PATCH calls.",
        "container_changes": "Containers (Secret Server folders) of the access file to create by name or adopt; "
        "renames and deletions are reported as drift to fix by hand (Delinea's SCIM API offers neither).",
        "permission_changes": "Container permissions to add and delete (never edited in place: other rights are a "
        "delete and an add), planned from one filtered read per container. Guarded.",
        "privileged_data_changes": "Existing privileged data to attach to or detach from containers (never created).",
        "container_provisioning": "The container creates executed as SCIM calls.",
        "permission_provisioning": "The permission deletes and adds executed as SCIM calls.",
        "privileged_data_provisioning": "The privileged-data attaches and detaches executed as PATCH calls.",
        "access_snapshot": "Who holds which right on which managed container now — container, principal (user or "
        "group), right, managed by us or not — for access reviews, with drift against the access file.",
        "provisioning_audit": "Every SCIM call of this run: when, what, on which key, the outcome, HTTP status, "
        "scimType, latency, attempts. Never a secret, never an attribute value beyond the matching key.",
    }
    groups = {
        **dict.fromkeys(ROSTER_ASSETS, "idp"),
        "target_snapshot": "target",
        **dict.fromkeys(CHANGE_ASSETS, "changes"),
        **dict.fromkeys(PROVISIONING_ASSETS, "provisioning"),
        **dict.fromkeys(PAM_CHANGE_ASSETS, "changes"),
        **dict.fromkeys(PAM_PROVISIONING_ASSETS, "provisioning"),
        "access_snapshot": "audit",
        "provisioning_audit": "audit",
    }
    asset_kinds = {
        **dict.fromkeys(ROSTER_ASSETS, "pandas"),
        "target_snapshot": "scim",
        **dict.fromkeys(CHANGE_ASSETS, "pandas"),
        **dict.fromkeys(PROVISIONING_ASSETS, "scim"),
        **dict.fromkeys(PAM_CHANGE_ASSETS, "pandas"),
        **dict.fromkeys(PAM_PROVISIONING_ASSETS, "scim"),
        "access_snapshot": "pandas",
        "provisioning_audit": "sqlite",
    }
    external_deps: dict[str, list[AssetKey]] = {
        "idp_users": roster_deps["users"],
        "idp_groups": roster_deps["groups"],
        "idp_memberships": roster_deps["memberships"],
        "roster_rejections": sorted({key for keys_ in roster_deps.values() for key in keys_}, key=str),
        "container_changes": [names["access_file"]],
        "permission_changes": [names["access_file"]],
        "privileged_data_changes": [names["access_file"]],
    }
    specs = [
        AssetSpec(
            names[name],
            deps=[*external_deps.get(name, []), *(names[dep] for dep in deps[name])],
            description=(label + descriptions[name]) if label else descriptions[name],
            group_name=_group(prefix, groups[name]),
            kinds={asset_kinds[name]},
            skippable=True,
            partitions_def=partitions,
        )
        for name in ALL_CYCLE_ASSETS
    ]
    check_specs = [
        AssetCheckSpec(guard, asset=names[asset_name], description=GUARD_DESCRIPTIONS[guard], blocking=True)
        for asset_name, guard_names in GUARDS_BY_ASSET.items()
        for guard in guard_names
    ]
    check_specs.append(
        AssetCheckSpec(
            "target_matches_managed_state",
            asset=names["target_snapshot"],
            description="Reconciliation: the target holds what we manage, as we last wrote it (drift made in the "
            "target instead of the IdP is reported here and repaired by the next cycle).",
        )
    )
    check_specs.append(
        AssetCheckSpec(
            "access_matches_file",
            asset=names["access_snapshot"],
            description="The rights held on the managed containers are those of the access file (rights missing, "
            "different or granted outside it are listed).",
        )
    )
    op_name = "__".join([*prefix, "scim_cycle"]) if prefix else "scim_cycle"
    policy = (
        BackfillPolicy.multi_run(max_partitions_per_run=shards_per_run)
        if shards_per_run
        else BackfillPolicy.single_run()
    )

    @multi_asset(
        name=op_name,
        specs=specs,
        check_specs=check_specs,
        can_subset=True,
        partitions_def=partitions,
        backfill_policy=policy,
        pool=pool,
        required_resource_keys={keys.target, keys.roster, keys.state, keys.policy},
        ins={f"upstream_{table}": AssetIn(key=key) for table, key in upstream.items()},
        description="One sync cycle of the SCIM target: roster → plan → guards → execute, in one step.",
    )
    def scim_cycle(
        context: AssetExecutionContext, config: CycleConfig, **frames: pd.DataFrame
    ) -> Iterator[MaterializeResult[Any] | AssetCheckResult]:
        step = _CycleStep(context, config, keys, names, shards)
        yield from step.run(frames)

    assets: list[AssetsDefinition | AssetSpec] = (
        [access_file, scim_cycle] if upstream else [roster_files, access_file, scim_cycle]
    )
    return CycleAssets(assets=assets, cycle=scim_cycle, op_name=op_name, keys=names)


def _group(prefix: Sequence[str], name: str) -> str:
    return "_".join([*prefix, name]) if prefix else name


class _CycleStep:
    """One execution of the sync step: wires the resources to the engine and turns its report into events."""

    def __init__(
        self,
        context: AssetExecutionContext,
        config: CycleConfig,
        keys: ResourceKeys,
        names: dict[str, AssetKey],
        shard_count: int,
    ) -> None:
        self.context = context
        self.config = config
        self.names = names
        self.target: ScimTargetResource = getattr(context.resources, keys.target)
        self.roster: RosterSourceResource = getattr(context.resources, keys.roster)
        self.state: ProvisioningStateResource = getattr(context.resources, keys.state)
        self.policy: SyncPolicyResource = getattr(context.resources, keys.policy)
        selected = context.selected_asset_keys
        self.selected = {name for name, asset_key in names.items() if asset_key in selected}
        run_shards = shards_of(context.partition_keys) if context.has_partition_key_range or _has_key(context) else []
        self.shards: frozenset[int] | None = (
            None if not run_shards or len(set(run_shards)) == shard_count else frozenset(run_shards)
        )
        self.kinds = frozenset(
            kind for name, kind in KIND_OF_PROVISIONING.items() if name in self.selected
        ) or frozenset(KIND_OF_PROVISIONING.values())
        self.dry_run = config.dry_run or not (self.selected & {*PROVISIONING_ASSETS, *PAM_PROVISIONING_ASSETS})

    def run(self, frames: Mapping[str, pd.DataFrame]) -> Iterator[MaterializeResult[Any] | AssetCheckResult]:
        from scim_pipeline.sources import DataFrameRosterSource
        from scim_pipeline.sync.cycle import CycleOptions
        from scim_pipeline.sync.outcome import CycleOutcome

        context = self.context
        started = time.perf_counter()
        upstream = (
            DataFrameRosterSource(
                users=frames["upstream_users"],
                groups=frames.get("upstream_groups"),
                memberships=frames.get("upstream_memberships"),
                label="upstream asset",
            )
            if frames
            else None
        )
        with self.state.open(context.instance) as state:
            # The state store keeps the incremental sources' watermarks: a roster read is part of the cycle.
            loaded = self.roster.load(instance=context.instance, watermarks=state, upstream=upstream)
            roster = loaded.roster
            pam_kinds = {KIND_OF_PROVISIONING[name] for name in PAM_PROVISIONING_ASSETS}
            access = self.roster.load_access(roster) if self.kinds & pam_kinds else None
            options = CycleOptions(
                run_id=context.run.run_id,
                partition=",".join(context.partition_keys) if self.shards is not None else None,
                shards=self.shards,
                kinds=self.kinds,
                deprovision=self.policy.deprovision,
                member_chunk=self.target.member_chunk,
                dry_run=self.dry_run,
                reconcile=self.config.reconcile,
                guards=self.policy.guard_settings(allow_mass_changes=self.config.allow_mass_changes),
                user_match_attribute=str(roster.user_match),
                group_match_attribute=str(roster.group_match),
            )
            report = self._run_cycle(state, roster, options, access)
            audit = state.audit(run_id=options.run_id) if not self.dry_run else pd.DataFrame()
        outcome = CycleOutcome.from_report(
            report, rejected=roster.rejected, sources=loaded.sources, target=self.target.describe()
        )
        path = report_path(context.instance, options.run_id)
        outcome.write(path)
        _prune_reports(path.parent)
        context.log.info(
            f"cycle done in {time.perf_counter() - started:.1f} s: {outcome.calls} SCIM calls, "
            f"{outcome.failed_calls} failed"
        )
        yield from self._roster_results(loaded)
        yield from self._snapshot_results(report)
        executed = not (self.dry_run or report.stopped_by_guard)
        # In the order the cycle ran them (Dagster wants a multi-asset's outputs in topological order).
        yield from self._change_results(report, outcome, ("user_changes", "group_changes"))
        if executed:
            yield from self._provisioning_results(report, audit, ("group_provisioning", "user_provisioning"))
        yield from self._change_results(report, outcome, ("membership_changes",))
        if executed:
            yield from self._provisioning_results(report, audit, ("membership_provisioning",))
        yield from self._pam_results(report, outcome, audit, executed)
        if executed:
            yield from self._provisioning_results(report, audit, ("provisioning_audit",))
        self._raise_if_failed(report, outcome)

    def _run_cycle(self, state: Any, roster: Any, options: Any, access: Any) -> Any:
        """The engine, as the only writer to this target (a dry run writes nothing and takes no lease), with the
        target's known quirks (dropped attributes, refused PATCH forms) loaded before and saved after."""
        from scim_pipeline.scim.target_quirks import TargetQuirks
        from scim_pipeline.sync.cycle import run_cycle

        target_id = self.target.identity()
        stored = state.get_value(QUIRKS_NAMESPACE, target_id)
        quirks = TargetQuirks.from_dict(json.loads(stored)) if stored else TargetQuirks()
        revision = quirks.revision
        reporter = _ProgressReporter(self.context)

        async def cycle(lease: Any) -> Any:
            async with self.target.get_client(quirks=quirks) as client:
                return await run_cycle(
                    client,
                    state,
                    roster,
                    run_id=options.run_id,
                    options=options,
                    rejected=roster.rejected,
                    progress=reporter,
                    lease=lease,
                    access=access,
                )

        if options.dry_run:
            report = asyncio.run(cycle(None))
        else:
            holder = f"run {options.run_id} (pid {os.getpid()} on host {socket.gethostname()})"
            with state.writer_lease(target_id, holder, wait_s=self.target.lease_wait_s, ttl_s=LEASE_TTL_S) as lease:
                report = asyncio.run(cycle(lease))
            if lease.waited_for:
                note = f"waited {lease.waited_s:.0f} s for {lease.waited_for}, which was writing to this target"
                report.notes.append(note)
                self.context.log.info(note)
            if lease.took_over_from:
                report.notes.append(f"took over the lease of {lease.took_over_from}, which had stopped renewing it")
        if quirks.revision != revision:
            state.set_value(QUIRKS_NAMESPACE, target_id, json.dumps(quirks.to_dict()))
        return report

    def _wanted(self, name: str) -> bool:
        return name in self.selected

    def _result(self, name: str, metadata: dict[str, Any]) -> MaterializeResult[Any]:
        return MaterializeResult(asset_key=self.names[name], metadata=metadata)

    def _roster_results(self, loaded: Any) -> Iterator[MaterializeResult[Any]]:
        roster = loaded.roster
        source = loaded.description
        if self._wanted("idp_users"):
            lineage = _column_lineage(roster, self.names["roster_files"])
            yield self._result(
                "idp_users",
                {
                    **frame_metadata(roster.users, preview_columns=["key", "shard", "displayName", "active"]),
                    "source": source,
                    **_read_metadata(loaded.read),
                    **({"dagster/column_lineage": lineage} if lineage is not None else {}),
                    **counts_metadata(_numeric(roster.stats)),
                },
            )
        if self._wanted("idp_groups"):
            yield self._result("idp_groups", frame_metadata(roster.groups, preview_columns=["key", "displayName"]))
        if self._wanted("idp_memberships"):
            yield self._result(
                "idp_memberships",
                frame_metadata(roster.memberships, preview_columns=["group_key_norm", "user_key_norm"]),
            )
        if self._wanted("roster_rejections"):
            rejected: pd.DataFrame = roster.rejected
            if len(rejected):
                self.context.log.warning(f"{len(rejected)} roster rows were set aside; see roster_rejections")
            yield self._result(
                "roster_rejections",
                {
                    **frame_metadata(rejected, preview_columns=["table", "row", "key", "field", "reason"]),
                    **counts_metadata(
                        {
                            f"rejected_{table}": int((rejected["table"] == table).sum()) if len(rejected) else 0
                            for table in ("users", "groups", "memberships")
                        }
                    ),
                },
            )

    def _snapshot_results(self, report: Any) -> Iterator[MaterializeResult[Any] | AssetCheckResult]:
        if not self._wanted("target_snapshot"):
            return
        verdict = report.target_read
        drift: pd.DataFrame = report.drift
        adoption = report.adoption
        metadata: dict[str, Any] = {"read": verdict is not None}
        if verdict is not None:
            metadata.update(
                counts_metadata(
                    {
                        "users_read": verdict.users_read,
                        "groups_read": verdict.groups_read,
                        "users_adopted": adoption.users_adopted if adoption else 0,
                        "groups_adopted": adoption.groups_adopted if adoption else 0,
                        "memberships_adopted": adoption.memberships_adopted if adoption else 0,
                        "drifted_attributes": len(drift),
                        "missing_confirmed": verdict.missing_confirmed,
                    }
                )
            )
            metadata["read_trusted"] = verdict.trusted
            if verdict.reason:
                metadata["read_note"] = verdict.reason
        else:
            metadata["reason"] = "state store not empty and reconciliation not requested"
        yield self._result("target_snapshot", metadata)
        checked = verdict is not None and self.config.reconcile
        yield AssetCheckResult(
            asset_key=self.names["target_snapshot"],
            check_name="target_matches_managed_state",
            passed=drift.empty,
            severity=AssetCheckSeverity.WARN,
            description=(
                "not checked in this run (run the scim_reconcile job, or reconcile: true)"
                if not checked
                else "the target matches what we manage"
                if drift.empty
                else f"{len(drift)} managed attribute(s) differ on the target; the next cycle restores the IdP's "
                "values — make such changes in the IdP, not in the target"
            ),
            metadata={
                "checked": checked,
                "drifted_attributes": len(drift),
                "preview": MetadataValue.md(
                    markdown_table(drift[["resource_type", "key", "attribute"]].head(PREVIEW_LIMIT))
                    if len(drift)
                    else "_none_"
                ),
            },
        )

    def _change_results(
        self, report: Any, outcome: Any, wanted: Sequence[str]
    ) -> Iterator[MaterializeResult[Any] | AssetCheckResult]:
        counts = outcome.counts
        by_kind = {"user_changes": "user", "group_changes": "group", "membership_changes": "membership"}
        plan_counts = {
            "user_changes": {
                name: counts[f"user_{name}"] for name in ("creates", "updates", "enables", "disables", "deletes")
            },
            "group_changes": {
                name: counts[f"group_{name}"] for name in ("creates", "renames", "updates", "releases", "deletes")
            },
            "membership_changes": {
                "member_adds": counts["member_adds"],
                "member_removes": counts["member_removes"],
                "deferred": counts["deferred"],
            },
        }
        guards = {guard.name: guard for guard in report.guards}
        for name, kind in by_kind.items():
            if name not in wanted or not self._wanted(name):
                continue
            rows = [change for change in outcome.changes if change.kind == kind]
            preview = pd.DataFrame([row.model_dump() for row in rows[:PREVIEW_LIMIT]], columns=["op", "key", "detail"])
            metadata: dict[str, Any] = {
                "dagster/row_count": len(rows),
                **counts_metadata(plan_counts[name]),
                "preview": MetadataValue.md(markdown_table(preview) if rows else "_no change_"),
                "executed": not (self.dry_run or report.stopped_by_guard),
            }
            if self.shards is not None:
                metadata["shards"] = ", ".join(str(shard) for shard in sorted(self.shards))
            if name == "membership_changes" and outcome.deferred:
                deferred = pd.DataFrame([row.model_dump() for row in outcome.deferred[:PREVIEW_LIMIT]])
                metadata["deferred_preview"] = MetadataValue.md(markdown_table(deferred))
            yield self._result(name, metadata)
            for guard_name in GUARDS_BY_ASSET[name]:
                guard = guards.get(guard_name)
                if guard is None:
                    continue
                yield AssetCheckResult(
                    asset_key=self.names[name],
                    check_name=guard.name,
                    passed=guard.passed,
                    description=guard.message,
                    metadata={"observed": guard.observed, "limit": guard.limit},
                )

    def _provisioning_results(
        self, report: Any, audit: pd.DataFrame, wanted: Sequence[str]
    ) -> Iterator[MaterializeResult[Any]]:
        execution = report.execution
        kinds = {
            "group_provisioning": "Groups",
            "user_provisioning": "Users",
            "membership_provisioning": "Members",
            **PAM_RESOURCE_TYPES,
        }
        for name, resource_type in kinds.items():
            if name not in wanted or not self._wanted(name):
                continue
            rows = _audit_rows(audit, name)
            outcomes = rows["outcome"].value_counts().to_dict() if len(rows) else {}
            failures = [f for f in execution.failures if _failure_kind(f) == resource_type]
            yield self._result(
                name,
                {
                    **frame_metadata(rows, preview_columns=["operation", "key", "outcome", "http_status", "error"]),
                    "calls": len(rows),
                    **counts_metadata({f"outcome_{k}": int(v) for k, v in outcomes.items()}),
                    "failed": len(failures),
                    "target": self.target.describe(),
                    **(
                        {
                            "failure_examples": MetadataValue.text(
                                "\n".join(f"{f.op} {f.key!r}: {f.message}" for f in failures[:10])
                            )
                        }
                        if failures
                        else {}
                    ),
                },
            )
        if "provisioning_audit" in wanted and self._wanted("provisioning_audit"):
            failed = int((audit["outcome"] == "failed").sum()) if len(audit) else 0
            outcomes = audit["outcome"].value_counts().to_dict() if len(audit) else {}
            yield self._result(
                "provisioning_audit",
                {
                    **frame_metadata(
                        audit, preview_columns=["at", "resource_type", "operation", "key", "http_status", "outcome"]
                    ),
                    "calls": len(audit),
                    **counts_metadata({f"outcome_{k}": int(v) for k, v in outcomes.items()}),
                    "failures": failed,
                    "retries": execution.retries,
                    "wall_s": round(execution.wall_s, 3),
                },
            )

    def _pam_results(
        self, report: Any, outcome: Any, audit: pd.DataFrame, executed: bool
    ) -> Iterator[MaterializeResult[Any] | AssetCheckResult]:
        """The PAM kinds' change sets, provisioning and access snapshot (in topological order)."""
        pam = report.pam
        kinds = {"container_changes": "container", "permission_changes": "permission"}
        kinds["privileged_data_changes"] = "privileged_data"
        counts = outcome.counts
        plan_counts = {
            "container_changes": ("container_creates", "container_adoptions", "access_drift"),
            "permission_changes": (
                "permission_adds",
                "permission_deletes",
                "permission_adoptions",
                "permissions_deferred",
                "access_rejected_rows",
            ),
            "privileged_data_changes": ("placement_attaches", "placement_detaches"),
        }
        guards = {guard.name: guard for guard in report.guards}
        for name, kind in kinds.items():
            if not self._wanted(name):
                continue
            rows = [change for change in outcome.changes if change.kind == kind]
            preview = pd.DataFrame([row.model_dump() for row in rows[:PREVIEW_LIMIT]], columns=["op", "key", "detail"])
            metadata: dict[str, Any] = {
                "dagster/row_count": len(rows),
                **counts_metadata({field: int(counts.get(field, 0)) for field in plan_counts[name]}),
                "preview": MetadataValue.md(markdown_table(preview) if rows else "_no change_"),
                "executed": executed,
                "access_file": pam.access.path if pam is not None else "(none: SCIM_ACCESS is not set)",
            }
            if name == "container_changes" and outcome.access_drift:
                drift = pd.DataFrame([row.model_dump() for row in outcome.access_drift[:PREVIEW_LIMIT]])
                metadata["drift_preview"] = MetadataValue.md(markdown_table(drift))
            if name == "permission_changes" and pam is not None and len(pam.access.rejected):
                rejected = pam.access.rejected[["row", "key", "field", "reason"]].head(PREVIEW_LIMIT)
                metadata["rejected_preview"] = MetadataValue.md(markdown_table(rejected))
            yield self._result(name, metadata)
            for guard_name in GUARDS_BY_ASSET.get(name, ()):
                guard = guards.get(guard_name)
                if guard is None:
                    continue
                yield AssetCheckResult(
                    asset_key=self.names[name],
                    check_name=guard.name,
                    passed=guard.passed,
                    description=guard.message,
                    metadata={"observed": guard.observed, "limit": guard.limit},
                )
        if executed:
            yield from self._provisioning_results(report, audit, PAM_PROVISIONING_ASSETS)
        if self._wanted("access_snapshot"):
            yield from self._access_snapshot_results(pam)

    def _access_snapshot_results(self, pam: Any) -> Iterator[MaterializeResult[Any] | AssetCheckResult]:
        if pam is None:
            yield self._result("access_snapshot", {"read": False, "reason": "no access file (SCIM_ACCESS)"})
            yield AssetCheckResult(
                asset_key=self.names["access_snapshot"],
                check_name="access_matches_file",
                passed=True,
                severity=AssetCheckSeverity.WARN,
                description="not checked: no access file",
            )
            return
        snapshot: pd.DataFrame = pam.access_snapshot
        drift: pd.DataFrame = pam.access_drift
        path = pipeline_home(self.context.instance) / "access_snapshots" / f"{self.context.run.run_id}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        snapshot.to_csv(path, index=False)
        _prune_reports(path.parent, pattern="*.csv")
        managed = snapshot["managed"].astype(bool) if len(snapshot) else pd.Series([], dtype=bool)
        principals = snapshot[["container_id", "principal_type", "principal_id"]].drop_duplicates()
        yield self._result(
            "access_snapshot",
            {
                **frame_metadata(
                    snapshot, preview_columns=["container", "principal_type", "principal", "right", "managed"]
                ),
                # Numbers, so the UI plots them over time.
                **counts_metadata(
                    {
                        "containers": int(snapshot["container_id"].nunique()) if len(snapshot) else 0,
                        "permissions": len(principals),
                        "rights": len(snapshot),
                        "managed_rights": int(managed.sum()),
                        "unmanaged_rights": int((~managed).sum()),
                        "privileged_data": len(pam.placement_snapshot),
                        "drift": len(drift),
                    }
                ),
                "read_s": round(pam.read_s, 3),
                "read_requests": pam.target.requests,
                "path": str(path),
                "drift_preview": MetadataValue.md(
                    markdown_table(drift.head(PREVIEW_LIMIT)) if len(drift) else "_none_"
                ),
            },
        )
        yield AssetCheckResult(
            asset_key=self.names["access_snapshot"],
            check_name="access_matches_file",
            passed=drift.empty,
            severity=AssetCheckSeverity.WARN,
            description="the containers hold the access file's rights"
            if drift.empty
            else f"{len(drift)} permission(s) differ from the access file",
            metadata={"drift": len(drift)},
        )

    def _raise_if_failed(self, report: Any, outcome: Any) -> None:
        if report.stopped_by_guard:
            failed = [guard for guard in report.guards if not guard.passed]
            raise Failure(
                description="stopped by a guard before any call and any state change: "
                + "; ".join(f"{guard.name}: {guard.message}" for guard in failed),
                metadata={"guards_failed": len(failed)},
            )
        if report.execution.failed:
            lines = [f"{f.resource_type} {f.op} {f.key!r}: {f.message}" for f in report.execution.failures[:10]]
            if report.execution.circuit_message:
                lines.insert(0, report.execution.circuit_message)
            raise Failure(
                description=f"{len(report.execution.failures)} change(s) failed; the next cycle retries them. "
                + " | ".join(lines),
                metadata={"failures": len(report.execution.failures)},
            )


KEPT_REPORTS = 1000


def _prune_reports(folder: Any, keep: int = KEPT_REPORTS, *, pattern: str = "*.json") -> None:
    """Keep the newest ``keep`` run reports (and access snapshots): an hourly schedule must not fill the disk
    (Dagster keeps the runs)."""
    reports = sorted(folder.glob(pattern), key=lambda path: path.stat().st_mtime)
    for old in reports[:-keep]:
        old.unlink(missing_ok=True)


def _has_key(context: AssetExecutionContext) -> bool:
    try:
        return bool(context.has_partition_key)
    except Exception:
        return False


def _read_metadata(read: dict[str, Any]) -> dict[str, Any]:
    """What the source read (mode, pages, watermark, wall time): numbers stay numbers so the UI plots them."""
    metadata: dict[str, Any] = {}
    for name, value in read.items():
        if value is None or name == "source":
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            metadata[f"read_{name}" if not name.startswith("read_") else name] = str(value)
        else:
            metadata[f"read_{name}" if not name.startswith("read_") else name] = value
    return metadata


def _numeric(stats: Any) -> dict[str, int]:
    return {str(name): int(value) for name, value in (stats or {}).items() if isinstance(value, int | float)}


def _audit_rows(audit: pd.DataFrame, name: str) -> pd.DataFrame:
    if audit.empty:
        return audit
    members = audit["operation"].isin(["add_members", "remove_members"])
    if name in PAM_RESOURCE_TYPES:
        rows = audit[audit["resource_type"] == PAM_RESOURCE_TYPES[name]]
    elif name == "membership_provisioning":
        rows = audit[members]
    elif name == "group_provisioning":
        rows = audit[(audit["resource_type"] == "Groups") & ~members]
    else:
        rows = audit[audit["resource_type"] == "Users"]
    return rows.reset_index(drop=True)


def _failure_kind(failure: Any) -> str:
    if failure.op in ("add_members", "remove_members"):
        return "Members"
    return str(failure.resource_type)


def _column_lineage(roster: Any, roster_files: AssetKey) -> TableColumnLineage | None:
    """Which roster column feeds each SCIM attribute of idp_users, from the mapping in effect."""
    sources: dict[str, list[str]] | None = getattr(roster, "attribute_sources", None)
    if not sources:
        return None
    return TableColumnLineage(
        deps_by_column={
            attribute: [TableColumnDep(asset_key=roster_files, column_name=column) for column in columns]
            for attribute, columns in sources.items()
            if columns
        }
    )


class _ProgressReporter:
    """Logs the progress of a long cycle every few seconds — to Dagster and to the CLI — with rate and ETA."""

    def __init__(self, context: AssetExecutionContext) -> None:
        self._context = context
        self._last = 0.0
        self._started = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self._last < 2.0:
            return
        self._last = now
        elapsed = max(now - self._started, 1e-6)
        rate = done / elapsed
        eta = (total - done) / rate if rate > 0 else 0.0
        message = f"{done:,}/{total:,} changes done, {rate:,.0f}/s" + (
            f", about {eta:,.0f} s left" if done < total else ""
        )
        self._context.log.info(message)
        progress_logger.info(message)
