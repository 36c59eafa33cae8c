"""THE sync engine: one provisioning cycle as explicit phases. Every way of running a sync runs this — the Dagster
assets (and through them the CLI, the schedule and backfills), the tests, the soak and the benchmarks.

Phases, in order (a dry run stops after the guards):

1. **read target** — only when the state store is empty (adopt what matches the roster, never duplicate) or a
   reconciliation is asked for (adopt orphans whose matching key is a roster identity, report and repair drift).
2. **plan** — users, groups, and a preview of the memberships (with the ids the creates will produce), against what
   we manage; removals of identities whose roster row was rejected are held.
3. **guards** — over the whole plan; a failed guard stops the cycle before any call and any state change.
4. **group upserts** → 5. **user upserts** (managers before their reports) → 6. **memberships** (planned again now
   that the new users and groups have ids) → 7. **containers**, **permissions** and **privileged data** (Delinea's
   PAM kinds, from the access file: :mod:`scim_pipeline.sync.pam`; read and planned in 2, guarded in 3, executed by
   the same executor) → 8.
   **removals** (users disabled or deleted; groups released — after the members we added were removed in 6 — or
   deleted).

Each phase is a small object with a name and a ``run`` coroutine over a shared :class:`CycleContext`; new resource
kinds add phases (see :data:`EXECUTION_PHASES`) without a second orchestration. The result is a typed
:class:`CycleReport`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import pandas as pd

from scim_pipeline.scim.client import ScimClient
from scim_pipeline.scim.profiles import Operation
from scim_pipeline.sync.execute.executor import (
    CircuitBreaker,
    ExecutionReport,
    PamChangeSet,
    ProgressCallback,
    execute,
)
from scim_pipeline.sync.execute.reconcile import DRIFT_COLUMNS, AdoptionReport, ReadVerdict, reconcile_target
from scim_pipeline.sync.on_demand import OnDemand, OnDemandReport, on_demand_report
from scim_pipeline.sync.pam import PAM_KINDS, PAM_PHASES, PamReport, plan_pam, principal_ids_of
from scim_pipeline.sync.plan.budget import (
    BUDGET_REASON,
    PAM_WRITE_OPS,
    BudgetReport,
    OperationBudget,
    PlanSplit,
)
from scim_pipeline.sync.plan.changes import (
    ChangeSet,
    PlanSettings,
    RosterFrames,
    plan_groups,
    plan_memberships,
    plan_users,
)
from scim_pipeline.sync.plan.guards import GuardResult, GuardSettings, evaluate_guards, guards_passed
from scim_pipeline.sync.plan.holds import hold_rejected
from scim_pipeline.sync.plan.payloads import MANAGER_PATH
from scim_pipeline.sync.state import EscrowPolicy, ManagedSnapshot, ProvisioningState
from scim_pipeline.sync.state.lease import LeaseLost, WriterLease

if TYPE_CHECKING:
    from scim_pipeline.sync.pam.access import AccessFile

__all__ = [
    "ALL_KINDS",
    "EXECUTION_PHASES",
    "CycleContext",
    "CycleOptions",
    "CycleReport",
    "Phase",
    "run_cycle",
]

logger = logging.getLogger(__name__)

Kind = Literal["users", "groups", "memberships", "containers", "permissions", "privileged_data"]
ALL_KINDS: frozenset[str] = frozenset({"users", "groups", "memberships"}) | PAM_KINDS
"""Every kind; the PAM kinds do nothing unless an access file is given."""

ON_DEMAND_KINDS = frozenset({"users", "memberships"})
USER_UPSERT_OPS = frozenset({"create", "update", "enable", "resolve", "refresh"})
USER_REMOVAL_OPS = frozenset({"disable", "delete"})
GROUP_REMOVAL_OPS = frozenset({"release", "delete"})
PLACEHOLDER_ID = "(created in this cycle)"


@dataclass(frozen=True)
class CycleOptions:
    """How one cycle runs. ``shards=None`` covers every shard; ``kinds`` limits which kinds are planned and
    executed (the user, group and permission sync jobs)."""

    run_id: str
    partition: str | None = None
    shards: frozenset[int] | None = None
    kinds: frozenset[str] = ALL_KINDS
    deprovision: Literal["disable", "delete"] = "disable"
    member_chunk: int = 100
    dry_run: bool = False
    reconcile: bool = False
    adopt: bool = True
    guards: GuardSettings | None = None
    user_match_attribute: str = "userName"
    group_match_attribute: str = "displayName"
    escrow: EscrowPolicy | None = None
    max_operations: int | None = None
    """The operation budget (``SCIM_MAX_OPERATIONS_PER_CYCLE``): at most this many writes, the rest deferred to
    the next cycles (:mod:`scim_pipeline.sync.plan.budget`). None: no limit."""
    only_user: str | None = None
    """Provision on demand: only this roster user (its matching key) and its memberships
    (:mod:`scim_pipeline.sync.on_demand`); nothing else is planned, so no one else is deprovisioned."""

    def __post_init__(self) -> None:
        if self.max_operations is not None and self.max_operations < 1:
            raise ValueError("max_operations (SCIM_MAX_OPERATIONS_PER_CYCLE) must be at least 1")

    @property
    def whole(self) -> bool:
        """True when the cycle covers every shard (groups are released and the PAM kinds synced only then)."""
        return self.shards is None

    @property
    def wants_pam(self) -> bool:
        """True when this cycle syncs Delinea's PAM kinds: asked for, over every shard."""
        return bool(self.kinds & PAM_KINDS) and self.whole


