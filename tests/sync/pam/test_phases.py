"""The PAM kinds in the engine's cycle: containers, container permissions and privileged-data placements from an
access file, executed by the engine's executor within Delinea's rules against the emulator."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd
import pytest

from scim_pipeline.emulator import EmulatorConfig
from scim_pipeline.sync.cycle import CycleReport
from scim_pipeline.sync.execute.executor import CircuitBreaker
from scim_pipeline.sync.plan.guards import GuardSettings
from scim_pipeline.sync.state import AUDIT_COLUMNS, EscrowPolicy, ProvisioningState
from tests.sync.conftest import Target, emulated_target, make_roster, user
from tests.sync.pam.conftest import BASE, CONTAINER, PRIVILEGED_DATA, access, cycle, pam_writes, permissions_on_target


async def test_an_access_file_provisions_containers_and_permissions_then_a_second_run_changes_nothing(
    target: Target, state: ProvisioningState
) -> None:
    report = await cycle(target, state, access(*BASE))
    assert not report.failed, report.execution.failures
    assert permissions_on_target(target) == {
        ("Production", "Vault Admins", ("Edit", "Owner")),
        ("Production", "Auditors", ("View",)),
        ("Production", "Cyd Example", ("Add Secret", "View")),
        ("Staging", "Auditors", ("View",)),
    }
    assert report.pam is not None
    assert set(report.pam.access_snapshot["managed"]) == {True}
    assert len(report.pam.access_snapshot) == 6  # one row per right
    assert report.pam.access_drift.empty

    target.emulator.clear_requests()
    again = await cycle(target, state, access(*BASE))
    assert not again.failed
    assert pam_writes(target) == []
    assert again.pam is not None
    assert again.pam.change_rows() == []


async def test_a_changed_file_yields_exactly_the_needed_adds_and_deletes(
    target: Target, state: ProvisioningState
) -> None:
    await cycle(target, state, access(*BASE))
    changed = (
        {
            "name": "Production",
            "permissions": [
                {"group": "Vault Admins", "rights": ["Owner", "Edit"]},
                {"user": "cyd", "rights": ["View"]},  # other rights: delete + add
                {"user": "ada", "rights": ["View"]},  # new
            ],  # Auditors left
        },
        BASE[1],
    )
    target.emulator.clear_requests()
    report = await cycle(target, state, access(*changed))
    assert not report.failed, report.execution.failures
    assert report.pam is not None
    assert sorted((row["op"], row["key"]) for row in report.pam.change_rows()) == [
        ("add", "user ada"),
        ("add", "user cyd"),
        ("delete", "group Auditors"),
        ("delete", "user cyd"),
    ]
    assert (
        sorted(pam_writes(target)) == [("DELETE", "ContainerPermissions")] * 2 + [("POST", "ContainerPermissions")] * 2
    )
    assert ("Production", "Cyd Example", ("View",)) in permissions_on_target(target)
    assert ("Production", "Auditors", ("View",)) not in permissions_on_target(target)


async def test_a_container_renamed_on_the_target_is_reported_not_attempted(
    target: Target, state: ProvisioningState
) -> None:
    await cycle(target, state, access(*BASE))
    production = next(c for c in target.emulator.store.dump()["Containers"] if c["name"] == "Production")
    # Someone renamed the folder in Secret Server; the SCIM API itself offers no rename.
    target.emulator.store.replace("Containers", production["id"], {"schemas": [CONTAINER], "name": "Prod (old)"})
    target.emulator.clear_requests()
    report = await cycle(target, state, access(*BASE))
    assert report.pam is not None
    assert [(d[0], d[1]) for d in report.pam.plan.drift] == [("Containers", "Production")]
    assert pam_writes(target) == []
    assert {c["name"] for c in target.emulator.store.dump()["Containers"]} == {"Prod (old)", "Staging"}


async def test_a_container_that_left_the_file_is_reported_never_deleted(
    target: Target, state: ProvisioningState
) -> None:
    await cycle(target, state, access(*BASE))
    target.emulator.clear_requests()
    report = await cycle(target, state, access(BASE[0]))
    assert report.pam is not None
    assert [(d[1], "delete it by hand" in d[2]) for d in report.pam.plan.drift] == [("Staging", True)]
    assert pam_writes(target) == []


async def test_missing_owner_rights_are_reported_once_with_the_fix_and_not_retried(
    state: ProvisioningState,
) -> None:
    async with emulated_target(EmulatorConfig(owner_rights=False)) as target:
        report = await cycle(target, state, access(*BASE))
        forbidden = [r for r in target.scim_requests() if r.status == 403]
        assert target.users()  # users and groups were provisioned all the same
    assert len(forbidden) == 1
    failures = [f for f in report.execution.failures if f.status == 403]
    assert len(failures) == 1
    assert "grant it Owner, Edit, Add Secret and View" in failures[0].message
    assert report.failed


async def test_privileged_data_is_attached_and_detached_never_created(target: Target, state: ProvisioningState) -> None:
    secret = target.emulator.store.insert("PrivilegedData", {"schemas": [PRIVILEGED_DATA], "name": "prod-db-root"})
    with_data = ({**BASE[0], "privileged_data": ["prod-db-root"]}, BASE[1])
    report = await cycle(target, state, access(*with_data))
    assert not report.failed, report.execution.failures
    stored = target.emulator.store.get("PrivilegedData", secret["id"])
    production = next(c for c in target.emulator.store.dump()["Containers"] if c["name"] == "Production")
    assert stored["container"]["value"] == production["id"]
    assert report.pam is not None
    assert list(report.pam.placement_snapshot["privileged_data"]) == ["prod-db-root"]

    target.emulator.clear_requests()
    await cycle(target, state, access(*BASE))
    assert "container" not in target.emulator.store.get("PrivilegedData", secret["id"])
    assert pam_writes(target) == [("PATCH", "PrivilegedData")]
    assert target.emulator.store.count("PrivilegedData") == 1


async def test_removing_many_permissions_is_stopped_by_the_guard(target: Target, state: ProvisioningState) -> None:
    await cycle(target, state, access(*BASE))
    target.emulator.clear_requests()
    emptied = ({"name": "Production"}, {"name": "Staging"})
    report = await cycle(target, state, access(*emptied), guards=GuardSettings(max_deletes=2))
    assert report.stopped_by_guard
    assert [g.name for g in report.guards if not g.passed] == ["permission_removals"]
    assert pam_writes(target) == []


async def test_a_dry_run_plans_the_pam_kinds_and_writes_nothing(target: Target, state: ProvisioningState) -> None:
    report = await cycle(target, state, access(*BASE), dry_run=True)
    assert report.pam is not None
    assert report.pam.counts()["container_creates"] == 2
    assert [r for r in target.writes() if r.resource_type != "token"] == []


@pytest.mark.parametrize("kinds", [frozenset({"users", "groups", "memberships"})])
async def test_a_user_and_group_sync_leaves_the_pam_kinds_alone(
    target: Target, state: ProvisioningState, kinds: frozenset[str]
) -> None:
    report = await cycle(target, state, access(*BASE), kinds=kinds)
    assert report.pam is None
    assert target.emulator.store.count("Containers") == 0


# ---- one executor: the users' breaker, escrow and audit -------------------------------------------------------

STORM_USERS = 30
OUTCOMES = {"ok", "failed", "adopted", "already_done", "skipped", "held"}


@dataclass
class Storm:
    """A cycle during a 503 storm on one kind of call, with the breaker it was given, then a cycle once it passed."""

    stormy: CycleReport
    calm: CycleReport
    breaker: CircuitBreaker
    audit: pd.DataFrame


async def storm_then_calm(workdir: Path, scope: str) -> Storm:
    frame = make_roster(users=[user(f"u{i:02d}") for i in range(STORM_USERS)])
    file = access(
        {"name": "Vault", "permissions": [{"user": f"u{i:02d}", "rights": ["View"]} for i in range(STORM_USERS)]},
        frame=frame,
    )
    tenant = workdir / f"{scope.replace(' ', '-')}.sqlite"
    breaker = CircuitBreaker()
    escrow = EscrowPolicy(after_failures=1)  # held after one failed cycle: the next cycle shows it
    with ProvisioningState.open(workdir / f"{scope.replace(' ', '-')}-state.sqlite") as state:
        storm = EmulatorConfig(db_path=tenant, unavailable_rate=1.0, fault_scope=(scope,))
        async with emulated_target(storm, max_attempts=1) as target:
            stormy = await cycle(target, state, file, frame=frame, breaker=breaker, escrow=escrow)
        async with emulated_target(EmulatorConfig(db_path=tenant), max_attempts=1) as target:
            calm = await cycle(target, state, file, frame=frame, escrow=escrow)
        return Storm(stormy, calm, breaker, state.audit())


@pytest.fixture(scope="module")
def storms(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Storm]:
    """The same storm on user creates and on permission adds, each against its own tenant and state store."""
    workdir = tmp_path_factory.mktemp("storms")
    return {kind: asyncio.run(storm_then_calm(workdir, f"POST {kind}")) for kind in ("Users", "ContainerPermissions")}


@pytest.mark.parametrize("kind", ["Users", "ContainerPermissions"])
def test_a_503_storm_opens_the_cycles_one_circuit_breaker_and_fills_one_escrow(
    storms: dict[str, Storm], kind: str
) -> None:
    storm = storms[kind]
    execution = storm.stormy.execution
    assert execution.circuit_open
    assert storm.breaker.is_open
    assert execution.circuit_message is not None
    assert "circuit open" in execution.circuit_message
    failed = [f for f in execution.failures if f.resource_type == kind]
    assert failed
    assert {f.status for f in failed} == {503}
    assert execution.not_attempted > 0, "the breaker stops the calls not sent yet"
    # The breaker the cycle was given counted every call of the cycle, the users' creates included.
    assert storm.breaker.failures == len(failed)
    assert storm.breaker.calls == execution.calls
    if kind == "ContainerPermissions":
        assert execution.count(resource_type="Users", outcome="ok") == STORM_USERS

    held = storm.calm.execution.held
    assert sorted(h.key for h in held) == sorted(f.key for f in failed)
    assert {(h.resource_type, h.op) for h in held} == {(kind, "create" if kind == "Users" else "add")}
    assert all(h.reason is not None and "503" in h.reason and h.until > time.time() for h in held)
    assert storm.calm.execution.count(resource_type=kind, outcome="held") == len(held)
    # What was never attempted went through once the storm passed; what is held waits for its time.
    assert not storm.calm.execution.failures
    assert storm.calm.execution.count(resource_type=kind, outcome="ok") == STORM_USERS - len(held)


def test_pam_audit_rows_have_the_users_shape(storms: dict[str, Storm]) -> None:
    def shapes(audit: pd.DataFrame, kind: str, outcome: str) -> set[tuple[str, ...]]:
        rows = audit[audit["resource_type"].eq(kind) & audit["outcome"].eq(outcome)]
        assert len(rows), (kind, outcome)
        return {tuple(c for c in AUDIT_COLUMNS if pd.notna(row[c])) for _, row in rows.iterrows()}

    users, permissions = storms["Users"].audit, storms["ContainerPermissions"].audit
    assert list(permissions.columns) == list(users.columns) == list(AUDIT_COLUMNS)
    for outcome in ("failed", "held", "ok"):
        assert shapes(permissions, "ContainerPermissions", outcome) == shapes(users, "Users", outcome), outcome
    assert set(permissions["outcome"]) <= OUTCOMES
    pam = permissions[permissions["resource_type"].isin(["Containers", "ContainerPermissions"])]
    assert set(pam["run_id"]) == {"run"}
    failed = pam[pam["outcome"].eq("failed")]
    assert set(failed["http_status"]) == {503}
    assert failed["attempts"].eq(1).all()


class ForbidPermissionWrites(httpx.AsyncBaseTransport):
    """Answers 403 to every write of a container permission (reads pass): rights missing only for writing."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.forbidden = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method in {"POST", "DELETE"} and "/ContainerPermissions" in request.url.path:
            self.forbidden += 1
            body = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"], "status": "403", "detail": "denied"}
            return httpx.Response(403, json=body, headers={"content-type": "application/scim+json"})
        return await self.inner.handle_async_request(request)


