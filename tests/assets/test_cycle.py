"""The code location end to end: Dagster runs against the emulator over real loopback HTTP."""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

import pytest
from dagster import AssetKey, ExecuteInProcessResult

from scim_pipeline.assets.jobs import cycle_run_config
from scim_pipeline.assets.partitions import range_tags
from scim_pipeline.sync.state import ProvisioningState
from tests.assets.conftest import SHARDS, Pipeline, Roster, Target, make_user

RECONCILE_RUN_CONFIG = cycle_run_config("scim_cycle", reconcile=True)


def expected_members(roster: Roster) -> dict[str, set[str]]:
    members: dict[str, set[str]] = {group: set() for group in roster.groups}
    for group, user in roster.memberships:
        members[group].add(user)
    return members


def materialized_metadata(result: ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    """The metadata of ``asset``; for a per-shard asset, each number summed over the run's partitions."""
    per_shard = shard_metadata(result, asset)
    if None in per_shard:
        return per_shard[None]
    totals: dict[str, Any] = {}
    for metadata in per_shard.values():
        for name, value in metadata.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                totals[name] = totals.get(name, 0) + value
    return totals


def shard_metadata(result: ExecuteInProcessResult, asset: str) -> dict[str | None, dict[str, Any]]:
    """Partition (None when the asset is not partitioned) → the metadata materialized for it by this run."""
    found: dict[str | None, dict[str, Any]] = {}
    for event in result.get_asset_materialization_events():
        if event.asset_key == AssetKey(asset):
            materialization = event.materialization
            found[materialization.partition] = {name: v.value for name, v in materialization.metadata.items()}
    if not found:
        raise AssertionError(f"{asset} was not materialized")
    return found


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


def test_an_existing_tenant_is_adopted_without_duplicates(pipeline: Pipeline, roster: Roster, target: Target) -> None:
    existing = roster.users[0]
    created = target.http.post(
        "/scim/v2/Users",
        json={
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": existing["user_name"].upper(),
            "name": {"givenName": "Old", "familyName": "Value"},
            "active": True,
        },
    )
    assert created.status_code == 201
    stranger = target.http.post(
        "/scim/v2/Users",
        json={"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "not.in.roster", "active": True},
    )
    assert stranger.status_code == 201
    target.http.post(
        "/scim/v2/Groups", json={"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "Auditors"}
    )

    result = pipeline.sync()

    assert result.success
    audit = materialized_metadata(result, "provisioning_audit")
    assert audit["adopted_users"] == 1
    assert audit["adopted_groups"] == 1
    users = target.list("Users")
    names = [user["userName"].casefold() for user in users]
    assert len(names) == len(set(names)) == len(roster.users) + 1
    adopted = next(user for user in users if user["id"] == created.json()["id"])
    assert adopted["name"]["givenName"] == "Given0"  # the IdP's truth, written over the old value
    untouched = next(user for user in users if user["userName"] == "not.in.roster")
    assert untouched["active"] is True
    assert len([g for g in target.list("Groups") if g["displayName"] == "Auditors"]) == 1


def test_drift_made_on_the_target_is_reported_and_repaired(pipeline: Pipeline, roster: Roster, target: Target) -> None:
    assert pipeline.sync().success
    victim = target.users_by_name()["user004@example.com"]
    patched = target.http.patch(
        f"/scim/v2/Users/{victim['id']}",
        json={
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "name.givenName", "value": "Changed In Delinea"}],
        },
    )
    assert patched.status_code in (200, 204)

    reconciled = pipeline.sync(run_config=RECONCILE_RUN_CONFIG)

    drift_checks = [
        e for e in reconciled.get_asset_check_evaluations() if e.check_name == "target_matches_managed_state"
    ]
    assert len(drift_checks) == 1
    assert not drift_checks[0].passed
    assert target.users_by_name()["user004@example.com"]["name"]["givenName"] == "Given4"
    again = pipeline.sync(run_config=RECONCILE_RUN_CONFIG)
    assert [
        e.passed for e in again.get_asset_check_evaluations() if e.check_name == "target_matches_managed_state"
    ] == [True]


def test_a_failing_change_fails_the_run_but_not_the_others(pipeline: Pipeline, roster: Roster, target: Target) -> None:
    assert pipeline.sync().success
    # Someone deletes a user in Delinea behind the IdP's back; the state still holds its old SCIM id.
    gone = target.users_by_name()["user003@example.com"]
    assert target.http.delete(f"/scim/v2/Users/{gone['id']}").status_code == 204
    roster.memberships.append(("Engineering", "user003@example.com"))  # refused: the member no longer exists
    roster.memberships.append(("Auditors", "user010@example.com"))  # fine
    roster.write()

    result = pipeline.sync()

    assert not result.success  # red in Dagster, so the next cycle retries
    audit = materialized_metadata(result, "provisioning_audit")
    assert audit["failed"] == 1
    assert "user010@example.com" in target.members_by_group()["Auditors"]


def test_a_backfill_shard_by_shard_onboards_everyone(pipeline: Pipeline, roster: Roster, target: Target) -> None:
    job = pipeline.definitions().resolve_job_def("scim_sync")
    by_shard: list[set[str]] = []
    for shard in range(SHARDS):
        result = job.execute_in_process(instance=pipeline.instance, partition_key=f"{shard:03d}", raise_on_error=False)
        assert result.success
        created = set(target.users_by_name())
        by_shard.append(created)
        if shard == 0:
            assert 0 < len(created) < len(roster.users)  # only shard 0's users, nobody else's
    assert by_shard[-1] == {user["user_name"] for user in roster.users}
    assert all(earlier <= later for earlier, later in itertools.pairwise(by_shard))
    assert target.members_by_group() == expected_members(roster)  # memberships follow their users in


def managed_state(pipeline: Pipeline) -> dict[str, list[tuple[str, ...]]]:
    """What the state store manages, as sorted rows (ids included), to compare before and after a run."""
    with ProvisioningState.open(pipeline.env["SCIM_STATE_URL"]) as state:
        users = state.managed_users()
        groups = state.managed_groups()
        memberships = state.managed_memberships()
        return {
            "users": sorted(
                tuple(str(v) for v in row)
                for row in users[["key_norm", "scim_id", "attrs_hash", "active", "status"]].itertuples(index=False)
            ),
            "groups": sorted(
                tuple(str(v) for v in row)
                for row in groups[["key_norm", "scim_id", "attrs_hash"]].itertuples(index=False)
            ),
            "memberships": sorted(tuple(str(v) for v in row) for row in memberships.itertuples(index=False)),
        }


def materialize_only(pipeline: Pipeline, *names: str) -> ExecuteInProcessResult:
    """What one click on "Materialize selected" does in the UI for these assets, over every shard."""
    job = pipeline.definitions().resolve_implicit_global_asset_job_def()
    return job.execute_in_process(
        instance=pipeline.instance,
        asset_selection=[AssetKey(name) for name in names],
        tags=range_tags(0, SHARDS - 1),
        raise_on_error=False,
    )


def test_a_group_leaving_the_roster_removes_our_members_on_the_target(
    pipeline: Pipeline, roster: Roster, target: Target
) -> None:
    assert pipeline.sync().success
    assert target.members_by_group()["Auditors"]
    roster.groups.remove("Auditors")
    roster.memberships = [(group, user) for group, user in roster.memberships if group != "Auditors"]
    roster.write()

    result = pipeline.sync()

    assert result.success
    assert materialized_metadata(result, "group_changes")["releases"] == 1
    members = target.members_by_group()
    assert members["Auditors"] == set()  # Delinea has no group DELETE: the group stays, our members are gone
    assert members == {**expected_members(roster), "Auditors": set()}
    target.clear_requests()
    assert pipeline.sync().success
    assert target.writes() == []  # no longer managed: nothing left to do


def test_a_guard_stop_changes_neither_the_target_nor_the_state_and_the_restored_roster_syncs_with_no_write(
    pipeline: Pipeline, roster: Roster, target: Target
) -> None:
    assert pipeline.sync().success
    state_before = managed_state(pipeline)
    members_before = target.members_by_group()
    saved = (list(roster.users), list(roster.groups), list(roster.memberships))
    roster.users = roster.users[:4]  # a truncated export...
    roster.groups = []  # ...and an emptied groups file
    roster.memberships = []
    roster.write()
    target.clear_requests()

    stopped = pipeline.sync()

    assert not stopped.success
    failed = {e.check_name for e in stopped.get_asset_check_evaluations() if not e.passed}
    assert {"shrunken_roster", "group_removals"} <= failed
    assert target.writes() == []
    assert managed_state(pipeline) == state_before
    assert target.members_by_group() == members_before

    roster.users, roster.groups, roster.memberships = saved
    roster.write()
    target.clear_requests()
    assert pipeline.sync().success
    assert target.writes() == []


def test_provisioning_never_executes_a_plan_made_by_another_run(
    pipeline: Pipeline, roster: Roster, target: Target
) -> None:
    assert pipeline.sync().success
    leaving = roster.users.pop()
    roster.write()
    plan = pipeline.sync(dry_run=True)
    assert plan.success
    assert materialized_metadata(plan, "user_changes")["disables"] == 1
    roster.users.append(leaving)  # the roster is fixed before anyone runs the sync
    roster.write()
    target.clear_requests()

    clicked = materialize_only(pipeline, "user_provisioning")

    assert clicked.success
    assert target.writes() == []
    assert target.users_by_name()[leaving["user_name"]]["active"] is True


def test_a_user_whose_row_was_rejected_is_held_not_disabled(pipeline: Pipeline, roster: Roster, target: Target) -> None:
    assert pipeline.sync().success
    roster.users[5]["active"] = "maybe"  # a data-entry error, not a departure
    roster.write()
    target.clear_requests()

    result = pipeline.sync()

    assert result.success
    assert target.writes() == []
    assert target.users_by_name()[roster.users[5]["user_name"]]["active"] is True
    assert materialized_metadata(result, "roster_rejections")["rejected_users"] == 1


def test_the_plan_counts_the_members_the_sync_then_adds(pipeline: Pipeline, roster: Roster, target: Target) -> None:
    plan = pipeline.sync(dry_run=True)
    planned = materialized_metadata(plan, "membership_changes")

    result = pipeline.sync()

    assert result.success
    done = materialized_metadata(result, "membership_changes")
    assert planned["member_adds"] == done["member_adds"] == len(roster.memberships)
    assert planned["deferred"] == done["deferred"] == 0


def test_the_user_sync_job_provisions_users_only(pipeline: Pipeline, roster: Roster, target: Target) -> None:
    job = pipeline.definitions().resolve_job_def("scim_user_sync")

    result = job.execute_in_process(instance=pipeline.instance, raise_on_error=False)

    assert result.success
    assert set(target.users_by_name()) == {user["user_name"] for user in roster.users}
    assert target.groups_by_name() == {}
    group_sync = pipeline.definitions().resolve_job_def("scim_group_sync")
    assert group_sync.execute_in_process(instance=pipeline.instance, raise_on_error=False).success
    assert target.members_by_group() == expected_members(roster)


def test_a_shard_by_shard_onboarding_sets_every_manager_in_its_own_run(
    pipeline: Pipeline, roster: Roster, target: Target
) -> None:
    boss = roster.users[0]["user_name"]
    for user in roster.users[1:]:
        user["manager"] = boss
    roster.write()
    job = pipeline.definitions().resolve_job_def("scim_sync")

    for shard in reversed(range(SHARDS)):  # the manager's shard is not necessarily first
        assert job.execute_in_process(instance=pipeline.instance, partition_key=f"{shard:03d}").success

    users = target.users_by_name()
    boss_id = users[boss]["id"]
    enterprise = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
    assert all(users[u["user_name"]][enterprise]["manager"]["value"] == boss_id for u in roster.users[1:])
    target.clear_requests()
    assert pipeline.sync().success
    assert target.writes() == []


def test_every_job_runs_without_a_partition_as_the_launchpad_launches_it(pipeline: Pipeline, target: Target) -> None:
    definitions = pipeline.definitions()
    for name in ("scim_plan", "scim_sync", "scim_user_sync", "scim_group_sync", "scim_permission_sync"):
        result = definitions.resolve_job_def(name).execute_in_process(instance=pipeline.instance, raise_on_error=False)
        assert result.success, name
    assert len(target.users_by_name()) == 12


def test_the_plan_job_is_a_dry_run_by_its_own_config(pipeline: Pipeline, target: Target) -> None:
    target.clear_requests()
    plan = pipeline.definitions().resolve_job_def("scim_plan")

    result = plan.execute_in_process(instance=pipeline.instance, raise_on_error=False)  # no run config given

    assert result.success
    assert target.writes() == []
    changes = materialized_metadata(result, "user_changes")
    assert changes["creates"] == 12
    assert all(metadata["executed"] is False for metadata in shard_metadata(result, "user_changes").values())


def test_each_shard_holds_its_own_rows_and_the_shards_add_up_to_the_run(
    pipeline: Pipeline, roster: Roster, target: Target
) -> None:
    result = pipeline.sync()

    assert result.success
    for asset, count in (("idp_users", "dagster/row_count"), ("user_changes", "creates")):
        shards = shard_metadata(result, asset)
        assert set(shards) == {f"{shard:03d}" for shard in range(SHARDS)}, "one partition per shard of the run"
        numbers = [metadata[count] for metadata in shards.values()]
        assert sum(numbers) == len(roster.users), asset
        assert max(numbers) < len(roster.users), f"{asset}: a partition shows the run's total, not its own"
    members = shard_metadata(result, "membership_changes")
    assert sum(metadata["member_adds"] for metadata in members.values()) == len(roster.memberships)
    calls = shard_metadata(result, "user_provisioning")
    assert sum(metadata["calls"] for metadata in calls.values()) == len(roster.users)
    audit = materialized_metadata(result, "provisioning_audit")
    assert audit["calls"] == len(target.writes()), "the audit holds every write request of the run"


def test_a_one_shard_run_materializes_that_shard_only(pipeline: Pipeline, roster: Roster, target: Target) -> None:
    result = pipeline.sync(shards=(1, 1))

    assert result.success
    assert set(shard_metadata(result, "user_changes")) == {"001"}
    assert set(shard_metadata(result, "idp_users")) == {"001"}


def test_a_change_set_selected_without_its_provisioning_is_refused_unless_dry_run(
    pipeline: Pipeline, target: Target
) -> None:
    target.clear_requests()

    refused = materialize_only(pipeline, "user_changes")

    assert not refused.success
    failure = next(e for e in refused.all_events if e.is_step_failure)
    assert failure.step_failure_data is not None
    assert "dry_run: true" in failure.step_failure_data.error.message
    assert target.writes() == []


@pytest.mark.parametrize(
    ("form", "expected"),
    [
        ("typed", [{"value": "user000@example.com", "type": "work", "primary": True}]),
        ("plain", [{"value": "user000@example.com", "primary": True}]),
    ],
)
def test_scim_email_form_decides_how_the_sync_writes_e_mails(
    pipeline: Pipeline, target: Target, form: str, expected: list[dict[str, Any]]
) -> None:
    pipeline.env["SCIM_EMAIL_FORM"] = form

    assert pipeline.sync().success

    emails = target.users_by_name()["user000@example.com"]["emails"]
    assert [{k: v for k, v in email.items() if k != "display"} for email in emails] == expected
