"""One full provisioning cycle in plain Python — for tests, benchmarks, the soak, and as the reference for the
Dagster assets (which run the same steps as separate assets).

Steps: adopt what matches on the target when the state is empty (a paged read of Users and Groups, which
Delinea allows without a filter) → plan → guards (stop before any call if one fails) → execute groups and users →
plan memberships again (now that new users and groups have ids) → execute memberships and group deprovisioning.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

from scim_pipeline.scim.client import ScimClient
from scim_pipeline.scim.profiles import Operation
from scim_pipeline.sync.changes import ChangeSet, PlanSettings, RosterFrames, plan_changes, plan_memberships
from scim_pipeline.sync.executor import CircuitBreaker, ExecutionReport, ProgressCallback, execute
from scim_pipeline.sync.guards import GuardResult, GuardSettings, evaluate_guards, guards_passed
from scim_pipeline.sync.reconcile import AdoptionReport, adopt_existing
from scim_pipeline.sync.state import EscrowPolicy, ProvisioningState

__all__ = ["CycleReport", "run_cycle"]

logger = logging.getLogger(__name__)


@dataclass
class CycleReport:
    """What one cycle did. ``failed`` is true when a guard stopped it, a change failed or the circuit opened."""

    plan: ChangeSet
    guards: list[GuardResult]
    execution: ExecutionReport = field(default_factory=ExecutionReport)
    adoption: AdoptionReport | None = None
    membership_plan: ChangeSet | None = None
    dry_run: bool = False

    @property
    def stopped_by_guard(self) -> bool:
        return not guards_passed(self.guards)

    @property
    def failed(self) -> bool:
        return self.stopped_by_guard or self.execution.failed

    def summary(self) -> dict[str, float]:
        """The plan's counts and the execution's figures, numeric."""
        figures: dict[str, float] = {f"plan_{k}": v for k, v in self.plan.summary().items()}
        if self.membership_plan is not None:
            membership = self.membership_plan.summary()
            figures["plan_member_adds"] = membership["member_adds"]
            figures["plan_member_removes"] = membership["member_removes"]
            figures["plan_deferred"] = membership["deferred"]
        figures.update(self.execution.summary())
        figures["guards_failed"] = sum(not g.passed for g in self.guards)
        if self.adoption is not None:
            figures["adopted_users"] = self.adoption.users_adopted
            figures["adopted_groups"] = self.adoption.groups_adopted
        return figures


def _group_deprovision(client: ScimClient, deprovision: str) -> Literal["release", "delete"]:
    if deprovision != "delete":
        return "release"
    rules = client.profile.rules("Groups")
    return "delete" if Operation.DELETE in rules.operations else "release"


async def run_cycle(
    client: ScimClient,
    state: ProvisioningState,
    roster: RosterFrames,
    *,
    run_id: str,
    partition: str | None = None,
    shards: frozenset[int] | None = None,
    deprovision: Literal["disable", "delete"] = "disable",
    member_chunk: int = 100,
    dry_run: bool = False,
    guards: GuardSettings | None = None,
    user_match_attribute: str = "userName",
    group_match_attribute: str = "displayName",
    adopt: bool = True,
    breaker: CircuitBreaker | None = None,
    escrow: EscrowPolicy | None = None,
    progress: ProgressCallback | None = None,
) -> CycleReport:
    """Run one cycle (see the module docstring). With ``dry_run`` it plans and evaluates guards only."""
    settings = PlanSettings(
        deprovision=deprovision,
        group_deprovision=_group_deprovision(client, deprovision),
        member_chunk=member_chunk,
        shards=shards,
    )
    adoption = None
    if adopt and not dry_run and state.is_empty():
        target_users = await client.search("Users")
        target_groups = await client.search("Groups")
        adoption = adopt_existing(
            state,
            roster,
            target_users,
            target_groups,
            user_match_attribute,
            group_match_attribute=group_match_attribute,
        )
        logger.info("adopted %d users and %d groups from the target", adoption.users_adopted, adoption.groups_adopted)
    plan = plan_changes(roster, state.snapshot(shards), settings)
    results = evaluate_guards(plan, roster, state.counts(shards), settings=guards, shards=shards)
    report = CycleReport(plan=plan, guards=results, adoption=adoption, dry_run=dry_run)
    if dry_run or report.stopped_by_guard:
        return report

    shared_breaker = breaker or CircuitBreaker()

    async def run(change_set: ChangeSet) -> ExecutionReport:
        return await execute(
            client,
            state,
            change_set,
            run_id=run_id,
            partition=partition,
            progress=progress,
            breaker=shared_breaker,
            escrow=escrow,
            user_match_attribute=user_match_attribute,
            group_match_attribute=group_match_attribute,
        )

    removals = plan.groups["op"].isin(["release", "delete"])
    first = await run(plan.replace(groups=plan.groups[~removals], memberships=plan.memberships.iloc[0:0]))
    memberships, deferred = plan_memberships(roster, state.snapshot(shards), settings)
    second_plan = ChangeSet.empty().replace(groups=plan.groups[removals], memberships=memberships, deferred=deferred)
    report.membership_plan = second_plan
    second = await run(second_plan)
    report.execution = first.merge(second)
    return report
