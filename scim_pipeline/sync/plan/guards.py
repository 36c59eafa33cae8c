"""Guards: stop a cycle before any call when its plan looks like an accident.

- **Deletion threshold** — disables + deletes in one cycle above ``max_deletes`` (``SCIM_MAX_DELETES``) or, when
  that is unset, above ``max_delete_share`` (20 %) of the active users we manage, never below ``min_delete_limit``
  (10) so a small tenant can still lose a few people per cycle.
- **Empty roster** — no user in scope while we manage some (a truncated export, a wrong path, a scoping mistake).
- **Shrunken roster** — at least ``shrink_share`` (50 %) of the users we manage left the roster in one cycle.
- **Mass update** — at least ``mass_update_share`` (90 %) of the users we manage would be updated in one cycle
  (and at least ``mass_update_min``): usually a mapping change that rewrites everyone.
- **Group removals** — groups released or deleted in one cycle above ``max_delete_share`` of the groups we manage
  (never below ``min_group_removal_limit``, 5): an emptied or truncated groups file.
- **Membership removals** — members removed in one cycle above ``max_delete_share`` of the memberships we manage
  (never below ``min_member_removal_limit``, 100).

Every guard passes when ``allow_mass_changes`` is set (``SCIM_ALLOW_MASS_CHANGES=1`` for one run); the deletion
threshold also yields to an explicit, larger ``max_deletes``. The environment variables are named in the messages
only: the Dagster layer and the CLI read them and pass the values here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scim_pipeline.sync.plan.changes import ChangeSet, RosterFrames
from scim_pipeline.sync.state import ManagedCounts

__all__ = ["GuardResult", "GuardSettings", "evaluate_guards", "guards_passed"]

_ALLOW_HINT = "or set SCIM_ALLOW_MASS_CHANGES=1 for one run if this is intended"


@dataclass(frozen=True)
class GuardSettings:
    """Thresholds of the guards (see the module docstring for the defaults and why)."""

    max_deletes: int | None = None
    max_delete_share: float = 0.2
    min_delete_limit: int = 10
    shrink_share: float = 0.5
    shrink_min_managed: int = 10
    mass_update_share: float = 0.9
    mass_update_min: int = 50
    min_group_removal_limit: int = 5
    min_member_removal_limit: int = 100
    allow_mass_changes: bool = False


@dataclass(frozen=True)
class GuardResult:
    """One guard's verdict: ``message`` says what it saw and, when it failed, how to allow it."""

    name: str
    passed: bool
    message: str
    observed: int = 0
    limit: int = 0


def guards_passed(results: list[GuardResult]) -> bool:
    """True when every guard passed."""
    return all(result.passed for result in results)


