"""The asset graph of one SCIM target and its single step (see :mod:`scim_pipeline.assets.catalogue` for the graph).

Every asset is computed by ONE step, ``scim_cycle``, which opens one engine cycle
(:class:`scim_pipeline.sync.engine.SyncEngine`) and renders its typed report: the roster as read, the change sets
(planned, guarded and executed in this same run — a change set made by another run is never executed), the calls
made and their outcomes, and the audit trail. What a selection means is explicit:

- the kinds selected (their change sets or provisioning) are the kinds this cycle syncs — the user, group and
  permission sync jobs select theirs; a selection of roster assets only reads the roster and touches no target;
- ``dry_run: true`` plans and checks the guards without executing anything (the ``scim_plan`` job). A change set
  selected without its provisioning in a run that is not a dry run is refused before anything happens.

The per-identity assets (users, their memberships) are partitioned by shard; a run covers one shard, a range, or —
launched without a partition (the Launchpad, ``dagster job execute``, the schedule, the CLI) — every shard, and each
shard's partition gets its own rows and counts. Groups, Delinea's PAM kinds and the audit are not partitioned.
"""

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd
from dagster import (
    AssetCheckEvaluation,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetMaterialization,
    AssetObservation,
    AssetsDefinition,
    AssetSpec,
    BackfillPolicy,
    Config,
    Failure,
    StaticPartitionsDefinition,
    TableColumnDep,
    TableColumnLineage,
    multi_asset,
)
from pydantic import Field

from scim_pipeline.assets.catalogue import ASSETS, CHECKS, EXTERNAL, AssetEntry, CheckEntry, entry
from scim_pipeline.assets.health import cycle_health_checks, token_refused_checks
from scim_pipeline.assets.partitions import shard_partition_key, shard_partitions, shards_of
from scim_pipeline.assets.render import CycleView, rows_table
from scim_pipeline.assets.translator import ScimTranslator, external_props, props_of
from scim_pipeline.resources.pools import DEFAULT_POOL
from scim_pipeline.scim.errors import AuthenticationError, ConfigurationError

if TYPE_CHECKING:
    from scim_pipeline.resources.pipeline import ProvisioningStateResource, RosterSourceResource, SyncPolicyResource
    from scim_pipeline.resources.target import ScimTargetResource
    from scim_pipeline.sync.cycle import CycleReport

__all__ = ["CycleAssets", "CycleConfig", "ResourceKeys", "build_cycle_assets"]

progress_logger = logging.getLogger("scim_pipeline.progress")

TranslationFn = Callable[[AssetSpec, Any], AssetSpec]

DRY_RUN_TAG = "scim_pipeline/dry_run"
"""A job tagged ``scim_pipeline/dry_run=true`` plans only, unless its run config says otherwise (a partitioned job
cannot carry a default config for runs launched without a partition; a tag can)."""

RECONCILE_TAG = "scim_pipeline/reconcile"
"""A job tagged ``scim_pipeline/reconcile=true`` reads the whole target first, unless its run config says otherwise."""

ON_DEMAND_KINDS = frozenset({"users", "memberships"})
SYNCED_KINDS = ("users", "groups", "memberships", "containers", "permissions", "privileged_data")
PAM_KINDS = frozenset({"containers", "permissions", "privileged_data"})