@dataclass
class PhaseTiming:
    name: str
    seconds: float
    calls: int = 0


@dataclass
class CycleReport:
    """What one cycle planned and did. ``failed``: a guard stopped it, a change failed or the circuit opened."""

    options: CycleOptions
    plan: ChangeSet = field(default_factory=ChangeSet.empty)
    guards: list[GuardResult] = field(default_factory=list)
    execution: ExecutionReport = field(default_factory=ExecutionReport)
    adoption: AdoptionReport | None = None
    membership_plan: ChangeSet | None = None
    drift: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(DRIFT_COLUMNS)))
    target_read: ReadVerdict | None = None
    rejected: pd.DataFrame = field(default_factory=pd.DataFrame)
    deferred: pd.DataFrame = field(default_factory=lambda: _empty_deferred())  # noqa: PLW0108 - defined below
    notes: list[str] = field(default_factory=list)
    phases: list[PhaseTiming] = field(default_factory=list)
    pam: PamReport | None = None
    """Containers, permissions and privileged data (when an access file was given)."""
    skipped: dict[str, str] = field(default_factory=dict)
    """Kinds this cycle left out, with why (a run over some shards syncs no PAM kind)."""
    target: str = ""
    """Where the cycle provisioned to, without any credential."""
    roster: Any = None
    """The roster as this cycle read it (:class:`scim_pipeline.sync.engine.LoadedRoster`), when read by the engine."""
    lease_waited_for: str | None = None
    lease_waited_s: float = 0.0
    lease_took_over_from: str | None = None
    """The holder whose expired lease this cycle took over: whatever it had in flight was looked up, not recreated."""
    audit: pd.DataFrame = field(default_factory=pd.DataFrame)
    """This cycle's rows of the audit trail (every call it made), when run by the engine."""
    budget: BudgetReport | None = None
    """What the operation budget deferred to the next cycles (with ``options.max_operations``)."""
    on_demand: OnDemandReport | None = None
    """The step-by-step account of the one identity of an on-demand run (``options.only_user``)."""

    @property
    def dry_run(self) -> bool:
        return self.options.dry_run

    @property
    def deferred_by_budget(self) -> int:
        """Changes the operation budget left to the next cycles: users, groups and PAM changes, and every membership
        waiting for it (cut by the budget, or of a user or group whose create it deferred)."""
        if self.budget is None:
            return 0
        waiting = (
            int(self.deferred["reason"].astype(str).str.startswith(BUDGET_REASON).sum()) if len(self.deferred) else 0
        )
        return len(self.budget.rows()) + waiting

    @property
    def stopped_by_guard(self) -> bool:
        return not guards_passed(self.guards)

    @property
    def failed(self) -> bool:
        return self.stopped_by_guard or self.execution.failed

    @property
    def stopped(self) -> str | None:
        """Why this cycle stopped writing midway (its writer lease was lost, its credentials were refused), or None."""
        return self.execution.stopped

    @property
    def effective_plan(self) -> ChangeSet:
        """The user and group changes this cycle made (a dry run: would make): a change that failed, was held or
        was never sent — the circuit opened, the writer lease was lost — is not counted as done."""
        if self.dry_run:
            return self.plan
        done = self.execution.done
        users, groups = self.plan.users, self.plan.groups

        def took_effect(frame: pd.DataFrame, resource_type: str) -> pd.DataFrame:
            if frame.empty:
                return frame
            pairs = zip(frame["op"], frame["key"], strict=True)
            return frame[[(resource_type, str(op), str(key)) in done for op, key in pairs]]

        return ChangeSet(
            users=took_effect(users, "Users"),
            groups=took_effect(groups, "Groups"),
            memberships=self.plan.memberships,
        )

    @property
    def executed_memberships(self) -> ChangeSet:
        """The membership changes that were (or, in a dry run, would be) executed."""
        return self.membership_plan if self.membership_plan is not None else self.plan

    def summary(self) -> dict[str, float]:
        """The plan's counts and the execution's figures, numeric."""
        figures: dict[str, float] = {f"plan_{k}": v for k, v in self.plan.summary().items()}
        membership = self.executed_memberships.summary()
        figures["plan_member_adds"] = membership["member_adds"]
        figures["plan_member_removes"] = membership["member_removes"]
        figures["plan_deferred"] = len(self.deferred)
        figures.update(self.execution.summary())
        figures["guards_failed"] = sum(not g.passed for g in self.guards)
        if self.adoption is not None:
            figures["adopted_users"] = self.adoption.users_adopted
            figures["adopted_groups"] = self.adoption.groups_adopted
        figures["drifted_attributes"] = len(self.drift)
        if self.budget is not None:
            figures["deferred_by_budget"] = self.deferred_by_budget
        return figures


