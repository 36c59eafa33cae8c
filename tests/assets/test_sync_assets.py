"""The code location end to end: Dagster runs against the emulator over real loopback HTTP."""

from __future__ import annotations

from collections import Counter

from dagster import AssetKey

from tests.assets.conftest import Pipeline, Roster, Target, make_user


def expected_members(roster: Roster) -> dict[str, set[str]]:
    members: dict[str, set[str]] = {group: set() for group in roster.groups}
    for group, user in roster.memberships:
        members[group].add(user)
    return members


def materialized_metadata(result, asset: str) -> dict:  # type: ignore[no-untyped-def]
    for event in result.get_asset_materialization_events():
        if event.asset_key == AssetKey(asset):
            return {name: value.value for name, value in event.materialization.metadata.items()}
    raise AssertionError(f"{asset} was not materialized")


def test_first_sync_yields_exactly_the_roster_on_the_target(pipeline: Pipeline, roster: Roster, target: Target) -> None:
    result = pipeline.sync()

    assert result.success
    users = target.users_by_name()
    assert set(users) == {user["user_name"] for user in roster.users}
    first = users["user000@example.com"]
    assert first["name"]["givenName"] == "Given0"
    assert first["active"] is True
    assert first["emails"][0]["value"] == "user000@example.com"
    assert first["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]["department"] == "Finance"
    assert set(target.groups_by_name()) == set(roster.groups)
    assert target.members_by_group() == expected_members(roster)
    assert materialized_metadata(result, "user_changes")["creates"] == len(roster.users)


def test_second_run_makes_no_write(pipeline: Pipeline, target: Target) -> None:
    assert pipeline.sync().success
    target.clear_requests()

    result = pipeline.sync()

    assert result.success
    assert target.writes() == []
    scim_reads = [r for r in target.requests() if r["path"].startswith("/scim/")]
    assert len(scim_reads) <= 2


def test_a_roster_change_yields_exactly_the_needed_calls(pipeline: Pipeline, roster: Roster, target: Target) -> None:
    assert pipeline.sync().success
    roster.users[0]["family_name"] = "Renamed"  # one attribute → one PATCH
    roster.users[1]["active"] = "false"  # deactivation → one PATCH
    departed = roster.users.pop()  # gone from the roster → disabled (PATCH active=false)
    roster.users.append(make_user(99))  # new → one POST
    roster.memberships = [(g, u) for g, u in roster.memberships if u != departed["user_name"]]
    roster.memberships.remove(("Vault Admins", roster.users[0]["user_name"]))  # one member remove
    roster.write()
    target.clear_requests()

    result = pipeline.sync()

    assert result.success, result
    calls = Counter((r["method"], r["path"].split("/")[3]) for r in target.writes())
    assert calls[("POST", "Users")] == 1
    assert calls[("PATCH", "Users")] == 3
    group_patches = calls[("PATCH", "Groups")]
    assert 1 <= group_patches <= 2  # the removed member, and the departed user's memberships
    assert sum(calls.values()) == 4 + group_patches
    users = target.users_by_name()
    assert users["user000@example.com"]["name"]["familyName"] == "Renamed"
    assert users["user001@example.com"]["active"] is False
    assert users[departed["user_name"]]["active"] is False  # disabled, not deleted
    assert "user099@example.com" in users


def test_bad_rows_are_set_aside_and_the_good_ones_sync(pipeline: Pipeline, roster: Roster, target: Target) -> None:
    roster.users.append(make_user(50, user_name=""))  # missing key
    roster.users.append(make_user(51, user_name="USER000@example.com"))  # duplicate, differing in case
    roster.users.append(make_user(52, active="maybe"))  # malformed value
    roster.memberships.append(("No Such Group", roster.users[3]["user_name"]))
    roster.write()

    result = pipeline.sync()

    assert result.success
    rejections = materialized_metadata(result, "roster_rejections")
    assert rejections["dagster/row_count"] >= 4
    users = target.users_by_name()
    assert "user052@example.com" not in users
    assert "user003@example.com" in users
    assert "user011@example.com" in users


def test_the_deletion_guard_blocks_a_mass_removal(pipeline: Pipeline, roster: Roster, target: Target) -> None:
    assert pipeline.sync().success
    roster.users = roster.users[:4]
    roster.memberships = [(g, u) for g, u in roster.memberships if u in {x["user_name"] for x in roster.users}]
    roster.write()
    target.clear_requests()

    result = pipeline.sync()

    assert not result.success
    failed = [e for e in result.get_asset_check_evaluations() if not e.passed]
    assert any("SCIM_MAX_DELETES" in (e.description or "") or "ALLOW" in (e.description or "") for e in failed)
    assert target.writes() == []
    assert all(user["active"] for user in target.users_by_name().values())


def test_plan_materializes_change_sets_and_executes_nothing(pipeline: Pipeline, target: Target) -> None:
    target.clear_requests()

    result = pipeline.sync(dry_run=True)

    assert result.success
    assert target.writes() == []
    assert materialized_metadata(result, "user_changes")["creates"] == 12
