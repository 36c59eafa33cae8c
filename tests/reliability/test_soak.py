"""Fault soak: 10,000 users, 200 groups and 30,000 memberships onboarded over real loopback HTTP into an emulator that
answers 10 % 503, 5 % 429 (both with Retry-After) and drops 2 % of connections, half of them after the write.

The target must end exactly equal to the desired state — no missing object, no duplicate, no stray membership — and
every planned operation must have a final outcome in the audit trail.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from scim_pipeline.emulator import ConnectionDropped, EmulatorConfig, create_app
from scim_pipeline.scim import ConnectionSettings, ScimClient
from scim_pipeline.sources import FolderRosterSource
from scim_pipeline.sync.cycle import CycleReport, run_cycle
from scim_pipeline.sync.mapping import Roster, build_roster
from scim_pipeline.sync.state import ProvisioningState

from .conftest import ROOT, EmulatorProcess, person, start_emulator, write_roster

USERS = 10_000
GROUPS = 200
GROUPS_PER_USER = 3  # 30,000 memberships
MAX_CYCLES = 4
UNAVAILABLE_RATE = 0.10
THROTTLE_RATE = 0.05
DROP_RATE = 0.02
FINAL_OUTCOMES = frozenset({"ok", "adopted", "already_done", "failed", "held"})


def group_name(index: int) -> str:
    return f"Soak Group {index:03d}"


def soak_roster(folder: Path) -> Path:
    users = [person(i) for i in range(USERS)]
    groups = [group_name(g) for g in range(GROUPS)]
    # Steps of 67 and 134 never wrap onto the same group (200 is not a multiple of either): three distinct groups.
    memberships = [
        (group_name((i + step * 67) % GROUPS), users[i]["user_name"]) for i in range(USERS) for step in range(3)
    ]
    assert len(set(memberships)) == USERS * GROUPS_PER_USER
    return write_roster(folder, users, groups, memberships)


@pytest.fixture
def faulty_emulator(tmp_path: Path) -> Iterator[EmulatorProcess]:
    # In its own process, so the emulator and the pipeline each get a core instead of sharing one GIL.
    emulator = start_emulator(
        "--unavailable-rate",
        str(UNAVAILABLE_RATE),
        "--throttle-rate",
        str(THROTTLE_RATE),
        "--drop-rate",
        str(DROP_RATE),
        "--retry-after",
        "1",
        "--seed",
        "5",
        "--db",
        str(tmp_path / "target.sqlite"),
    )
    try:
        yield emulator
    finally:
        emulator.stop()


def planned_operations(report: CycleReport) -> Counter[tuple[str, str, str]]:
    """(resource type, op, key) of every change the cycle meant to execute (group removals run with memberships)."""
    planned: Counter[tuple[str, str, str]] = Counter()
    for row in report.plan.users.itertuples(index=False):
        planned[("Users", str(row.op), str(row.key))] += 1
    frames = [report.plan.groups]
    if report.membership_plan is not None:
        frames += [report.membership_plan.groups, report.membership_plan.memberships]
    else:
        frames.append(report.plan.memberships)
    for frame in frames:
        for row in frame.itertuples(index=False):
            planned[("Groups", str(row.op), str(row.key))] += 1
    return planned


def audited_operations(audit: pd.DataFrame) -> Counter[tuple[str, str, str]]:
    return Counter(zip(audit["resource_type"], audit["operation"], audit["key"], strict=True))


async def converge(
    roster: Roster, settings: ConnectionSettings, state: ProvisioningState
) -> tuple[list[CycleReport], dict[str, Any]]:
    """Run cycles until one plans nothing; check every cycle's audit trail on the way."""
    reports: list[CycleReport] = []
    async with ScimClient(settings) as client:
        for cycle in range(1, MAX_CYCLES + 1):
            run_id = f"soak-{cycle}"
            report = await run_cycle(client, state, roster, run_id=run_id, member_chunk=100)
            assert not report.stopped_by_guard, [g.message for g in report.guards if not g.passed]
            assert not report.execution.circuit_open, report.execution.circuit_message
            reports.append(report)
            planned = planned_operations(report)
            audit = state.audit(run_id)
            assert set(audit["outcome"]) <= FINAL_OUTCOMES
            missing = planned - audited_operations(audit)
            assert not missing, f"cycle {cycle}: planned operations without an outcome: {list(missing)[:5]}"
            if report.plan.is_empty and (report.membership_plan is None or report.membership_plan.is_empty):
                break
        stats = client.stats
        figures = {
            "requests": stats.requests,
            "retries": stats.retries,
            "adoptions": stats.adoptions,
            "retry_wait_s": round(stats.retry_wait_s, 1),
            "token_requests": stats.token_requests,
            "transport_errors": stats.transport_errors,
            "by_status": {str(k): v for k, v in sorted(stats.by_status.items())},
        }
    return reports, figures