class Phase(Protocol):
    """One step of a cycle. ``kind`` names the resource kind it serves (``None``: every cycle runs it)."""

    name: str
    kind: str | None

    async def run(self, context: CycleContext) -> None: ...


@dataclass
class CycleContext:
    """What the phases of one cycle share."""

    client: ScimClient
    state: ProvisioningState
    roster: RosterFrames
    options: CycleOptions
    report: CycleReport
    breaker: CircuitBreaker
    progress: ProgressCallback | None = None
    lease: WriterLease | None = None
    access: AccessFile | None = None
    managed_memberships: int = 0
    """How many memberships we manage, as the plan read them (the guards need the count, not a second read)."""
    budget: OperationBudget = field(default_factory=lambda: OperationBudget(None))
    whole_plan: ChangeSet | None = None
    """The plan before the operation budget cut it: what the guards judge."""
    membership_allotment: int | None = None
    """Membership PATCHes the budget left for this cycle (the memberships are planned again before they run)."""
    blocked_releases: set[str] = field(default_factory=set)
    """Groups whose release waits for member removals the budget deferred."""
    waiting_keys: dict[str, set[str]] = field(default_factory=dict)
    """Users and groups (keys) whose create the budget deferred: their memberships wait with the budget's reason."""
    on_demand: OnDemand | None = None

    def snapshot(self) -> ManagedSnapshot:
        """What we manage in this cycle's scope (its shards; one identity when provisioning on demand)."""
        snapshot = self.state.snapshot(self.options.shards)
        return self.on_demand.scope(snapshot) if self.on_demand is not None else snapshot

    @property
    def plan_settings(self) -> PlanSettings:
        return PlanSettings(
            deprovision=self.options.deprovision,
            group_deprovision=_group_deprovision(self.client, self.options.deprovision),
            member_chunk=self.options.member_chunk,
            shards=self.options.shards,
        )

    def wants(self, kind: str | None) -> bool:
        return kind is None or kind in self.options.kinds

    async def execute(self, change_set: ChangeSet | PamChangeSet) -> ExecutionReport:
        """Run part of the plan (or the PAM kinds' changes) through the executor; each outcome reaches the state
        store and the audit at once."""
        if isinstance(change_set, PamChangeSet):
            if change_set.is_empty:
                return ExecutionReport()
        elif change_set.users.empty and change_set.groups.empty and change_set.memberships.empty:
            return ExecutionReport()
        if self.lease is not None:
            self.lease.check()  # another writer may own the target now: write nothing more
        result = await execute(
            self.client,
            self.state,
            change_set,
            run_id=self.options.run_id,
            partition=self.options.partition,
            progress=self.progress,
            breaker=self.breaker,
            escrow=self.options.escrow,
            user_match_attribute=self.options.user_match_attribute,
            group_match_attribute=self.options.group_match_attribute,
        )
        self.report.execution = self.report.execution.merge(result)
        return result


def _group_deprovision(client: ScimClient, deprovision: str) -> Literal["release", "delete"]:
    if deprovision != "delete":
        return "release"
    rules = client.profile.rules("Groups")
    return "delete" if Operation.DELETE in rules.operations else "release"


class ReadTarget:
    """Read the target in full when the state store is empty (adopt) or a reconciliation is asked for."""

    name = "read target"
    kind: str | None = None

    async def run(self, context: CycleContext) -> None:
        options = context.options
        if context.on_demand is not None:
            return  # one identity: looked up by its matching attribute in the plan, never the whole target
        first_run = context.state.is_empty()
        if not (options.reconcile or (first_run and options.adopt)) or options.dry_run:
            if first_run and options.adopt and options.dry_run:
                context.report.notes.append(
                    "the state store is empty: a real run first reads the target and adopts objects matching the "
                    "roster, so some creates shown here may turn out to be adoptions"
                )
            return
        outcome = await reconcile_target(
            context.client,
            context.state,
            context.roster,
            user_match_attribute=options.user_match_attribute,
            group_match_attribute=options.group_match_attribute,
            detect=options.reconcile and not first_run,
        )
        context.report.adoption = outcome.adoption
        context.report.drift = outcome.drift
        context.report.target_read = outcome.verdict
        context.report.notes.extend(outcome.notes)