def evaluate_guards(
    change_set: ChangeSet,
    roster: RosterFrames,
    managed: ManagedCounts,
    *,
    settings: GuardSettings | None = None,
    shards: frozenset[int] | None = None,
    managed_memberships: int = 0,
) -> list[GuardResult]:
    """Evaluate every guard on the whole plan of a cycle (users, groups and memberships). ``managed`` counts what we
    manage within the run's shards; ``managed_memberships`` the memberships we added."""
    config = settings or GuardSettings()
    allow = config.allow_mass_changes
    users = change_set.users
    removals = int(users["op"].isin(["disable", "delete"]).sum())
    left_roster = int(((users["reason"] == "left_roster") & users["op"].isin(["disable", "delete"])).sum())
    updates = int(users["op"].isin(["update", "enable", "disable"]).sum()) - left_roster
    roster_users = roster.users
    if shards is not None:
        roster_users = roster_users[roster_users["shard"].isin(sorted(shards))]
    in_scope = len(roster_users)
    results: list[GuardResult] = []

    if config.max_deletes is not None:
        delete_limit = config.max_deletes
        how = f"set SCIM_MAX_DELETES to at least {removals}"
    else:
        delete_limit = max(config.min_delete_limit, math.floor(config.max_delete_share * managed.active_users))
        how = f"set SCIM_MAX_DELETES={removals} to allow this many"
    passed = removals <= delete_limit or allow
    results.append(
        GuardResult(
            name="deletion_threshold",
            passed=passed,
            observed=removals,
            limit=delete_limit,
            message=(
                f"{removals} disables/deletes planned (limit {delete_limit})"
                if passed
                else f"{removals} users would be disabled or deleted in one cycle, over the limit of "
                f"{delete_limit}; {how}, {_ALLOW_HINT}"
            ),
        )
    )

    empty = in_scope == 0 and managed.users > 0
    results.append(
        GuardResult(
            name="empty_roster",
            passed=not empty or allow,
            observed=in_scope,
            limit=1,
            message=(
                f"the roster has no user in scope while {managed.users} are managed: check the roster source and "
                f"the mapping's scope; nothing was changed ({_ALLOW_HINT})"
                if empty
                else f"{in_scope} users in scope"
            ),
        )
    )

    shrink_limit = math.ceil(config.shrink_share * managed.active_users)
    shrunk = managed.active_users >= config.shrink_min_managed and left_roster >= shrink_limit > 0
    results.append(
        GuardResult(
            name="shrunken_roster",
            passed=not shrunk or allow,
            observed=left_roster,
            limit=shrink_limit,
            message=(
                f"{left_roster} of the {managed.active_users} active users we manage left the roster in one cycle "
                f"(≥ {config.shrink_share:.0%}): check the roster export; nothing was changed ({_ALLOW_HINT})"
                if shrunk
                else f"{left_roster} users left the roster"
            ),
        )
    )

    mass_limit = max(config.mass_update_min, math.ceil(config.mass_update_share * managed.users))
    massive = managed.users > 0 and updates >= mass_limit
    results.append(
        GuardResult(
            name="mass_update",
            passed=not massive or allow,
            observed=updates,
            limit=mass_limit,
            message=(
                f"{updates} of the {managed.users} users we manage would be updated in one cycle "
                f"(≥ {config.mass_update_share:.0%}): usually a mapping change; review the plan (dry run), then "
                f"set SCIM_ALLOW_MASS_CHANGES=1 for one run if this is intended"
                if massive
                else f"{updates} users updated"
            ),
        )
    )

    groups = change_set.groups
    group_removals = int(groups["op"].isin(["release", "delete"]).sum())
    group_limit = max(config.min_group_removal_limit, math.floor(config.max_delete_share * managed.groups))
    # Every managed group leaving at once because the roster has none is a lost file, whatever the count.
    emptied = group_removals > 0 and len(roster.groups) == 0
    results.append(
        GuardResult(
            name="group_removals",
            passed=(group_removals <= group_limit and not emptied) or allow,
            observed=group_removals,
            limit=0 if emptied else group_limit,
            message=(
                f"{group_removals} groups released or deleted (limit {group_limit})"
                if group_removals <= group_limit and not emptied
                else f"the roster has no groups while we manage {managed.groups}: check the groups file; nothing was "
                f"changed ({_ALLOW_HINT})"
                if emptied
                else f"{group_removals} of the {managed.groups} groups we manage would be released or deleted in one "
                f"cycle, over the limit of {group_limit}: check the groups file; nothing was changed ({_ALLOW_HINT})"
            ),
        )
    )

    memberships = change_set.memberships
    member_removals = int(memberships.loc[memberships["op"].eq("remove_members"), "member_count"].sum())
    member_limit = max(config.min_member_removal_limit, math.floor(config.max_delete_share * managed_memberships))
    results.append(
        GuardResult(
            name="membership_removals",
            passed=member_removals <= member_limit or allow,
            observed=member_removals,
            limit=member_limit,
            message=(
                f"{member_removals} members removed from groups (limit {member_limit})"
                if member_removals <= member_limit
                else f"{member_removals} of the {managed_memberships} memberships we added would be removed in one "
                f"cycle, over the limit of {member_limit}: check the memberships file; nothing was changed "
                f"({_ALLOW_HINT})"
            ),
        )
    )
    return results
