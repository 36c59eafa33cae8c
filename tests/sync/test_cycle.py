"""Full cycles against the emulator: the target ends equal to the roster, and nothing more is sent than needed."""

from __future__ import annotations

import pytest

from scim_pipeline.emulator import EmulatorConfig, EmulatorServer
from scim_pipeline.scim import ConnectionSettings, ScimClient
from scim_pipeline.sync.cycle import run_cycle
from scim_pipeline.sync.state import ProvisioningState

from .conftest import ENTERPRISE, Target, make_roster, user

PEOPLE = [
    user("alice", title="Engineer", department="R&D"),
    user("bob", manager="alice"),
    user("carol"),
    user("dave", active=False),
]
GROUPS = ["Admins", "Ops"]
MEMBERS = [("Admins", "alice"), ("Admins", "bob"), ("Ops", "carol")]


async def test_first_sync_yields_exactly_the_roster_on_the_target(target: Target, state: ProvisioningState) -> None:
    report = await run_cycle(target.client, state, make_roster(PEOPLE, GROUPS, MEMBERS), run_id="r1")
    assert not report.failed, report.execution.failures
    users = target.users()
    assert set(users) == {"alice", "bob", "carol"}, "inactive roster users are not created"
    assert users["alice"]["title"] == "Engineer"
    assert users["alice"][ENTERPRISE]["department"] == "R&D"
    assert users["alice"]["emails"] == [{"type": "work", "primary": True, "value": "alice@example.com"}]
    assert set(target.groups()) == {"Admins", "Ops"}
    assert target.members("Admins") == {"alice", "bob"}
    assert target.members("Ops") == {"carol"}
    writes = target.writes()
    assert len([w for w in writes if w.method == "POST" and "/Users" in w.path]) == 3
    assert len([w for w in writes if w.method == "PATCH"]) == 2, "one member PATCH per group"


async def test_second_run_makes_no_write(target: Target, state: ProvisioningState) -> None:
    roster = make_roster(PEOPLE, GROUPS, MEMBERS)
    await run_cycle(target.client, state, roster, run_id="r1")
    await run_cycle(target.client, state, roster, run_id="r2")  # bob's manager is written now
    assert target.users()["bob"][ENTERPRISE]["manager"]["value"] == target.users()["alice"]["id"]
    target.emulator.clear_requests()
    report = await run_cycle(target.client, state, roster, run_id="r3")
    assert report.plan.is_empty
    assert target.scim_requests() == []


async def test_roster_change_sends_exactly_the_needed_calls(target: Target, state: ProvisioningState) -> None:
    await run_cycle(target.client, state, make_roster(PEOPLE, GROUPS, MEMBERS), run_id="r1")
    await run_cycle(target.client, state, make_roster(PEOPLE, GROUPS, MEMBERS), run_id="r2")
    target.emulator.clear_requests()
    changed = make_roster(
        [user("alice", title="Director", department="R&D"), PEOPLE[1], user("erin")],
        GROUPS,
        [("Admins", "alice"), ("Ops", "erin")],
    )
    report = await run_cycle(target.client, state, changed, run_id="r3")
    assert not report.failed, report.execution.failures
    calls = sorted((r.method, r.path.rsplit("/", 1)[0].rsplit("/", 1)[-1]) for r in target.scim_requests())
    assert calls == sorted(
        [
            ("PATCH", "Users"),  # alice's title
            ("PATCH", "Users"),  # carol disabled: left the roster
            ("POST", "v2"),  # erin created
            ("PATCH", "Groups"),  # Admins: bob removed
            ("PATCH", "Groups"),  # Ops: carol removed
            ("PATCH", "Groups"),  # Ops: erin added
        ]
    )
    assert target.users()["carol"]["active"] is False
    assert target.users()["alice"]["title"] == "Director"
    assert target.members("Admins") == {"alice"}
    assert target.members("Ops") == {"erin"}


async def test_guard_stops_a_mass_removal_before_any_call(target: Target, state: ProvisioningState) -> None:
    people = [user(f"user{i:02d}") for i in range(30)]
    await run_cycle(target.client, state, make_roster(people), run_id="r1")
    target.emulator.clear_requests()
    report = await run_cycle(target.client, state, make_roster(people[:5]), run_id="r2")
    assert report.stopped_by_guard
    assert report.failed
    failed = {g.name for g in report.guards if not g.passed}
    assert failed == {"deletion_threshold", "shrunken_roster"}
    assert target.scim_requests() == []
    assert all(u["active"] for u in target.users().values())


async def test_dry_run_plans_and_sends_nothing(target: Target, state: ProvisioningState) -> None:
    report = await run_cycle(target.client, state, make_roster(PEOPLE, GROUPS), run_id="r1", dry_run=True)
    assert report.plan.summary()["creates"] == 5
    assert target.scim_requests() == []


async def test_existing_tenant_is_adopted_without_duplicates(target: Target, state: ProvisioningState) -> None:
    store = target.emulator.store
    existing = store.insert("Users", {"userName": "Alice", "active": True, "title": "Old title"})
    store.insert("Users", {"userName": "stranger", "active": True})
    store.insert("Groups", {"displayName": "Admins"})
    report = await run_cycle(target.client, state, make_roster(PEOPLE, GROUPS, MEMBERS), run_id="r1")
    assert not report.failed, report.execution.failures
    assert report.adoption is not None
    assert report.adoption.users_adopted == 1
    users = target.users()
    assert sorted(users) == ["alice", "bob", "carol", "stranger"], "no duplicate of alice"
    assert users["alice"]["id"] == existing["id"]
    assert users["alice"]["title"] == "Engineer", "the adopted user was patched to the roster's values"
    assert users["stranger"]["active"] is True, "what we do not manage is left alone"
    assert len(target.groups()) == 2
    row = state.get_user("alice")
    assert row is not None
    assert row["origin"] == "adopted"


@pytest.mark.slow
def test_cycle_over_loopback_http(tmp_path: object) -> None:
    import asyncio

    async def scenario(server: EmulatorServer) -> None:
        settings = ConnectionSettings(
            base_url=server.base_url,
            token_url=server.token_url,
            client_id="scim-demo",
            client_secret="demo-secret",
        )
        async with ScimClient(settings) as client:
            with ProvisioningState.open(":memory:") as state:
                roster = make_roster(PEOPLE, GROUPS, MEMBERS)
                first = await run_cycle(client, state, roster, run_id="r1")
                assert not first.failed
                await run_cycle(client, state, roster, run_id="r2")
                server.emulator.clear_requests()
                third = await run_cycle(client, state, roster, run_id="r3")
                assert third.plan.is_empty
                assert [r for r in server.emulator.requests if "/scim/v2/" in r.path] == []

    with EmulatorServer(EmulatorConfig()) as server:
        asyncio.run(scenario(server))
