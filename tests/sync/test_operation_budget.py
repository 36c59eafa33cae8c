"""The operation budget (SCIM_MAX_OPERATIONS_PER_CYCLE): onboarding over successive cycles against the bundled
emulator over real loopback HTTP — at most N writes per cycle, in priority, the rest deferred and continued by the
next cycle, with no duplicate and no extra read."""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from scim_pipeline.emulator import EmulatorConfig, EmulatorServer
from scim_pipeline.scim import ScimClient
from scim_pipeline.sync.cycle import CycleOptions, CycleReport, run_cycle
from scim_pipeline.sync.plan.budget import BUDGET_REASON
from scim_pipeline.sync.plan.guards import GuardSettings
from scim_pipeline.sync.state import ProvisioningState
from tests.scim.emulated_target import emulator_settings, scim_requests

from .conftest import HandRoster, make_roster, user

WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass
class CycleFigures:
    report: CycleReport
    writes: int
    reads: int
    seconds: float


@dataclass
class Onboarding:
    server: EmulatorServer
    state: ProvisioningState

    async def cycle(self, roster: HandRoster, run_id: str, budget: int | None, **options: object) -> CycleFigures:
        self.server.emulator.clear_requests()
        started = time.perf_counter()
        async with ScimClient(emulator_settings(self.server, concurrency=16)) as client:
            report = await run_cycle(
                client,
                self.state,
                roster,
                run_id=run_id,
                options=CycleOptions(run_id=run_id, max_operations=budget, **options),  # type: ignore[arg-type]
                rejected=roster.rejected,
            )
        seconds = time.perf_counter() - started
        seen = scim_requests(self.server)
        return CycleFigures(
            report,
            writes=sum(record.method in WRITES for record in seen),
            reads=sum(record.method == "GET" for record in seen),
            seconds=seconds,
        )

    def user_names(self) -> Counter[str]:
        return Counter(resource["userName"] for resource in self.server.emulator.store.dump()["Users"])


@pytest.fixture
def onboarding(tmp_path: Path) -> Iterator[Onboarding]:
    with (
        EmulatorServer(EmulatorConfig(page_size_cap=1000)) as server,
        ProvisioningState.open(f"sqlite:///{tmp_path / 'state.sqlite'}") as state,
    ):
        yield Onboarding(server, state)


def people(count: int) -> list[dict[str, object]]:
    return [user(f"user{i:05d}@example.com") for i in range(count)]


async def test_onboarding_with_a_budget_converges_in_users_over_budget_cycles(onboarding: Onboarding) -> None:
    """The issue's 20,000 users with N = 5,000, scaled down to 2,000 with N = 500 to keep the suite fast (the full
    size runs in benchmarks/operation_budget.py): 4 cycles of exactly N creates, no duplicate, no growing reads."""
    users, budget = 2_000, 500
    roster = make_roster(people(users))
    figures = [await onboarding.cycle(roster, f"c{n}", budget) for n in range(1, 6)]

    for number, cycle in enumerate(figures[:4], start=1):
        assert not cycle.report.failed, cycle.report.execution.failures[:3]
        assert cycle.writes == budget, f"cycle {number} sent {cycle.writes} writes"
        assert cycle.report.plan.summary()["user_creates"] == budget
        assert cycle.report.budget is not None
        assert cycle.report.budget.deferred == users - budget * number
    names = onboarding.user_names()
    assert sum(names.values()) == users
    assert max(names.values()) == 1, "no userName created twice"
    fifth = figures[4]
    assert fifth.report.plan.is_empty, "converged after the fourth cycle"
    assert fifth.writes == 0
    assert fifth.report.budget is not None
    assert fifth.report.budget.deferred == 0
    reads = [cycle.reads for cycle in figures]
    # The first cycle reads the (empty) target to adopt; the next ones read nothing: reads never grow.
    assert reads[1:] == [0, 0, 0, 0], reads
    assert reads[0] <= 10, reads