class Plan:
    """Plan users and groups against what we manage, and preview the memberships; with an operation budget, keep
    what fits in its priority and defer the rest."""

    name = "plan"
    kind: str | None = None

    async def run(self, context: CycleContext) -> None:
        settings = context.plan_settings
        roster = context.roster
        full = context.state.snapshot(context.options.shards)
        snapshot = context.on_demand.scope(full) if context.on_demand is not None else full
        context.managed_memberships = len(snapshot.memberships)
        rejected = context.report.rejected
        users = (
            plan_users(roster.users, snapshot, settings, managers=full.users)
            if context.wants("users")
            else _empty_plan().users
        )
        groups = _empty_plan().groups
        if context.wants("groups"):
            groups = plan_groups(roster.groups, snapshot, settings)
        elif context.wants("memberships") and context.on_demand is None:
            # A membership sync without the group sync (a shard's run in a backfill) still creates the groups its
            # memberships need, so shards converge whichever run comes first; it never updates or removes a group.
            planned = plan_groups(roster.groups, snapshot, settings)
            needed = set(roster.memberships["group_key_norm"].astype(str))
            creates = planned["op"].eq("create") & planned["key_norm"].astype(str).isin(needed)
            groups = planned[creates].reset_index(drop=True)
            groups["reason"] = "needed_by_memberships"
        if not rejected.empty:
            users = hold_rejected(users, rejected, table="users")
            groups = hold_rejected(groups, rejected, table="groups")
        if context.on_demand is not None:
            adopted = await context.on_demand.match(context.client, context.state, roster.users, snapshot, users)
            if adopted is not None:
                snapshot = adopted
                users = plan_users(roster.users, snapshot, settings, managers=full.users)
        budget = context.budget
        split = PlanSplit(users, groups)
        if budget.limited:
            split.take_upserts(budget)
            users, groups = split.upserts()
            context.waiting_keys = split.waiting_creates()
        preview = _with_planned_creates(snapshot, users, groups)
        memberships = _empty_plan().memberships
        if context.wants("memberships"):
            memberships, _ = plan_memberships(_holding_memberships(roster, snapshot, rejected), preview, settings)
        member_cut = memberships.iloc[0:0]
        if budget.limited:
            memberships, member_cut = budget.take(memberships)
            context.membership_allotment = len(memberships)
        context.report.deferred = _deferred_memberships(roster, preview, settings, context.options)
        if context.options.kinds & PAM_KINDS and not context.options.whole:
            context.report.skipped["pam"] = (
                "containers, permissions and privileged data are synced by runs over every shard only; this run "
                f"covers shard(s) {', '.join(str(s) for s in sorted(context.options.shards or ()))}"
            )
        elif context.access is not None and context.options.wants_pam:
            ids = principal_ids_of(preview.users, preview.groups)
            context.report.pam = await plan_pam(context, ids)
        if not budget.limited:
            context.report.plan = ChangeSet(users=users, groups=groups, memberships=memberships)
            return
        pam_deferred = _take_pam(budget, context.report.pam)
        context.blocked_releases = _groups_with_removals(member_cut)
        split.take_deprovisions(budget, context.blocked_releases)
        users, groups, deferred_users, deferred_groups = split.result()
        context.whole_plan = ChangeSet(
            users=split.users, groups=split.groups, memberships=_concat([memberships, member_cut])
        )
        context.report.plan = ChangeSet(users=users, groups=groups, memberships=memberships)
        cut_pairs = _member_pairs(member_cut, roster)
        context.report.deferred = _with_budget_reasons(context.report.deferred, context.waiting_keys, cut_pairs)
        context.report.budget = BudgetReport(
            limit=int(budget.limit or 0),
            allotted=budget.used,
            users=deferred_users,
            groups=deferred_groups,
            memberships=cut_pairs,
            pam=pam_deferred,
        )
        context.report.notes.append(context.report.budget.note(context.report.deferred_by_budget))


class Guards:
    """Every guard over the whole plan; any failure stops the cycle before any call or state change."""

    name = "guards"
    kind: str | None = None

    async def run(self, context: CycleContext) -> None:
        shards = context.options.shards
        # With an operation budget, the guards judge the whole plan, not the slice this cycle writes: a budget paces
        # the writes, and an accident (a truncated export) must not drain through in slices each under the limits.
        context.report.guards = evaluate_guards(
            context.whole_plan or context.report.plan,
            context.roster,
            context.state.counts(shards),
            settings=context.options.guards,
            shards=shards,
            managed_memberships=context.managed_memberships if context.wants("memberships") else 0,
        )
        pam = context.report.pam
        if pam is not None and pam.guard is not None:
            context.report.guards.append(pam.guard)


class GroupUpserts:
    """The planned group creates and updates (a membership sync plans only the creates its members need)."""

    name = "group upserts"
    kind: str | None = None

    async def run(self, context: CycleContext) -> None:
        groups = context.report.plan.groups
        await context.execute(_only(groups=groups[~groups["op"].isin(GROUP_REMOVAL_OPS)]))