def assert_target_is_exactly_the_roster(dump: dict[str, list[dict[str, Any]]]) -> None:
    users = dump["Users"]
    folded = Counter(user["userName"].casefold() for user in users)
    duplicates = [name for name, count in folded.items() if count > 1]
    assert not duplicates, f"duplicate userNames on the target: {duplicates[:5]}"
    expected = {person(i)["user_name"]: person(i) for i in range(USERS)}
    assert {user["userName"] for user in users} == set(expected)
    for user in users:
        row = expected[user["userName"]]
        assert user["externalId"] == row["external_id"]
        assert user["displayName"] == row["display_name"]
        assert user["name"] == {"givenName": row["given_name"], "familyName": row["family_name"]}
        assert user["active"] is True

    groups = dump["Groups"]
    assert sorted(group["displayName"] for group in groups) == [group_name(g) for g in range(GROUPS)]
    name_of = {user["id"]: user["userName"] for user in users}
    expected_members: dict[str, set[str]] = {group_name(g): set() for g in range(GROUPS)}
    for i in range(USERS):
        for step in range(GROUPS_PER_USER):
            expected_members[group_name((i + step * 67) % GROUPS)].add(expected[person(i)["user_name"]]["user_name"])
    for group in groups:
        values = [member["value"] for member in group.get("members", [])]
        assert len(values) == len(set(values)), f"{group['displayName']}: a member listed twice"
        assert {name_of[value] for value in values} == expected_members[group["displayName"]], group["displayName"]


def test_emulator_injects_the_soak_fault_mix() -> None:
    """The knobs the soak relies on give the shares it claims (checked in-process, cheaply)."""
    import httpx

    config = EmulatorConfig(
        unavailable_rate=UNAVAILABLE_RATE, throttle_rate=THROTTLE_RATE, drop_rate=DROP_RATE, seed=11
    )
    app = create_app(config)

    async def hammer() -> Counter[int]:
        statuses: Counter[int] = Counter()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            token = (
                await http.post(
                    "/identity/api/oauth2/token/xpmplatform",
                    data={"grant_type": "client_credentials", "client_id": "scim-demo", "client_secret": "demo-secret"},
                )
            ).json()["access_token"]
            for _ in range(4000):
                try:
                    response = await http.get("/scim/v2/Users", headers={"Authorization": f"Bearer {token}"})
                except ConnectionDropped:  # in-process, a dropped connection surfaces as this exception
                    statuses[0] += 1
                    continue
                statuses[response.status_code] += 1
                if response.status_code in (429, 503):
                    assert response.headers["Retry-After"] == "1"
        return statuses

    try:
        statuses = asyncio.run(hammer())
    finally:
        app.emulator.close()
    assert abs(statuses[503] / 4000 - UNAVAILABLE_RATE) < 0.02
    assert abs(statuses[429] / 4000 - THROTTLE_RATE) < 0.015
    assert abs(statuses[0] / 4000 - DROP_RATE) < 0.01
    assert statuses[500] == 0


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_soak_under_faults_converges_exactly(faulty_emulator: EmulatorProcess, tmp_path: Path) -> None:
    started = time.perf_counter()
    roster = build_roster(FolderRosterSource(soak_roster(tmp_path / "roster")).read(), None, shards=16)
    assert len(roster.users) == USERS
    assert len(roster.memberships) == USERS * GROUPS_PER_USER
    assert roster.rejected.empty
    settings = ConnectionSettings(
        base_url=faulty_emulator.base_url,
        token_url=faulty_emulator.token_url,
        client_id=faulty_emulator.client_id,
        client_secret=faulty_emulator.client_secret,
        max_concurrency=32,
        max_attempts=8,
        # Retry-After (1 s from the emulator) is honoured in full; the cap only bounds the backoff of drops.
        max_retry_wait_s=1.0,
    )
    with ProvisioningState.open(tmp_path / "state.sqlite") as state:
        reports, figures = asyncio.run(converge(roster, settings, state))
        managed = state.managed_users()
        assert len(managed) == USERS
        assert managed["scim_id"].notna().all()
        assert (managed["status"] == "ok").all()
    wall_s = time.perf_counter() - started

    dump = faulty_emulator.state()
    assert_target_is_exactly_the_roster(dump)
    assert reports[-1].plan.is_empty, "no cycle planned nothing: not converged"

    counters = faulty_emulator.counters()
    served = Counter[int]()
    for resource_type, by_status in counters.items():
        if resource_type not in ("token", ""):
            served.update({int(status): count for status, count in by_status.items()})
    scim_answers = sum(served.values())
    soak = {
        "users": USERS,
        "groups": GROUPS,
        "memberships": USERS * GROUPS_PER_USER,
        "cycles": len(reports),
        "wall_s": round(wall_s, 1),
        "client": figures,
        "cycle_calls": [int(r.execution.calls) for r in reports],
        "cycle_failures": [len(r.execution.failures) for r in reports],
        "emulator_answers": scim_answers,
        "emulator_503": served[503],
        "emulator_429": served[429],
        "emulator_dropped": served[0],
    }
    print("\nsoak figures:", json.dumps(soak, indent=2))
    results = ROOT / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "soak.json").write_text(json.dumps(soak, indent=2) + "\n", encoding="utf-8")

    # The faults really happened, at about the advertised shares, and were survived.
    assert served[503] > 0.07 * scim_answers
    assert served[429] > 0.03 * scim_answers
    assert served[0] > 0.01 * scim_answers
    assert figures["retries"] > 0.1 * figures["requests"]
    assert figures["adoptions"] > 0, "no create answer was lost after its write: the drop knob did not bite"
    assert len(reports) <= MAX_CYCLES