class CycleConfig(Config):
    """Run configuration of the sync step."""

    dry_run: bool | None = Field(
        default=None,
        description="Plan and evaluate the guards; execute nothing. Unset: the job decides — the scim_plan job "
        f"(tagged {DRY_RUN_TAG}=true) is a dry run, every other job executes.",
    )
    reconcile: bool | None = Field(
        default=None,
        description="Read the whole target first: adopt unmanaged objects matching roster identities, report and "
        "repair drift. A run against an empty state store always reads the target, to adopt existing objects. "
        f"Unset: the job decides — the scim_reconcile job (tagged {RECONCILE_TAG}=true) reconciles.",
    )
    allow_mass_changes: bool = Field(
        default=False,
        description="Let this one run pass the deletion, empty-roster, shrunken-roster, mass-update and removal "
        "guards (SCIM_ALLOW_MASS_CHANGES=1 does the same).",
    )
    user: str | None = Field(
        default=None,
        description="Provision on demand: only this roster user (its userName, or the mapping's matching key) and "
        "its memberships, now — guarded, audited, under the writer lease. No other identity is created, changed or "
        "deprovisioned and no group is created; the run's log and audit asset carry a step-by-step report.",
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
    """Catalogue name → asset key (after translation)."""
    partitions: StaticPartitionsDefinition

    def key(self, name: str) -> AssetKey:
        return self.keys[name]

    def selection(self, *names: str) -> list[AssetKey]:
        return [self.keys[name] for name in names]


def build_cycle_assets(
    *,
    shards: int,
    shards_per_run: int | None = None,
    translator: ScimTranslator | None = None,
    translation: TranslationFn | None = None,
    target_name: str = "",
    resource_keys: ResourceKeys | None = None,
    pool: str = DEFAULT_POOL,
    upstream: Mapping[str, AssetKey] | None = None,
    max_failure_share: float = 0.05,
) -> CycleAssets:
    """Build the assets of one target.

    ``translator`` (and the Component's ``translation``) decide keys, groups, kinds, descriptions, owners and tags;
    ``upstream`` names assets of the user's own project (``users``, optionally ``groups`` and ``memberships``:
    DataFrames in the default roster columns, or those the mapping file names) that replace the roster source, so
    lineage runs from the user's HR model to the target."""
    keys = resource_keys or ResourceKeys()
    translator = translator or ScimTranslator()
    upstream = dict(upstream or {})
    if upstream and "users" not in upstream:
        raise ConfigurationError("an upstream roster needs a users asset (upstream_users)")
    partitions = shard_partitions(shards)

    def translated(props: Any) -> AssetSpec:
        spec = translator.get_asset_spec(props)
        return translation(spec, props) if translation is not None else spec

    external = {name: translated(external_props(name, target_name)) for name in EXTERNAL}
    bare = {asset.name: translated(props_of(asset, target_name)) for asset in ASSETS}
    names = {name: spec.key for name, spec in {**external, **bare}.items()}
    if upstream:
        names["roster_files"] = upstream["users"]
    specs = [_with_deps(bare[asset.name], asset, names, upstream, partitions) for asset in ASSETS]
    check_specs = [
        AssetCheckSpec(check.name, asset=names[check.asset], description=check.description, blocking=check.blocking)
        for check in CHECKS
    ]
    op_name = "__".join([target_name, "scim_cycle"]) if target_name else "scim_cycle"
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
        backfill_policy=policy,
        pool=pool,
        required_resource_keys={keys.target, keys.roster, keys.state, keys.policy},
        ins={f"upstream_{table}": AssetIn(key=key) for table, key in upstream.items()},
        description="One sync cycle of the SCIM target: roster → plan → guards → execute, in one step.",
    )
    def scim_cycle(
        context: AssetExecutionContext, config: CycleConfig, **frames: pd.DataFrame
    ) -> Iterator[AssetMaterialization | AssetObservation | AssetCheckResult | AssetCheckEvaluation]:
        step = _CycleStep(context, config, keys, names, partitions, max_failure_share=max_failure_share)
        yield from step.run(frames)

    sources: list[AssetsDefinition | AssetSpec] = [external["access_file"]]
    if not upstream:
        sources.insert(0, external["roster_files"])
    return CycleAssets(
        assets=[*sources, scim_cycle], cycle=scim_cycle, op_name=op_name, keys=names, partitions=partitions
    )


def _with_deps(
    spec: AssetSpec,
    asset: AssetEntry,
    names: Mapping[str, AssetKey],
    upstream: Mapping[str, AssetKey],
    partitions: StaticPartitionsDefinition,
) -> AssetSpec:
    deps: list[AssetKey] = []
    for dep in asset.deps:
        if dep == "roster_files" and upstream:
            table = {"users": "users", "groups": "groups", "memberships": "memberships"}.get(asset.kind, "users")
            deps.append(upstream.get(table, upstream["users"]))
        else:
            deps.append(names[dep])
    return spec.replace_attributes(deps=deps, skippable=True, partitions_def=partitions if asset.per_identity else None)