class UserUpserts:
    """Creates and updates, managers before their reports; then, in a run over some shards, the reports in other
    shards whose manager was just created get their manager now instead of at their own shard's next run."""

    name = "user upserts"
    kind: str | None = "users"

    async def run(self, context: CycleContext) -> None:
        users = context.report.plan.users
        if context.on_demand is not None:
            context.on_demand.record_adoption(context.state, run_id=context.options.run_id)
        await context.execute(_only(users=users[users["op"].isin(USER_UPSERT_OPS)]))
        # A report's manager fix in another shard is a write the plan did not count: with a budget, it waits for
        # that shard's own run.
        if context.options.shards is not None and not context.budget.limited:
            created = set(users.loc[users["op"].eq("create"), "key_norm"].astype(str))
            if created:
                await _fix_managers_in_other_shards(context, created)


async def _fix_managers_in_other_shards(context: CycleContext, created: set[str]) -> None:
    roster_users = context.roster.users
    shards = context.options.shards
    if MANAGER_PATH not in roster_users.columns or shards is None:
        return
    managers = roster_users[MANAGER_PATH].astype("string").str.casefold()
    reports = roster_users[managers.isin(created).fillna(False) & ~roster_users["shard"].isin(sorted(shards))]
    if reports.empty:
        return
    keys = set(reports["key_norm"].astype(str)) | created
    # The plan covers exactly these reports and their managers, on both sides, so it can only update them.
    subset = roster_users[roster_users["key_norm"].astype(str).isin(keys)]
    snapshot = context.state.snapshot(None)
    managed = snapshot.users[snapshot.users["key_norm"].astype(str).isin(keys)]
    partial = ManagedSnapshot(
        users=managed,
        groups=snapshot.groups.iloc[0:0],
        memberships=snapshot.memberships.iloc[0:0],
        attrs_loader=snapshot.attrs_loader,
    )
    settings = PlanSettings(deprovision=context.options.deprovision, member_chunk=context.options.member_chunk)
    planned = plan_users(subset, partial, settings)
    fixes = planned[planned["op"].eq("update") & planned["key_norm"].astype(str).isin(set(reports["key_norm"]))]
    if not fixes.empty:
        await context.execute(_only(users=fixes))


class Memberships:
    """Plan the memberships again — the users and groups created above have ids now — and execute them."""

    name = "memberships"
    kind: str | None = "memberships"

    async def run(self, context: CycleContext) -> None:
        settings = context.plan_settings
        snapshot = context.snapshot()
        held = _holding_memberships(context.roster, snapshot, context.report.rejected)
        memberships, _ = plan_memberships(held, snapshot, settings)
        context.report.deferred = _deferred_memberships(context.roster, snapshot, settings, context.options)
        allotment = context.membership_allotment
        if allotment is not None:
            # Planned again now that the creates have ids: the same order as the preview, cut at its allotment.
            memberships, cut = memberships.iloc[:allotment], memberships.iloc[allotment:]
            context.blocked_releases |= _groups_with_removals(cut)
            cut_pairs = _member_pairs(cut, context.roster)
            context.report.deferred = _with_budget_reasons(context.report.deferred, context.waiting_keys, cut_pairs)
            if context.report.budget is not None:
                context.report.budget.memberships = cut_pairs
        context.report.membership_plan = _only(memberships=memberships)
        await context.execute(context.report.membership_plan)


class Removals:
    """Users who left the roster are disabled or deleted; groups that left are released or deleted."""

    name = "removals"
    kind: str | None = None

    async def run(self, context: CycleContext) -> None:
        plan = context.report.plan
        users = plan.users[plan.users["op"].isin(USER_REMOVAL_OPS)]
        groups = plan.groups[plan.groups["op"].isin(GROUP_REMOVAL_OPS)]
        if context.blocked_releases:
            # Member removals the budget deferred: the group is released once they are done.
            waits = groups["op"].eq("release") & groups["key_norm"].astype(str).isin(context.blocked_releases)
            if context.report.budget is not None and waits.any():
                budget = context.report.budget
                budget.groups = _concat([budget.groups, groups[waits]]) if len(budget.groups) else groups[waits]
            groups = groups[~waits]
        await context.execute(_only(users=users, groups=groups))


PLANNING_PHASES: tuple[Phase, ...] = (ReadTarget(), Plan(), Guards())
EXECUTION_PHASES: tuple[Phase, ...] = (GroupUpserts(), UserUpserts(), Memberships(), *PAM_PHASES, Removals())


