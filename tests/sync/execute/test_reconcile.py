"""Adoption of an existing tenant, and drift made on the target instead of the IdP."""

from __future__ import annotations

from scim_pipeline.sync.cycle import run_cycle
from scim_pipeline.sync.execute.reconcile import MISSING, adopt_existing, apply_drift, detect_drift, reconcile_target
from scim_pipeline.sync.state import ProvisioningState, StateBatch
from tests.sync.conftest import ENTERPRISE, Target, make_roster, user

PEOPLE = [user("alice", title="Engineer"), user("bob", department="R&D")]


def test_adoption_records_matching_objects_only(state: ProvisioningState) -> None:
    roster = make_roster(PEOPLE, ["Admins"], [("Admins", "alice")])
    target_users = [
        {"id": "u1", "userName": "ALICE", "title": "Old", "active": True},
        {"id": "u9", "userName": "stranger", "active": True},
    ]
    target_groups = [{"id": "g1", "displayName": "admins", "members": [{"value": "u1"}, {"value": "u9"}]}]
    report = adopt_existing(state, roster, target_users, target_groups)
    assert (report.users_adopted, report.groups_adopted, report.memberships_adopted) == (1, 1, 1)
    users = state.managed_users()
    assert users[["key_norm", "scim_id", "origin"]].to_dict("records") == [
        {"key_norm": "alice", "scim_id": "u1", "origin": "adopted"}
    ]
    assert state.get_user("alice")["attrs"] == {"userName": "ALICE", "title": "Old", "active": True}
    assert state.managed_memberships().to_dict("records") == [{"group_key_norm": "admins", "user_key_norm": "alice"}]


def test_ambiguous_matches_are_not_adopted(state: ProvisioningState) -> None:
    roster = make_roster(PEOPLE)
    target_users = [{"id": "u1", "userName": "alice"}, {"id": "u2", "userName": "Alice"}]
    report = adopt_existing(state, roster, target_users, [])
    assert report.users_adopted == 0
    assert report.ambiguous == [("Users", "alice")]
    assert state.managed_users().empty


async def test_drift_is_detected_and_repaired(target: Target, state: ProvisioningState) -> None:
    roster = make_roster(PEOPLE, ["Admins"], [("Admins", "alice"), ("Admins", "bob")])
    await run_cycle(target.client, state, roster, run_id="r1")
    store = target.emulator.store
    users = target.users()
    # Someone edits Delinea directly: a title, a department removed, a member removed, a user deleted.
    store.patch("Users", users["alice"]["id"], [{"op": "replace", "path": "title", "value": "CEO"}])
    store.patch("Users", users["bob"]["id"], [{"op": "remove", "path": f"{ENTERPRISE}:department"}])
    store.patch(
        "Groups",
        target.groups()["Admins"]["id"],
        [{"op": "remove", "path": f'members[value eq "{users["bob"]["id"]}"]'}],
    )

    snapshot_users = await target.client.search("Users")
    snapshot_groups = [await target.client.get("Groups", g["id"]) for g in await target.client.search("Groups")]
    drift = detect_drift(state, snapshot_users, [g.resource or {} for g in snapshot_groups])
    found = set(zip(drift["key"], drift["attribute"], strict=True))
    assert found == {
        ("alice", "title"),
        ("bob", f"{ENTERPRISE}:department"),
        ("Admins", "members"),
    }
    alice = drift[drift["attribute"] == "title"].iloc[0]
    assert (alice["managed_value"], alice["target_value"]) == ("Engineer", "CEO")

    assert apply_drift(state, drift) == 3
    report = await run_cycle(target.client, state, roster, run_id="r2")
    assert not report.failed, report.execution.failures
    assert target.users()["alice"]["title"] == "Engineer"
    assert target.users()["bob"][ENTERPRISE]["department"] == "R&D"
    assert target.members("Admins") == {"alice", "bob"}


async def test_managed_user_deleted_on_the_target_is_recreated(target: Target, state: ProvisioningState) -> None:
    roster = make_roster(PEOPLE)
    await run_cycle(target.client, state, roster, run_id="r1")
    target.emulator.store.delete("Users", target.users()["bob"]["id"])
    drift = detect_drift(state, await target.client.search("Users"), [])
    assert drift[["key", "attribute"]].to_dict("records") == [{"key": "bob", "attribute": MISSING}]
    apply_drift(state, drift)
    await run_cycle(target.client, state, roster, run_id="r2")
    assert sorted(target.users()) == ["alice", "bob"]


def test_unmanaged_objects_never_show_as_drift(state: ProvisioningState) -> None:
    drift = detect_drift(state, [{"id": "x", "userName": "stranger"}], [{"id": "g", "displayName": "Other"}])
    assert drift.empty


class ListingThatLosesUsers:
    """A client whose full listing of Users silently drops every object but the first (lying pagination)."""

    def __init__(self, client: object) -> None:
        self._client = client

    def __getattr__(self, name: str) -> object:
        return getattr(self._client, name)

    async def search(self, resource_type: str, *args: object, **kwargs: object) -> list[dict[str, object]]:
        found: list[dict[str, object]] = await self._client.search(resource_type, *args, **kwargs)  # type: ignore[attr-defined]
        return found[:1] if resource_type == "Users" else found


async def test_an_incomplete_listing_forgets_no_managed_user(target: Target, state: ProvisioningState) -> None:
    roster = make_roster([user(name) for name in ("alice", "bob", "carol", "dan")])
    await run_cycle(target.client, state, roster, run_id="r1")

    outcome = await reconcile_target(ListingThatLosesUsers(target.client), state, roster, detect=True)  # type: ignore[arg-type]

    assert outcome.verdict.missing_reported == 3
    assert outcome.verdict.missing_confirmed == 0
    assert not outcome.verdict.trusted
    assert state.managed_users()["scim_id"].notna().sum() == 4
    report = await run_cycle(target.client, state, roster, run_id="r2")
    assert report.execution.calls == 0  # nothing re-created


async def test_a_user_really_deleted_on_the_target_is_confirmed_and_recreated(
    target: Target, state: ProvisioningState
) -> None:
    roster = make_roster([user(name) for name in ("alice", "bob")])
    await run_cycle(target.client, state, roster, run_id="r1")
    target.emulator.store.delete("Users", target.users()["bob"]["id"])

    outcome = await reconcile_target(target.client, state, roster, detect=True)

    assert outcome.verdict.missing_confirmed == 1
    report = await run_cycle(target.client, state, roster, run_id="r2")
    assert report.execution.count(resource_type="Users", op="create") == 1
    assert set(target.users()) == {"alice", "bob"}


async def test_reconcile_adopts_the_orphan_of_a_lost_create_answer(target: Target, state: ProvisioningState) -> None:
    await run_cycle(target.client, state, make_roster([user("alice")]), run_id="r1")
    roster = make_roster([user("alice"), user("bob")])
    # bob's create landed but its answer was lost and every look-up failed: no id, held in escrow.
    target.emulator.store.insert("Users", {"userName": "bob", "active": True})
    state.mark_pending_creates("Users", [("bob", "bob", 0)])
    for _ in range(5):
        failed = StateBatch()
        failed.fail_user("bob", key="bob", error="409 conflict, look-up found nothing")
        state.apply(failed)
    assert "bob" in state.held("Users")

    outcome = await reconcile_target(target.client, state, roster, detect=True)

    assert outcome.adoption.users_adopted == 1
    assert state.get_user("bob")["scim_id"] == target.users()["bob"]["id"]
    report = await run_cycle(target.client, state, roster, run_id="r2")
    assert report.execution.failures == []
    assert len(target.users()) == 2
