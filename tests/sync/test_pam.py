"""The PAM kinds of the engine: containers, container permissions and privileged-data placements from an access
file, planned and executed within Delinea's rules against the emulator."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

import pytest

from scim_pipeline.emulator import EmulatorConfig
from scim_pipeline.sync.access import AccessFile, parse_access
from scim_pipeline.sync.cycle import CycleReport, run_cycle
from scim_pipeline.sync.pam import (
    PLACEHOLDER_ID,
    ManagedPam,
    ManagedPermission,
    TargetAccess,
    TargetContainer,
    plan_access,
)
from scim_pipeline.sync.plan.guards import GuardSettings
from scim_pipeline.sync.state import ProvisioningState
from tests.sync.conftest import HandRoster, Target, emulated_target, make_roster, user

PRIVILEGED_DATA = "urn:ietf:params:scim:schemas:pam:1.0:PrivilegedData"
CONTAINER = "urn:ietf:params:scim:schemas:pam:1.0:Container"
ALLOWED_FILTER_ATTRIBUTES = {
    "Containers": {"name", "displayName"},
    "ContainerPermissions": {"container.value", "user.display", "user.value", "group.display", "group.value"},
    "PrivilegedData": {"privilegedData.value", "user.display", "user.value", "group.display", "group.value"},
}


def roster() -> HandRoster:
    return make_roster(
        users=[user("ada"), user("bob"), user("cyd")],
        groups=["Vault Admins", "Auditors"],
        memberships=[("Vault Admins", "ada"), ("Auditors", "bob")],
    )


def access(*containers: dict[str, Any], frame: HandRoster | None = None) -> AccessFile:
    frame = frame if frame is not None else roster()
    return parse_access(
        containers,
        path="access.yaml",
        users=frame.users["key"].astype(str),
        groups=frame.groups["key"].astype(str),
    )


BASE = (
    {
        "name": "Production",
        "permissions": [
            {"group": "Vault Admins", "rights": ["Owner", "Edit"]},
            {"group": "Auditors", "rights": ["View"]},
            {"user": "cyd", "rights": ["Add Secret", "View"]},
        ],
    },
    {"name": "Staging", "permissions": [{"group": "Auditors", "rights": "View"}]},
)


async def cycle(target: Target, state: ProvisioningState, file: AccessFile, **options: Any) -> CycleReport:
    frame = roster()
    return await run_cycle(target.client, state, frame, run_id="run", access=file, **options)


def permissions_on_target(target: Target) -> set[tuple[str, str, tuple[str, ...]]]:
    dump = target.emulator.store.dump()
    containers = {c["id"]: c["name"] for c in dump["Containers"]}
    found = set()
    for permission in dump["ContainerPermissions"]:
        principal = permission.get("group") or permission.get("user")
        found.add((containers[permission["container"]["value"]], principal["display"], tuple(permission["rights"])))
    return found


def pam_writes(target: Target) -> list[tuple[str, str]]:
    return [
        (r.method, r.resource_type)
        for r in target.writes()
        if r.resource_type in ("Containers", "ContainerPermissions", "PrivilegedData")
    ]


# ---- the planner -------------------------------------------------------------------------------------------------


def test_a_new_container_is_created_with_every_permission_of_the_file() -> None:
    file = access(*BASE)
    target = TargetAccess(containers={"production": None, "staging": None})
    ids = {("group", "vault admins"): "g1", ("group", "auditors"): "g2", ("user", "cyd"): PLACEHOLDER_ID}
    plan = plan_access(file, ManagedPam(), target, ids)
    assert [(c.op, c.name) for c in plan.containers] == [("create", "Production"), ("create", "Staging")]
    assert sorted((p.op, p.container, p.principal) for p in plan.permissions) == [
        ("add", "Production", "Auditors"),
        ("add", "Production", "Vault Admins"),
        ("add", "Production", "cyd"),
        ("add", "Staging", "Auditors"),
    ]


def test_other_rights_are_a_delete_and_an_add_never_an_edit() -> None:
    file = access({"name": "Production", "permissions": [{"group": "Auditors", "rights": ["View", "Edit"]}]})
    managed = ManagedPam(
        containers={"production": ("Production", "c1")},
        permissions=[ManagedPermission("c1", "group", "auditors", "Auditors", "g2", frozenset({"View"}), "p1")],
    )
    target = TargetAccess(
        containers={"production": TargetContainer("c1", "Production")},
        permissions={"c1": [{"id": "p1", "group": {"value": "g2"}, "rights": ["View"]}]},
    )
    plan = plan_access(file, managed, target, {("group", "auditors"): "g2"})
    assert [(p.op, sorted(p.rights), p.reason) for p in plan.permissions] == [
        ("delete", ["View"], "rights changed"),
        ("add", ["Edit", "View"], ""),
    ]
    assert plan.permission_removals == 0


def test_a_permission_that_left_the_file_is_deleted_only_when_we_manage_it() -> None:
    file = access({"name": "Production", "permissions": []})
    managed = ManagedPam(
        containers={"production": ("Production", "c1")},
        permissions=[ManagedPermission("c1", "group", "auditors", "Auditors", "g2", frozenset({"View"}), "p1")],
    )
    target = TargetAccess(
        containers={"production": TargetContainer("c1", "Production")},
        permissions={
            "c1": [
                {"id": "p1", "group": {"value": "g2"}, "rights": ["View"]},
                {"id": "p9", "user": {"value": "someone-else"}, "rights": ["Owner"]},
            ]
        },
    )
    plan = plan_access(file, managed, target, {})
    assert [(p.op, p.scim_id, p.reason) for p in plan.permissions] == [("delete", "p1", "left the access file")]
    assert plan.permission_removals == 1


def test_a_rejected_row_holds_the_permission_it_names() -> None:
    file = access({"name": "Production", "permissions": [{"group": "Auditors", "rights": ["Veiw"]}]})
    assert list(file.rejected["reason"]) == ["unknown right 'Veiw'; valid rights: Owner, Edit, Add Secret, View"]
    managed = ManagedPam(
        containers={"production": ("Production", "c1")},
        permissions=[ManagedPermission("c1", "group", "auditors", "Auditors", "g2", frozenset({"View"}), "p1")],
    )
    target = TargetAccess(
        containers={"production": TargetContainer("c1", "Production")},
        permissions={"c1": [{"id": "p1", "group": {"value": "g2"}, "rights": ["View"]}]},
    )
    assert plan_access(file, managed, target, {("group", "auditors"): "g2"}).permissions == []


def test_a_container_renamed_on_the_target_is_drift_and_nothing_is_planned_for_it() -> None:
    file = access(*BASE)
    managed = ManagedPam(containers={"production": ("Production", "c1")})
    target = TargetAccess(
        containers={"production": TargetContainer("c1", "Prod (old)"), "staging": None},
        permissions={"c1": []},
    )
    plan = plan_access(file, managed, target, {("group", "auditors"): "g2", ("group", "vault admins"): "g1"})
    assert [(d[0], d[1]) for d in plan.drift] == [("Containers", "Production")]
    assert "rename it by hand" in plan.drift[0][2]
    assert {p.container for p in plan.permissions} == {"Staging"}
    assert [c.name for c in plan.containers] == ["Staging"]


def test_a_permission_already_there_with_the_same_rights_is_adopted_without_a_call() -> None:
    file = access({"name": "Production", "permissions": [{"group": "Auditors", "rights": ["View"]}]})
    target = TargetAccess(
        containers={"production": TargetContainer("c1", "Production")},
        permissions={"c1": [{"id": "p1", "group": {"value": "g2"}, "rights": ["View"]}]},
    )
    plan = plan_access(file, ManagedPam(), target, {("group", "auditors"): "g2"})
    assert [c.op for c in plan.containers] == ["adopt"]
    assert [(p.op, p.scim_id) for p in plan.permissions] == [("adopt", "p1")]


# ---- the engine against the emulator ---------------------------------------------------------------------------


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


async def test_every_request_passes_the_filter_rules_with_one_permissions_read_per_container(
    target: Target, state: ProvisioningState
) -> None:
    await cycle(target, state, access(*BASE))
    target.emulator.clear_requests()
    await cycle(target, state, access(*BASE))
    reads = [r for r in target.scim_requests() if r.method == "GET"]
    for record in reads:
        filters = parse_qs(record.query).get("filter", [])
        if record.resource_type == "ContainerPermissions":
            assert len(filters) == 1, record
            assert filters[0].startswith('container.value eq "'), record
        for text in filters:
            assert text.split(" ", 1)[0] in ALLOWED_FILTER_ATTRIBUTES.get(record.resource_type, {"userName"}), text
            assert " or " not in text
    permission_reads = [parse_qs(r.query)["filter"][0] for r in reads if r.resource_type == "ContainerPermissions"]
    containers = {c["id"] for c in target.emulator.store.dump()["Containers"]}
    assert sorted(permission_reads) == sorted(f'container.value eq "{cid}"' for cid in containers)


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


async def test_a_container_that_cannot_be_read_is_reported_and_the_others_proceed(
    target: Target, state: ProvisioningState
) -> None:
    store = target.emulator.store
    parent = store.create("Containers", {"schemas": [CONTAINER], "name": "Europe"})
    store.create("Containers", {"schemas": [CONTAINER], "name": "Production"})
    store.create("Containers", {"schemas": [CONTAINER], "name": "Production", "parent": {"value": parent["id"]}})

    report = await cycle(target, state, access(*BASE))

    assert report.failed
    failures = [f for f in report.execution.failures if f.resource_type == "Containers"]
    assert [(f.op, f.key) for f in failures] == [("read", "Production")]
    assert {container for container, _principal, _rights in permissions_on_target(target)} == {"Staging"}