async def run_cycle(
    client: ScimClient,
    state: ProvisioningState,
    roster: RosterFrames,
    *,
    run_id: str,
    options: CycleOptions | None = None,
    rejected: pd.DataFrame | None = None,
    breaker: CircuitBreaker | None = None,
    progress: ProgressCallback | None = None,
    phases: Sequence[Phase] | None = None,
    lease: WriterLease | None = None,
    access: AccessFile | None = None,
    **option_values: Any,
) -> CycleReport:
    """Run one cycle (see the module docstring) and return its report.

    Pass ``options`` or the :class:`CycleOptions` fields as keywords. ``rejected`` are the roster's rejected rows
    (identities whose row was rejected are never deprovisioned for it). ``phases`` replaces the execution phases.
    ``lease`` is the writer lease the caller holds on the target; each execution checks it is still held.
    ``access`` is the validated access file (:mod:`scim_pipeline.sync.pam.access`): the PAM kinds' desired state.
    """
    if options is None:
        options = CycleOptions(run_id=run_id, **option_values)
    on_demand: OnDemand | None = None
    if options.only_user is not None:
        # One identity and its memberships: no group, no PAM kind, every shard (the identity's own).
        name = options.only_user
        options = dataclasses.replace(options, kinds=options.kinds & ON_DEMAND_KINDS, shards=None)
        on_demand = OnDemand.of(roster, name, options.user_match_attribute)
        roster = on_demand.roster_view(roster)
    report = CycleReport(options=options, rejected=rejected if rejected is not None else pd.DataFrame())
    context = CycleContext(
        client=client,
        state=state,
        roster=roster,
        options=options,
        report=report,
        breaker=breaker or CircuitBreaker(),
        progress=progress,
        lease=lease,
        access=access if on_demand is None else None,
        budget=OperationBudget(options.max_operations),
        on_demand=on_demand,
    )
    await client.authenticate()  # a token first, even for a cycle with nothing to change: a revoked secret fails now
    try:
        for phase in PLANNING_PHASES:
            await _timed(phase, context)
        if not (options.dry_run or report.stopped_by_guard):
            for phase in phases if phases is not None else EXECUTION_PHASES:
                if context.wants(phase.kind) and not context.breaker.is_open:
                    await _timed(phase, context)
    except LeaseLost as lost:
        # A phase's own write (an adoption, a marker) found the lease gone: nothing more is sent or recorded.
        context.breaker.stop(str(lost))
        report.execution = report.execution.merge(ExecutionReport(stopped=str(lost)))
    if report.pam is not None:
        report.pam.finish(state)
    if on_demand is not None and not report.stopped_by_guard:
        executed = report.executed_memberships.memberships
        report.on_demand = on_demand_report(
            on_demand,
            dry_run=options.dry_run,
            users_plan=report.plan.users,
            memberships=executed,
            member_outcomes=report.execution.member_outcomes,
            deferred=report.deferred,
            failures=report.execution.failures,
            group_names=dict(zip(roster.groups["key_norm"].astype(str), roster.groups["key"].astype(str), strict=True)),
            state=state,
        )
    return report


async def _timed(phase: Phase, context: CycleContext) -> None:
    started = time.perf_counter()
    calls_before = context.report.execution.calls
    await phase.run(context)
    context.report.phases.append(
        PhaseTiming(phase.name, time.perf_counter() - started, context.report.execution.calls - calls_before)
    )
    logger.debug("phase %s done in %.3f s", phase.name, time.perf_counter() - started)


@dataclass(frozen=True)
class _RosterView:
    users: pd.DataFrame
    groups: pd.DataFrame
    memberships: pd.DataFrame


def _holding_memberships(roster: RosterFrames, managed: ManagedSnapshot, rejected: pd.DataFrame) -> RosterFrames:
    """The roster with the memberships we manage of users and groups whose row was rejected kept as wanted: a
    data-entry error in a row never removes that person (or group) from their groups."""
    if rejected.empty or managed.memberships.empty:
        return roster
    keys = rejected.loc[rejected["key"].notna(), ["table", "key"]]
    held_users = set(keys.loc[keys["table"].eq("users"), "key"].astype(str).str.casefold())
    held_groups = set(keys.loc[keys["table"].eq("groups"), "key"].astype(str).str.casefold())
    if not held_users and not held_groups:
        return roster
    current = managed.memberships[["group_key_norm", "user_key_norm"]].astype("string")
    keep = current["user_key_norm"].str.casefold().isin(held_users) | current["group_key_norm"].str.casefold().isin(
        held_groups
    )
    if not keep.any():
        return roster
    wanted = roster.memberships[["group_key_norm", "user_key_norm"]].astype("string")
    memberships = pd.concat([wanted, current[keep.fillna(False)]], ignore_index=True).drop_duplicates()
    return _RosterView(users=roster.users, groups=roster.groups, memberships=memberships)


def _empty_plan() -> ChangeSet:
    return ChangeSet.empty()


def _only(
    *, users: pd.DataFrame | None = None, groups: pd.DataFrame | None = None, memberships: pd.DataFrame | None = None
) -> ChangeSet:
    return ChangeSet.empty().replace(users=users, groups=groups, memberships=memberships)


