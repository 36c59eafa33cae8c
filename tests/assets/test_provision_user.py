"""Provision on demand and the operation budget through the Dagster job config, against the emulator over loopback."""

from __future__ import annotations

from dagster import AssetKey, ExecuteInProcessResult

from scim_pipeline.assets.jobs import PLAN_JOB, cycle_run_config
from scim_pipeline.sync.plan.budget import BUDGET_REASON
from tests.assets.conftest import Pipeline, Roster, Target, make_user

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


def metadata_of(result: ExecuteInProcessResult, asset: str) -> list[dict[str, object]]:
    return [
        {name: value.value for name, value in event.materialization.metadata.items()}
        for event in result.get_asset_materialization_events()
        if event.asset_key == AssetKey(asset)
    ]


def change_the_roster(roster: Roster) -> None:
    """user001 changes title and groups; others change too — a leaver, a newcomer, another's new department."""
    roster.users[1]["title"] = "Lead"
    roster.users[2]["department"] = "Legal"  # someone else's change: not applied by user001's run
    departed = roster.users.pop()  # a leaver: not deprovisioned by user001's run
    roster.users.append(make_user(40))  # a newcomer: not created by user001's run
    roster.memberships = [(group, user) for group, user in roster.memberships if user not in (departed["user_name"],)]
    roster.memberships.remove(("Vault Admins", "user001@example.com"))
    roster.memberships.append(("Auditors", "user001@example.com"))
    roster.write()


def test_the_sync_job_with_a_user_provisions_that_identity_only(
    pipeline: Pipeline, roster: Roster, target: Target
) -> None:
    assert pipeline.sync().success
    change_the_roster(roster)
    target.clear_requests()

    result = pipeline.sync(run_config=cycle_run_config("scim_cycle", user="USER001@example.com"))

    assert result.success
    report = pipeline.reports[result.run_id].on_demand
    assert report is not None
    text = "\n".join(report.lines())
    assert "matched: already managed by this pipeline" in text
    assert "by userName" in text
    assert "user: updated" in text
    assert "title: 'Analyst' → 'Lead'" in text
    assert "joined Auditors" in text
    assert "left Vault Admins" in text
    # Only user001 and its two group PATCHes were written.
    writes = target.writes()
    users = target.users_by_name()
    assert len(writes) == 3, writes
    assert {w["path"].rsplit("/", 1)[-1] for w in writes if "/Users/" in w["path"]} == {
        users["user001@example.com"]["id"]
    }
    assert users["user001@example.com"]["title"] == "Lead"
    assert users["user002@example.com"][ENTERPRISE]["department"] != "Legal"
    assert users["user011@example.com"]["active"] is True, "a leaver is not deprovisioned by an on-demand run"
    assert "user040@example.com" not in users
    members = target.members_by_group()
    assert "user001@example.com" in members["Auditors"]
    assert "user001@example.com" not in members["Vault Admins"]
    audit = metadata_of(result, "provisioning_audit")[0]
    assert "title: 'Analyst' → 'Lead'" in str(audit["provisioned_on_demand"])
    # Every call is audited under this run.
    assert len(pipeline.reports[result.run_id].audit) == 3


def test_a_plan_with_a_user_shows_what_would_happen_and_sends_nothing(
    pipeline: Pipeline, roster: Roster, target: Target
) -> None:
    assert pipeline.sync().success
    change_the_roster(roster)
    target.clear_requests()

    result = pipeline.sync(job_name=PLAN_JOB, run_config=cycle_run_config("scim_cycle", user="user040@example.com"))

    assert result.success
    report = pipeline.reports[result.run_id].on_demand
    assert report is not None
    text = "\n".join(report.lines())
    assert "dry run" in text
    assert "matched: not on the target by userName" in text
    assert "user: would be created" in text
    assert "name.familyName: (none) → 'Family40'" in text
    assert target.writes() == []


def test_a_user_not_in_the_roster_fails_the_run_naming_it_and_close_matches(pipeline: Pipeline, target: Target) -> None:
    assert pipeline.sync().success
    target.clear_requests()

    result = pipeline.sync(run_config=cycle_run_config("scim_cycle", user="user01@example.com"))

    assert not result.success
    failure = next(event for event in result.all_events if event.is_step_failure)
    message = str(failure.step_failure_data.error)  # type: ignore[union-attr]
    assert "'user01@example.com' is not in the roster" in message
    assert "close matches: " in message
    assert "user001@example.com" in message.split("close matches: ", 1)[1]
    assert target.writes() == []


def test_the_budget_shows_deferred_changes_in_the_change_set_assets(pipeline: Pipeline, target: Target) -> None:
    pipeline.env["SCIM_MAX_OPERATIONS_PER_CYCLE"] = "5"

    result = pipeline.sync()

    assert result.success
    # 3 group creates, then 2 of the 12 user creates; the memberships wait.
    assert len(target.writes()) == 5
    user_changes = metadata_of(result, "user_changes")
    assert sum(int(str(m["creates"])) for m in user_changes) == 2
    assert sum(int(str(m.get("deferred_by_budget", 0))) for m in user_changes) == 10
    deferred_rows = [m["deferred"] for m in user_changes if "deferred" in m]
    assert deferred_rows
    assert BUDGET_REASON in str(deferred_rows[0])
    memberships = metadata_of(result, "membership_changes")
    assert sum(int(str(m["deferred_by_budget"])) for m in memberships) == 11
    audit = metadata_of(result, "provisioning_audit")[0]
    assert audit["operation_budget"] == 5
    outcome = pipeline.outcome(result)
    assert outcome.counts["deferred_by_budget"] == 10 + 11
