"""Planning: the change sets a cycle derives from the roster and what we manage."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from scim_pipeline.sync.plan.changes import ChangeSet, PlanSettings, plan_changes, plan_memberships
from scim_pipeline.sync.state import UNKNOWN_HASH, ProvisioningState, StateBatch
from tests.sync.conftest import ENTERPRISE, HandRoster, make_roster, user


def _apply_plan_as_if_successful(state: ProvisioningState, plan: ChangeSet) -> None:
    """Record every planned change as done, as the executor would after 2xx answers."""
    batch = StateBatch()
    for row in plan.users.itertuples(index=False):
        if row.op == "delete":
            batch.user_deletes.append(row.key_norm)
            continue
        if row.op == "refresh":
            batch.user_hash_refreshes.append((row.attrs_hash, row.key_norm))
            continue
        scim_id = row.scim_id if not pd.isna(row.scim_id) else f"id-{row.key_norm}"
        batch.upsert_user(
            row.key_norm,
            key=row.key,
            scim_id=scim_id,
            shard=row.shard,
            attrs=json.loads(row.attrs),
            attrs_hash=row.attrs_hash if pd.isna(row.manager_key) else UNKNOWN_HASH,
        )
    for row in plan.groups.itertuples(index=False):
        if row.op in {"release", "delete"}:
            batch.group_deletes.append(row.key_norm)
            continue
        if row.op == "refresh":
            batch.group_hash_refreshes.append((row.attrs_hash, row.key_norm))
            continue
        scim_id = row.scim_id if not pd.isna(row.scim_id) else f"gid-{row.key_norm}"
        batch.upsert_group(
            row.key_norm, key=row.key, scim_id=scim_id, attrs=json.loads(row.attrs), attrs_hash=row.attrs_hash
        )
    state.apply(batch)
    memberships, _ = plan_memberships(_ROSTER[0], state.snapshot(), PlanSettings())
    batch = StateBatch()
    for row in memberships.itertuples(index=False):
        pairs = [(row.group_key_norm, k) for k in json.loads(row.member_key_norms)]
        (batch.membership_adds if row.op == "add_members" else batch.membership_removes).extend(pairs)
    state.apply(batch)


_ROSTER: list[HandRoster] = []


def _sync(state: ProvisioningState, roster: HandRoster, settings: PlanSettings | None = None) -> ChangeSet:
    plan = plan_changes(roster, state.snapshot(), settings or PlanSettings())
    _ROSTER[:] = [roster]
    _apply_plan_as_if_successful(state, plan)
    return plan


def _onboard(state: ProvisioningState, roster: HandRoster) -> None:
    """Two cycles: the second writes managers whose ids the first created."""
    _sync(state, roster)
    _sync(state, roster)


def _ops(frame: pd.DataFrame) -> dict[str, str]:
    return dict(zip(frame["key"], frame["op"], strict=True))


def _payload(frame: pd.DataFrame, key: str) -> Any:
    return json.loads(frame.loc[frame["key"] == key, "payload"].iloc[0])


BASE = [user("alice", title="Engineer"), user("bob", manager="alice"), user("carol")]


def test_first_plan_creates_every_active_user_and_group(state: ProvisioningState) -> None:
    roster = make_roster([*BASE, user("dave", active=False)], ["Admins"], [("Admins", "alice")])
    plan = plan_changes(roster, state.snapshot())
    assert _ops(plan.users) == {"alice": "create", "bob": "create", "carol": "create"}
    assert _ops(plan.groups) == {"Admins": "create"}
    assert plan.summary()["deferred"] == 1, "a membership waits until its user and group have ids"
    assert plan.memberships.empty


def test_no_idp_change_yields_empty_change_sets(state: ProvisioningState) -> None:
    roster = make_roster(BASE, ["Admins"], [("Admins", "alice"), ("Admins", "bob")])
    _sync(state, roster)
    _sync(state, roster)  # the manager of bob resolves on the second cycle
    plan = plan_changes(roster, state.snapshot())
    assert plan.is_empty
    assert plan.deferred == 0


def test_update_patches_only_the_attributes_that_differ(state: ProvisioningState) -> None:
    _sync(state, make_roster(BASE))
    changed = make_roster([user("alice", title="Manager"), BASE[1], user("carol", department="R&D")])
    plan = plan_changes(changed, state.snapshot())
    assert _ops(plan.users) == {"alice": "update", "bob": "update", "carol": "update"}
    assert _payload(plan.users, "alice") == [{"op": "replace", "path": "title", "value": "Manager"}]
    assert _payload(plan.users, "carol") == [{"op": "replace", "path": f"{ENTERPRISE}:department", "value": "R&D"}]
    assert _payload(plan.users, "bob") == [
        {"op": "replace", "path": f"{ENTERPRISE}:manager", "value": {"value": "id-alice"}}
    ]


def test_user_who_left_the_roster_is_disabled_not_deleted(state: ProvisioningState) -> None:
    _onboard(state, make_roster(BASE))
    plan = _sync(state, make_roster(BASE[:2]))
    assert _ops(plan.users) == {"carol": "disable"}
    assert _payload(plan.users, "carol") == [{"op": "replace", "path": "active", "value": False}]
    assert plan_changes(make_roster(BASE[:2]), state.snapshot()).is_empty, "a disabled user is disabled once"


def test_roster_inactive_flag_disables_and_its_return_enables(state: ProvisioningState) -> None:
    _onboard(state, make_roster(BASE))
    plan = _sync(state, make_roster([BASE[0], BASE[1], user("carol", active=False)]))
    assert _ops(plan.users) == {"carol": "disable"}
    plan = _sync(state, make_roster(BASE))
    assert _ops(plan.users) == {"carol": "enable"}
    assert _payload(plan.users, "carol") == [{"op": "replace", "path": "active", "value": True}]


def test_delete_only_when_configured(state: ProvisioningState) -> None:
    _sync(state, make_roster(BASE))
    plan = plan_changes(make_roster(BASE[:1]), state.snapshot(), PlanSettings(deprovision="delete"))
    assert _ops(plan.users) == {"bob": "delete", "carol": "delete"}
    assert plan.summary()["deletes"] == 2


def test_only_managed_users_are_ever_deprovisioned(state: ProvisioningState) -> None:
    plan = plan_changes(make_roster([]), state.snapshot(), PlanSettings(deprovision="delete"))
    assert plan.is_empty


def test_shard_restricted_plan_touches_only_those_shards(state: ProvisioningState) -> None:
    everyone = [user(f"user{i}") for i in range(40)]
    full = make_roster(everyone)
    _sync(state, full)
    shard = int(full.users["shard"].iloc[0])
    in_shard = set(full.users.loc[full.users["shard"] == shard, "key"])
    plan = plan_changes(make_roster([]), state.snapshot(), PlanSettings(shards=frozenset({shard})))
    assert set(plan.users["key"]) == in_shard
    assert set(plan.users["op"]) == {"disable"}
    newcomers = make_roster([*everyone, *(user(f"new{i}") for i in range(20))])
    plan = plan_changes(newcomers, state.snapshot(), PlanSettings(shards=frozenset({shard})))
    assert set(plan.users["shard"]) == {shard}


def test_group_rename_by_external_id_key_is_a_rename(state: ProvisioningState) -> None:
    roster = make_roster(BASE, [{"displayName": "Admins", "externalId": "g-1"}])
    roster.groups["key"] = roster.groups["externalId"]
    roster.groups["key_norm"] = roster.groups["externalId"].str.casefold()
    _sync(state, roster)
    renamed = make_roster(BASE, [{"displayName": "Administrators", "externalId": "g-1"}])
    renamed.groups["key"] = renamed.groups["externalId"]
    renamed.groups["key_norm"] = renamed.groups["externalId"].str.casefold()
    plan = plan_changes(renamed, state.snapshot())
    assert _ops(plan.groups) == {"g-1": "rename"}
    assert _payload(plan.groups, "g-1") == [{"op": "replace", "path": "displayName", "value": "Administrators"}]


def test_group_that_left_the_roster_is_released_and_our_members_removed(state: ProvisioningState) -> None:
    _sync(state, make_roster(BASE, ["Admins", "Ops"], [("Admins", "alice"), ("Ops", "bob")]))
    roster = make_roster(BASE, ["Admins"], [("Admins", "alice")])
    plan = plan_changes(roster, state.snapshot())
    assert _ops(plan.groups) == {"Ops": "release"}
    assert _ops(plan.memberships) == {"Ops": "remove_members"}
    assert _payload(plan.memberships, "Ops") == [{"op": "remove", "path": 'members[value eq "id-bob"]'}]
    delete = plan_changes(roster, state.snapshot(), PlanSettings(deprovision="delete", group_deprovision="delete"))
    assert _ops(delete.groups) == {"Ops": "delete"}


def test_membership_changes_are_chunked(state: ProvisioningState) -> None:
    people = [user(f"user{i:03d}") for i in range(250)]
    _sync(state, make_roster(people, ["Everyone"]))
    roster = make_roster(people, ["Everyone"], [("Everyone", f"user{i:03d}") for i in range(250)])
    memberships, deferred = plan_memberships(roster, state.snapshot(), PlanSettings(member_chunk=100))
    assert deferred == 0
    assert list(memberships["member_count"]) == [100, 100, 50]
    assert {len(json.loads(p)[0]["value"]) for p in memberships["payload"]} == {100, 50}


def test_only_memberships_we_added_are_removed(state: ProvisioningState) -> None:
    _sync(state, make_roster(BASE, ["Admins"], [("Admins", "alice")]))
    # bob is a member on the target too, but someone else added him: we never recorded it.
    plan = plan_changes(make_roster(BASE, ["Admins"], []), state.snapshot())
    removed = json.loads(plan.memberships["member_key_norms"].iloc[0])
    assert removed == ["alice"]


def test_user_whose_create_outcome_is_unknown_is_looked_up_first(state: ProvisioningState) -> None:
    state.mark_pending_creates("Users", [("alice", "alice", 0)])
    plan = plan_changes(make_roster(BASE[:1]), state.snapshot())
    assert plan.users[["op", "lookup_first"]].to_dict("records") == [{"op": "create", "lookup_first": True}]
    gone = plan_changes(make_roster([]), state.snapshot())
    assert _ops(gone.users) == {"alice": "resolve"}


def test_summary_is_numeric(state: ProvisioningState) -> None:
    summary = plan_changes(make_roster(BASE, ["Admins"]), state.snapshot()).summary()
    assert summary["creates"] == 4
    assert all(isinstance(v, int) for v in summary.values())