def _with_planned_creates(snapshot: ManagedSnapshot, users: pd.DataFrame, groups: pd.DataFrame) -> ManagedSnapshot:
    """The snapshot as it will be once the planned creates succeeded: a membership preview then counts the members
    of users and groups created in this cycle instead of deferring them."""
    created_users = users[users["op"].eq("create")]
    created_groups = groups[groups["op"].eq("create")]
    if created_users.empty and created_groups.empty:
        return snapshot

    def placeholder(frame: pd.DataFrame, created: pd.DataFrame) -> pd.DataFrame:
        if created.empty:
            return frame
        rows = pd.DataFrame(
            {
                "key_norm": created["key_norm"].astype(str).to_numpy(),
                "key": created["key"].astype(str).to_numpy(),
                "scim_id": PLACEHOLDER_ID,
            }
        )
        if "shard" in frame.columns:
            rows["shard"] = created["shard"].to_numpy()
        without = frame[~frame["key_norm"].astype(str).isin(rows["key_norm"])]
        return pd.concat([without, rows], ignore_index=True)

    return ManagedSnapshot(
        users=placeholder(snapshot.users, created_users),
        groups=placeholder(snapshot.groups, created_groups),
        memberships=snapshot.memberships,
        attrs_loader=snapshot.attrs_loader,
    )


def _empty_deferred() -> pd.DataFrame:
    return pd.DataFrame(
        {name: pd.Series([], dtype="string") for name in ("group", "user", "reason")},
    )


def _deferred_memberships(
    roster: RosterFrames, managed: ManagedSnapshot, settings: PlanSettings, options: CycleOptions
) -> pd.DataFrame:
    """The roster memberships this cycle cannot write, each with why (shown by `plan` and `sync`)."""
    if "memberships" not in options.kinds or roster.memberships.empty:
        return _empty_deferred()
    wanted = roster.memberships[["group_key_norm", "user_key_norm"]].astype(str)
    users = roster.users
    if settings.shards is not None:
        in_scope = users[users["shard"].isin(sorted(settings.shards))]["key_norm"].astype(str)
        wanted = wanted[wanted["user_key_norm"].isin(in_scope)]
    with_id_users = set(managed.users.loc[managed.users["scim_id"].notna(), "key_norm"].astype(str))
    with_id_groups = set(managed.groups.loc[managed.groups["scim_id"].notna(), "key_norm"].astype(str))
    missing = wanted[~wanted["user_key_norm"].isin(with_id_users) | ~wanted["group_key_norm"].isin(with_id_groups)]
    if missing.empty:
        return _empty_deferred()
    inactive: set[str] = set()
    if "active" in users.columns:
        inactive = set(users.loc[~users["active"].astype("boolean").fillna(True), "key_norm"].astype(str))
    user_keys = dict(zip(users["key_norm"].astype(str), users["key"].astype(str), strict=False))
    group_keys = dict(zip(roster.groups["key_norm"].astype(str), roster.groups["key"].astype(str), strict=False))
    reasons = []
    for user_key_norm in missing["user_key_norm"]:
        if user_key_norm not in with_id_users:
            reasons.append(
                "the user is inactive in the roster and was never provisioned"
                if user_key_norm in inactive
                else "the user is not on the target yet (held, failed or in escrow)"
            )
        else:
            reasons.append("the group is not on the target yet (held, failed or in escrow)")
    return pd.DataFrame(
        {
            "group": pd.array([group_keys.get(g, g) for g in missing["group_key_norm"]], dtype="string"),
            "user": pd.array([user_keys.get(u, u) for u in missing["user_key_norm"]], dtype="string"),
            "reason": pd.array(reasons, dtype="string"),
        }
    )