class _CycleStep:
    """One execution of the sync step: opens one engine cycle and renders its report as events."""

    def __init__(
        self,
        context: AssetExecutionContext,
        config: CycleConfig,
        keys: ResourceKeys,
        names: dict[str, AssetKey],
        partitions: StaticPartitionsDefinition,
        *,
        max_failure_share: float = 0.05,
    ) -> None:
        self.context = context
        self.max_failure_share = max_failure_share
        self.config = config
        self.names = names
        self.target: ScimTargetResource = getattr(context.resources, keys.target)
        self.roster: RosterSourceResource = getattr(context.resources, keys.roster)
        self.state: ProvisioningStateResource = getattr(context.resources, keys.state)
        self.policy: SyncPolicyResource = getattr(context.resources, keys.policy)
        self.shard_count = len(partitions.get_partition_keys())
        selected = context.selected_asset_keys
        self.selected = {asset.name for asset in ASSETS if names[asset.name] in selected}
        # A run covers the shards of its partition key or range; a run without one — or one that selects no
        # per-identity asset, such as the permission sync — covers every shard.
        partitioned_run = (context.has_partition_key_range or context.has_partition_key) and any(
            asset.per_identity and asset.name in self.selected for asset in ASSETS
        )
        run_shards = shards_of(context.partition_keys) if partitioned_run else list(range(self.shard_count))
        self.run_shards = sorted(set(run_shards))
        # A run over every shard is a whole cycle, whether launched with the full range or without a partition.
        self.shards: frozenset[int] | None = (
            None if len(self.run_shards) == self.shard_count else frozenset(self.run_shards)
        )
        tags = context.run.tags
        self.dry_run = config.dry_run if config.dry_run is not None else tags.get(DRY_RUN_TAG) == "true"
        self.reconcile = config.reconcile if config.reconcile is not None else tags.get(RECONCILE_TAG) == "true"
        self.kinds = frozenset(
            asset.kind
            for asset in ASSETS
            if asset.name in self.selected and asset.stage in ("changes", "provisioning") and asset.kind in SYNCED_KINDS
        )
        if config.user is not None and not config.user.strip():
            # Never a whole cycle by mistake: an empty name is refused, not read as "no user".
            raise Failure(description="user: empty; give a roster userName, or leave the field out for a whole cycle")
        self.user = config.user.strip() if config.user is not None else None
        if self.user is not None:
            # One identity and its memberships, whichever shard it is in.
            self.kinds &= ON_DEMAND_KINDS
            self.shards = None

    def run(self, frames: Mapping[str, pd.DataFrame]) -> Iterator[Any]:
        from scim_pipeline.sources import DataFrameRosterSource
        from scim_pipeline.sync.cycle import CycleOptions
        from scim_pipeline.sync.engine import SyncEngine

        context = self.context
        self._refuse_change_sets_without_provisioning()
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
        engine = SyncEngine(
            target=self.target,
            roster=self.roster.reader(context.instance, email_form=self.target.email_form),
            state_url=self.state.url(context.instance),
            lease_wait_s=self.state.lease_wait,
            lease_ttl_s=self.state.lease_ttl,
        )
        started = time.perf_counter()
        if self.user is not None and not self.kinds:
            raise Failure(
                description=f"user: {self.user!r} needs a job that syncs users (scim_sync, scim_user_sync or "
                "scim_plan); this job selects no user asset"
            )
        if not self.kinds:
            # Only the roster is selected: read it, touch no target.
            yield from self._roster_events(engine.extract(upstream=upstream), None)
            return
        options = CycleOptions(
            run_id=context.run.run_id,
            partition=",".join(context.partition_keys) if self.shards is not None else None,
            shards=self.shards,
            kinds=self.kinds,
            deprovision=self.policy.deprovision,
            member_chunk=self.target.member_chunk,
            dry_run=self.dry_run,
            reconcile=self.reconcile,
            guards=self.policy.guard_settings(allow_mass_changes=self.config.allow_mass_changes),
            user_match_attribute=self.roster.match_attributes()[0],
            group_match_attribute=self.roster.match_attributes()[1],
            max_operations=self.policy.max_operations_per_cycle,
            only_user=self.user,
        )
        try:
            report = engine.run(
                options,
                progress=_ProgressReporter(context),
                on_wait=lambda wait: self._tell(wait.describe()),
                upstream=upstream,
            )
        except AuthenticationError as error:
            yield from token_refused_checks(self._check, self.selected, error)
            raise
        for note in report.notes:
            context.log.info(note)
        if report.on_demand is not None:
            context.log.info("\n".join(report.on_demand.lines()))
        for kind, why in report.skipped.items():
            context.log.info(f"{kind} skipped: {why}")
        context.log.info(
            f"cycle done in {time.perf_counter() - started:.1f} s: {report.execution.calls} SCIM calls, "
            f"{len(report.execution.failures)} failed"
        )
        view = CycleView(report, self.shard_count, self.run_shards)
        yield from self._roster_events(report.roster, view)
        yield from self._change_and_provisioning_events(view)
        yield from cycle_health_checks(self._check, self.selected, report, max_failure_share=self.max_failure_share)
        self._raise_if_failed(report)

    def _tell(self, message: str) -> None:
        self.context.log.info(message)
        progress_logger.info(message)

    def _refuse_change_sets_without_provisioning(self) -> None:
        if self.dry_run:
            return
        alone = [
            asset.name
            for asset in ASSETS
            if asset.stage == "changes"
            and asset.name in self.selected
            and not any(
                other.stage == "provisioning" and other.kind == asset.kind and other.name in self.selected
                for other in ASSETS
            )
        ]
        if alone:
            raise Failure(
                description=f"{', '.join(alone)} selected without the provisioning of the same kind: a change set is "
                "executed by the run that plans it. Select the provisioning asset too (the scim_user_sync, "
                "scim_group_sync and scim_permission_sync jobs do), or run with dry_run: true (the scim_plan job) "
                "to only plan."
            )

    # ---- events ------------------------------------------------------------------------------------------

    def _materialize(self, name: str, metadata: Mapping[str, Any], shard: int | None = None) -> AssetMaterialization:
        partition = shard_partition_key(shard) if shard is not None else None
        return AssetMaterialization(asset_key=self.names[name], partition=partition, metadata=dict(metadata))

    def _per_shard(self, name: str, metadata_of: Callable[[int], Mapping[str, Any]]) -> Iterator[AssetMaterialization]:
        if name in self.selected:
            for shard in self.run_shards:
                yield self._materialize(name, metadata_of(shard), shard)

    def _whole(self, name: str, metadata: Callable[[], Mapping[str, Any]]) -> Iterator[AssetMaterialization]:
        if name in self.selected:
            yield self._materialize(name, metadata())

    def _roster_events(self, loaded: Any, view: CycleView | None) -> Iterator[Any]:
        if view is None:
            from scim_pipeline.sync.cycle import CycleOptions, CycleReport

            extraction = CycleReport(options=CycleOptions(run_id=self.context.run.run_id, dry_run=True), roster=loaded)
            view = CycleView(extraction, self.shard_count, self.run_shards)
        yield AssetObservation(asset_key=self.names["roster_files"], metadata=view.roster_read())
        lineage = _column_lineage(loaded.roster, self.names["roster_files"])
        for shard in self.run_shards if "idp_users" in self.selected else ():
            metadata = dict(view.idp_users(shard))
            if lineage is not None:
                metadata["dagster/column_lineage"] = lineage
            yield self._materialize("idp_users", metadata, shard)
        yield from self._whole("idp_groups", view.idp_groups)
        yield from self._per_shard("idp_memberships", view.idp_memberships)
        yield from self._whole("roster_rejections", view.roster_rejections)
        rejected = loaded.roster.rejected
        if len(rejected) and "roster_rejections" in self.selected:
            self.context.log.warning(f"{len(rejected)} roster rows were set aside; see roster_rejections")

    def _change_and_provisioning_events(self, view: CycleView) -> Iterator[Any]:
        report = view.report
        executed = view.executed
        guards = {guard.name: guard for guard in report.guards}
        pam_skipped = report.skipped.get("pam")
        # In the order the cycle ran them (an asset's events after those of what it depends on).
        yield from self._per_shard("user_changes", view.user_changes)
        yield from self._guard_checks("user_changes", guards)
        yield from self._whole("group_changes", view.group_changes)
        yield from self._guard_checks("group_changes", guards)
        if executed:
            yield from self._whole("group_provisioning", view.group_provisioning)
            yield from self._per_shard("user_provisioning", view.user_provisioning)
        yield from self._per_shard("membership_changes", view.membership_changes)
        yield from self._guard_checks("membership_changes", guards)
        if executed:
            yield from self._per_shard("membership_provisioning", view.membership_provisioning)
        if report.pam is not None:
            yield from self._whole("desired_access", view.desired_access)
            yield from self._whole("container_changes", lambda: view.pam_changes("container"))
            yield from self._whole("permission_changes", lambda: view.pam_changes("permission"))
            yield from self._guard_checks("permission_changes", guards)
            yield from self._whole("privileged_data_changes", lambda: view.pam_changes("privileged_data"))
            if executed:
                yield from self._whole("container_provisioning", lambda: view.pam_provisioning("Containers"))
                yield from self._whole("permission_provisioning", lambda: view.pam_provisioning("ContainerPermissions"))
                yield from self._whole("privileged_data_provisioning", lambda: view.pam_provisioning("PrivilegedData"))
                yield from self._whole("access_snapshot", view.access_snapshot)
                yield from self._access_check(view)
        elif self.selected & {asset.name for asset in ASSETS if asset.kind in PAM_KINDS or asset.kind == "access"}:
            why = pam_skipped or "no access file (SCIM_ACCESS is not set)"
            self.context.log.info(f"containers, permissions and privileged data not synced: {why}")
        if executed:
            yield from self._whole("provisioning_audit", view.provisioning_audit)
            yield from self._drift_check(view)

    def _check(
        self, check: CheckEntry, passed: bool, description: str, metadata: Mapping[str, Any], **extra: Any
    ) -> Any:
        """A check result; on a per-identity asset an evaluation of the whole asset (Dagster cannot attach a
        result to a partitioned asset of a run launched without a partition)."""
        key = self.names[check.asset]
        severity = AssetCheckSeverity.ERROR if check.blocking else AssetCheckSeverity.WARN
        if entry(check.asset).per_identity:
            return AssetCheckEvaluation(
                asset_key=key,
                check_name=check.name,
                passed=passed,
                description=description,
                metadata=dict(metadata),
                severity=severity,
                blocking=check.blocking,
            )
        return AssetCheckResult(
            asset_key=key,
            check_name=check.name,
            passed=passed,
            description=description,
            metadata=dict(metadata),
            severity=severity,
        )

    def _guard_checks(self, asset: str, guards: Mapping[str, Any]) -> Iterator[Any]:
        if asset not in self.selected:
            return
        for check in CHECKS:
            guard = guards.get(check.name)
            if check.asset == asset and guard is not None:
                yield self._check(
                    check, guard.passed, guard.message, {"observed": guard.observed, "limit": guard.limit}
                )

    def _drift_check(self, view: CycleView) -> Iterator[Any]:
        if "provisioning_audit" not in self.selected:
            return
        report = view.report
        drift: pd.DataFrame = report.drift
        checked = report.target_read is not None and self.reconcile
        check = next(c for c in CHECKS if c.name == "target_matches_managed_state")
        description = (
            "not checked in this run (run the scim_reconcile job, or reconcile: true)"
            if not checked
            else "the target matches what we manage"
            if drift.empty
            else f"{len(drift)} managed attribute(s) differ on the target; the next cycle restores the IdP's values "
            "— make such changes in the IdP, not in the target"
        )
        yield self._check(
            check,
            drift.empty,
            description,
            {
                "checked": checked,
                "drifted_attributes": len(drift),
                "drift": rows_table(drift, ["resource_type", "key", "attribute"]),
            },
        )

    def _access_check(self, view: CycleView) -> Iterator[Any]:
        pam = view.report.pam
        if pam is None or "access_snapshot" not in self.selected:
            return
        drift: pd.DataFrame = pam.access_drift
        check = next(c for c in CHECKS if c.name == "access_matches_file")
        yield self._check(
            check,
            drift.empty,
            "the containers hold the access file's rights"
            if drift.empty
            else f"{len(drift)} permission(s) differ from the access file",
            {"drift": len(drift)},
        )

    def _raise_if_failed(self, report: "CycleReport") -> None:
        if report.stopped_by_guard:
            failed = [guard for guard in report.guards if not guard.passed]
            raise Failure(
                description="stopped by a guard before any call and any state change: "
                + "; ".join(f"{guard.name}: {guard.message}" for guard in failed),
                metadata={"guards_failed": len(failed)},
            )
        if report.stopped:
            raise Failure(description=report.stopped, metadata={"calls": report.execution.calls})
        if report.execution.failed:
            lines = [f"{f.resource_type} {f.op} {f.key!r}: {f.message}" for f in report.execution.failures[:10]]
            if report.execution.circuit_message:
                lines.insert(0, report.execution.circuit_message)
            raise Failure(
                description=f"{len(report.execution.failures)} change(s) failed; the next cycle retries them. "
                + " | ".join(lines),
                metadata={"failures": len(report.execution.failures)},
            )


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
