"""The executor: individual calls, every outcome recorded, failures contained."""

from __future__ import annotations

import httpx

from scim_pipeline.emulator import EmulatorConfig
from scim_pipeline.sync.cycle import run_cycle
from scim_pipeline.sync.execute.executor import CircuitBreaker, execute
from scim_pipeline.sync.plan.changes import PlanSettings, plan_changes
from scim_pipeline.sync.plan.guards import GuardSettings
from scim_pipeline.sync.plan.payloads import user_body
from scim_pipeline.sync.state import EscrowPolicy, ProvisioningState
from tests.sync.conftest import Target, emulated_target, make_roster, user


class RefuseOneUser(httpx.AsyncBaseTransport):
    """Answers 400 invalidValue to any write that carries ``refused`` in its body; passes the rest on."""

    def __init__(self, inner: httpx.AsyncBaseTransport, refused: str) -> None:
        self.inner = inner
        self.refused = refused.encode()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method in {"POST", "PATCH"} and self.refused in request.content:
            body = {
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
                "status": "400",
                "scimType": "invalidValue",
                "detail": "refused for the test",
            }
            return httpx.Response(400, json=body, headers={"content-type": "application/scim+json"})
        return await self.inner.handle_async_request(request)


async def test_one_failing_identity_does_not_stop_the_others(state: ProvisioningState) -> None:
    async with emulated_target(wrap=lambda inner: RefuseOneUser(inner, "mallory")) as target:
        await _one_failing_identity(target, state)


async def _one_failing_identity(target: Target, state: ProvisioningState) -> None:
    people = [user("alice"), user("mallory"), user("bob")]
    plan = plan_changes(make_roster(people), state.snapshot())
    report = await execute(target.client, state, plan, run_id="r1", partition="3")
    assert report.failed
    assert [(f.key, f.op, f.status, f.scim_type) for f in report.failures] == [
        ("mallory", "create", 400, "invalidValue")
    ]
    assert set(target.users()) == {"alice", "bob"}
    assert report.count(op="create", outcome="ok") == 2
    audit = state.audit("r1")
    assert sorted(zip(audit["key"], audit["outcome"], strict=True)) == [
        ("alice", "ok"),
        ("bob", "ok"),
        ("mallory", "failed"),
    ]
    assert set(audit["partition"]) == {"3"}
    failed = state.get_user("mallory")
    assert failed is not None
    assert (failed["status"], failed["fail_count"]) == ("failed", 1)


async def test_identity_failing_repeatedly_is_held_without_blocking_others(state: ProvisioningState) -> None:
    async with emulated_target(wrap=lambda inner: RefuseOneUser(inner, "mallory")) as target:
        await _held_identity(target, state)


async def _held_identity(target: Target, state: ProvisioningState) -> None:
    escrow = EscrowPolicy(after_failures=2, base_delay_s=3600.0)
    for run in range(2):
        roster = make_roster([user("mallory"), *(user(f"user{run}{i}") for i in range(2))])
        plan = plan_changes(roster, state.snapshot())
        await execute(target.client, state, plan, run_id=f"r{run}", escrow=escrow)
    roster = make_roster([user("mallory"), user("zoe")])
    plan = plan_changes(roster, state.snapshot(), PlanSettings())
    report = await execute(target.client, state, plan, run_id="r3", escrow=escrow)
    assert [(h.key, h.reason) for h in report.held] == [
        ("mallory", "POST Users answered HTTP 400 (invalidValue): refused for the test")
    ]
    assert "zoe" in target.users()
    assert report.count(outcome="held") == 1


async def test_circuit_opens_when_the_target_fails_most_calls(state: ProvisioningState) -> None:
    async with emulated_target(EmulatorConfig(fault_rate=0.9, seed=7), max_attempts=1) as target:
        plan = plan_changes(make_roster([user(f"user{i:03d}") for i in range(200)]), state.snapshot())
        report = await execute(target.client, state, plan, run_id="r1", breaker=CircuitBreaker(min_calls=20))
    assert report.circuit_open
    assert report.failed
    assert report.circuit_message is not None
    assert report.circuit_message.startswith("circuit open:")
    assert report.not_attempted > 100, "it stopped early instead of hammering the target"
    assert report.calls < 60
    pending = state.managed_users()
    assert (pending["status"] == "pending_create").sum() == 0, "markers of creates never sent are cleared"