def _concat(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    present = [frame for frame in frames if len(frame)]
    if not present:
        return frames[0].iloc[0:0]
    return present[0] if len(present) == 1 else pd.concat(present, ignore_index=True)


def _groups_with_removals(rows: pd.DataFrame) -> set[str]:
    return set(rows.loc[rows["op"].eq("remove_members"), "group_key_norm"].astype(str))


def _member_pairs(rows: pd.DataFrame, roster: RosterFrames) -> pd.DataFrame:
    """Membership PATCH rows as one row per member: group, user (keys), op (add / remove)."""
    users = dict(zip(roster.users["key_norm"].astype(str), roster.users["key"].astype(str), strict=False))
    pairs = [
        (str(group), users.get(str(member), str(member)), "add" if op == "add_members" else "remove")
        for op, group, members in rows[["op", "key", "member_key_norms"]].itertuples(index=False)
        for member in json.loads(str(members) or "[]")
    ]
    return pd.DataFrame(pairs, columns=["group", "user", "op"], dtype="string")


def _with_budget_reasons(deferred: pd.DataFrame, waiting: dict[str, set[str]], cut: pd.DataFrame) -> pd.DataFrame:
    """The deferred memberships, those waiting for a create the budget deferred saying so, plus the membership
    changes the budget cut."""
    if len(deferred) and waiting:
        deferred = deferred.copy()
        users = deferred["user"].astype(str).isin(waiting.get("users", set()))
        groups = deferred["group"].astype(str).isin(waiting.get("groups", set()))
        deferred.loc[users.to_numpy(), "reason"] = f"{BUDGET_REASON}: the user is created by a later cycle"
        deferred.loc[(groups & ~users).to_numpy(), "reason"] = f"{BUDGET_REASON}: the group is created by a later cycle"
    if len(cut):
        extra = pd.DataFrame(
            {
                "group": cut["group"].astype("string"),
                "user": cut["user"].astype("string"),
                "reason": pd.array(
                    [f"{BUDGET_REASON} ({op})" for op in cut["op"]],
                    dtype="string",
                ),
            }
        )
        deferred = _concat([deferred, extra])
    return deferred


def _take_pam(budget: OperationBudget, pam: PamReport | None) -> list[tuple[str, str, str]]:
    """Cut Delinea's PAM changes to what the budget has left, in execution order; returns the deferred ones
    (kind, op, key). A permission's delete and re-add (other rights) are kept or deferred together."""
    if pam is None:
        return []
    plan = pam.plan
    deferred: list[tuple[str, str, str]] = []

    def costly(frame: pd.DataFrame) -> list[bool]:
        return [str(op) in PAM_WRITE_OPS for op in frame["op"]]

    plan.containers, cut = budget.take(plan.containers, costly=costly(plan.containers))
    deferred += [("container", str(op), str(key)) for op, key in cut[["op", "key"]].itertuples(index=False)]
    permissions = plan.permissions
    slots = zip(
        permissions["container"].astype(str),
        permissions["principal_type"].astype(str),
        permissions["principal_key_norm"].astype(str),
        strict=True,
    )
    plan.permissions, cut = budget.take(permissions, costly=costly(permissions), units=slots)
    for op, container, principal_type, principal in cut[["op", "container", "principal_type", "principal"]].itertuples(
        index=False
    ):
        deferred.append(("permission", str(op), f"{principal_type} {principal} on {container}"))
        plan.deferred.append((str(container), str(principal), BUDGET_REASON))
    plan.placements, cut = budget.take(plan.placements, costly=costly(plan.placements))
    deferred += [("privileged_data", str(op), str(key)) for op, key in cut[["op", "key"]].itertuples(index=False)]
    return deferred


def change_rows(report: CycleReport) -> list[dict[str, Any]]:
    """Who changes and how, one row per person, group or membership: kind, op, key, detail. Never a value."""
    rows: list[dict[str, Any]] = []
    plan = report.effective_plan
    for kind, frame in (("user", plan.users), ("group", plan.groups)):
        for op, key, payload, reason in frame[["op", "key", "payload", "reason"]].itertuples(index=False):
            if op == "refresh":
                continue
            detail = change_detail(str(op), payload, reason)
            rows.append({"kind": kind, "op": str(op), "key": str(key), "detail": detail})
    if report.pam is not None:
        rows.extend(report.pam.change_rows())
    memberships = report.executed_memberships.memberships
    users_by_norm = _user_keys(report)
    for op, group, members in memberships[["op", "key", "member_key_norms"]].itertuples(index=False):
        verb = "add" if op == "add_members" else "remove"
        for member in json.loads(str(members)) if isinstance(members, str) and members else []:
            rows.append(
                {
                    "kind": "membership",
                    "op": verb,
                    "key": users_by_norm.get(str(member), str(member)),
                    "detail": f"{'to' if verb == 'add' else 'from'} {group}",
                }
            )
    return rows


def _user_keys(report: CycleReport) -> dict[str, str]:
    users = report.plan.users
    return dict(zip(users["key_norm"].astype(str), users["key"].astype(str), strict=False))


def change_detail(op: str, payload: Any, reason: Any) -> str:
    """What changes for one planned user or group change: the attribute names of an update, the reason of a
    removal."""
    if op in ("update", "enable", "rename") and isinstance(payload, str) and payload:
        try:
            operations = json.loads(payload)
        except ValueError:
            return ""
        paths = _paths(operations)
        return ", ".join(paths)
    if op in ("disable", "delete", "release"):
        return "left the roster" if reason == "left_roster" else str(reason or "")
    if op == "resolve":
        return "an earlier create's outcome is unknown: look it up"
    return ""


def _paths(operations: Iterable[Any]) -> list[str]:
    paths: list[str] = []
    for operation in operations:
        if not isinstance(operation, dict):
            continue
        path = operation.get("path")
        if isinstance(path, str):
            paths.append(path)
        elif isinstance(operation.get("value"), dict):
            paths.extend(str(name) for name in operation["value"])
    return paths
