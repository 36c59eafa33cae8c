"""A manager created in the same cycle as the people reporting to them is written in that cycle, not the next."""

from scim_pipeline.sync.cycle import run_cycle
from scim_pipeline.sync.state import ProvisioningState
from tests.sync.conftest import ENTERPRISE, Target, make_roster, user

CHAIN = [
    user("dora", manager="carl"),  # listed before her manager on purpose
    user("carl", manager="ann"),
    user("ann"),
    user("bob", manager="ann"),
]


async def test_a_first_cycle_writes_every_manager_and_the_second_writes_nothing(
    target: Target, state: ProvisioningState
) -> None:
    roster = make_roster(CHAIN)

    first = await run_cycle(target.client, state, roster, run_id="r1")

    assert not first.failed
    users = target.users()
    ids = {name: users[name]["id"] for name in users}
    assert users["dora"][ENTERPRISE]["manager"]["value"] == ids["carl"]
    assert users["carl"][ENTERPRISE]["manager"]["value"] == ids["ann"]
    assert users["bob"][ENTERPRISE]["manager"]["value"] == ids["ann"]
    target.emulator.clear_requests()

    second = await run_cycle(target.client, state, roster, run_id="r2")

    assert second.plan.is_empty
    assert [r for r in target.scim_requests() if r.method != "GET"] == []


async def test_a_cycle_of_managers_still_creates_everyone(target: Target, state: ProvisioningState) -> None:
    roster = make_roster([user("x", manager="y"), user("y", manager="x")])

    report = await run_cycle(target.client, state, roster, run_id="r1")

    assert not report.failed
    assert set(target.users()) == {"x", "y"}