async def test_a_403_on_the_first_permission_write_stops_the_cycles_pam_calls_reported_once_never_held(
    state: ProvisioningState,
) -> None:
    transports: list[ForbidPermissionWrites] = []

    def forbid(inner: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
        transports.append(ForbidPermissionWrites(inner))
        return transports[0]

    with_data = ({**BASE[0], "privileged_data": ["prod-db-root"]}, BASE[1])
    async with emulated_target(wrap=forbid) as target:
        target.emulator.store.insert("PrivilegedData", {"schemas": [PRIVILEGED_DATA], "name": "prod-db-root"})
        report = await cycle(target, state, access(*with_data), escrow=EscrowPolicy(after_failures=1))
        placements = [w for w in target.writes() if w.resource_type == "PrivilegedData"]
        users = target.users()

    assert transports[0].forbidden == 1, "one request, never retried, and no other permission write after it"
    assert placements == [], "the cycle's PAM calls stop at the first 403"
    failures = [f for f in report.execution.failures if f.status == 403]
    assert len(failures) == 1
    assert "grant it Owner, Edit, Add Secret and View" in failures[0].message
    audit = state.audit("run")
    forbidden = audit[audit["http_status"].eq(403)]
    assert list(forbidden["outcome"]) == ["failed"]
    assert "grant it Owner" in str(forbidden["error"].iloc[0])
    assert state.held("ContainerPermissions") == {}, "missing rights are a set-up problem, not a failing object"
    assert len(users) == 3  # users and groups were provisioned all the same