async def test_create_whose_answer_was_lost_is_looked_up_not_duplicated(
    target: Target, state: ProvisioningState
) -> None:
    # As after a crash right after the POST: the user exists on the target, our state has only the marker.
    target.emulator.store.insert("Users", {"userName": "alice", "active": True})
    state.mark_pending_creates("Users", [("alice", "alice", 0)])
    plan = plan_changes(make_roster([user("alice")]), state.snapshot())
    assert bool(plan.users["lookup_first"].iloc[0])
    report = await execute(target.client, state, plan, run_id="r1")
    assert not report.failed
    assert list(target.users()) == ["alice"]
    assert [r.method for r in target.scim_requests()] == ["GET"], "looked up, not re-posted"
    row = state.get_user("alice")
    assert row is not None
    assert row["origin"] == "adopted"
    assert row["scim_id"]
    # The next cycle patches what the adopted user lacks, once.
    followup = plan_changes(make_roster([user("alice")]), state.snapshot())
    assert list(followup.users["op"]) == ["update"]


async def test_progress_is_reported_for_every_change(target: Target, state: ProvisioningState) -> None:
    seen: list[tuple[int, int]] = []
    plan = plan_changes(make_roster([user(f"user{i}") for i in range(5)], ["G"]), state.snapshot())
    await execute(target.client, state, plan, run_id="r1", progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (6, 6)
    assert [done for done, _ in seen] == list(range(1, 7))


async def test_user_deleted_on_the_target_is_recreated_next_cycle(target: Target, state: ProvisioningState) -> None:
    roster = make_roster([user("alice"), user("bob")])
    await run_cycle(target.client, state, roster, run_id="r1")
    bob = target.users()["bob"]
    target.emulator.store.delete("Users", bob["id"])
    changed = make_roster([user("alice"), user("bob", title="Chef")])
    report = await run_cycle(target.client, state, changed, run_id="r2")
    assert report.execution.count(op="update", outcome="already_done") == 1
    await run_cycle(target.client, state, changed, run_id="r3")
    assert target.users()["bob"]["title"] == "Chef"


async def test_deletes_only_users_we_manage(target: Target, state: ProvisioningState) -> None:
    target.emulator.store.insert("Users", {"userName": "stranger", "active": True})
    await run_cycle(target.client, state, make_roster([user("alice")]), run_id="r1")
    report = await run_cycle(
        target.client,
        state,
        make_roster([]),
        run_id="r2",
        deprovision="delete",
        guards=GuardSettings(allow_mass_changes=True),
    )
    assert report.execution.count(op="delete", outcome="ok") == 1
    assert list(target.users()) == ["stranger"]


async def test_adopted_user_already_equal_is_refreshed_once_then_skipped(
    target: Target, state: ProvisioningState
) -> None:
    roster = make_roster([user("alice")])
    body, _ = user_body(
        {k: v for k, v in roster.users.iloc[0].to_dict().items() if k not in {"key", "key_norm", "shard", "row"}}
    )
    target.emulator.store.insert("Users", body)
    first = await run_cycle(target.client, state, roster, run_id="r1")
    assert first.adoption is not None
    assert first.adoption.users_adopted == 1
    assert list(first.plan.users["op"]) == ["refresh"], "the adopted values already equal the roster's"
    assert first.plan.is_empty
    audit = state.audit("r1")
    assert audit[["operation", "key", "outcome"]].to_dict("records") == [
        {"operation": "refresh", "key": "alice", "outcome": "ok"}
    ]
    second = plan_changes(roster, state.snapshot())
    assert second.users.empty