async def test_priority_deferral_and_waiting_memberships(onboarding: Onboarding) -> None:
    """2,000 users, 5 groups, a membership each, budget 500: group creates first, then user creates, and the
    memberships of users not created yet wait with the budget's reason; every cycle writes at most 500, and the
    cycles needed are exactly the writes needed divided by the budget."""
    users = people(2_000)
    groups = [f"Team {n}" for n in range(5)]
    memberships = [(groups[i % 5], str(row["userName"])) for i, row in enumerate(users)]
    roster = make_roster(users, groups, memberships)
    needed = 5 + 2_000 + 5 * math.ceil(400 / 100)  # group creates, user creates, member PATCHes of 100

    first = await onboarding.cycle(roster, "c1", 500)
    assert first.writes == 500
    plan = first.report.plan.summary()
    assert (plan["group_creates"], plan["user_creates"]) == (5, 495)
    assert first.report.plan.memberships.empty, "no budget left for memberships"
    budget = first.report.budget
    assert budget is not None
    assert {row["detail"] for row in budget.rows()} == {BUDGET_REASON}
    assert len(budget.users) == 1_505
    assert set(budget.users["op"]) == {"create"}
    waiting = first.report.deferred
    assert len(waiting) == 2_000
    assert waiting["reason"].str.startswith(BUDGET_REASON).all()
    assert any("later cycle" in reason for reason in waiting["reason"])

    cycles = [first]
    while cycles[-1].writes and len(cycles) < 10:
        cycles.append(await onboarding.cycle(roster, f"c{len(cycles) + 1}", 500))
    assert all(cycle.writes <= 500 for cycle in cycles)
    assert sum(cycle.writes for cycle in cycles) == needed
    assert len(cycles) - 1 == math.ceil(needed / 500), "the last cycle planned nothing"
    assert max(onboarding.user_names().values()) == 1
    members = Counter(len(group.get("members", [])) for group in onboarding.server.emulator.store.dump()["Groups"])
    assert members == Counter({400: 5})


async def test_deprovisions_come_last_and_the_guards_judge_the_whole_plan(onboarding: Onboarding) -> None:
    roster = make_roster(people(60))
    await onboarding.cycle(roster, "c1", None)
    # 20 leave, 10 join: the budget of 12 writes the 10 creates first, then 2 of the 20 disables.
    shrunk = make_roster([*people(40), *(user(f"new{i}@example.com") for i in range(10))])
    cycle = await onboarding.cycle(shrunk, "c2", 12, guards=GuardSettings(max_deletes=25))
    assert not cycle.report.failed
    assert cycle.report.guards
    assert all(guard.passed for guard in cycle.report.guards)
    # The deletion threshold saw all 20 disables, not the 2 of this cycle's slice.
    deletion = next(guard for guard in cycle.report.guards if guard.name == "deletion_threshold")
    assert deletion.observed == 20
    plan = cycle.report.plan.summary()
    assert (plan["user_creates"], plan["disables"]) == (10, 2)
    assert cycle.writes == 12

    # A budget never lets an accident through in slices: 45 of 60 leaving trips the guards before any call.
    onboarding_roster = make_roster(people(15))
    stopped = await onboarding.cycle(onboarding_roster, "c3", 5)
    assert stopped.report.stopped_by_guard
    assert stopped.writes == 0


async def test_a_dry_run_shows_what_the_budget_would_defer(onboarding: Onboarding) -> None:
    roster = make_roster(people(30), ["Ops"], [("Ops", "user00001@example.com")])
    dry = await onboarding.cycle(roster, "p1", 10, dry_run=True)
    assert dry.writes == 0
    budget = dry.report.budget
    assert budget is not None
    assert dry.report.plan.summary()["group_creates"] == 1
    assert dry.report.plan.summary()["user_creates"] == 9
    assert len(budget.users) == 21
    assert "deferred" in budget.note()
    assert "SCIM_MAX_OPERATIONS_PER_CYCLE=10" in budget.note()
