"""Delinea's PAM kinds through the Dagster assets: the access file provisions containers and permissions against the
emulator over real loopback HTTP, within Delinea's filter rules."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import yaml
from dagster import DagsterInstance

from scim_pipeline.emulator import EmulatorConfig, EmulatorServer
from scim_pipeline.sync.outcome import CycleOutcome
from scim_pipeline.sync.state import ProvisioningState
from tests.assets.conftest import CLIENT_ID, CLIENT_SECRET, SHARDS, Pipeline, Roster, Target
from tests.assets.test_cycle import materialized_metadata

PAM_TYPES = ("Containers", "ContainerPermissions", "PrivilegedData")
ACCESS: dict[str, Any] = {
    "containers": [
        {
            "name": "Vault",
            "permissions": [
                {"group": "Vault Admins", "rights": ["Owner", "Edit", "Add Secret", "View"]},
                {"group": "Auditors", "rights": ["View"]},
            ],
        },
        {
            "name": "Engineering Secrets",
            "permissions": [
                {"group": "Engineering", "rights": ["Add Secret", "View"]},
                {"user": "user001@example.com", "rights": ["Edit"]},
            ],
        },
    ]
}


def write_access(path: Path, document: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")


@pytest.fixture
def access_file(pipeline: Pipeline, tmp_path: Path) -> Path:
    path = tmp_path / "access.yaml"
    write_access(path, ACCESS)
    pipeline.env["SCIM_ACCESS"] = str(path)
    return path


def pam_writes(target: Target) -> list[tuple[str, str]]:
    return [(r["method"], r["resource_type"]) for r in target.writes() if r["resource_type"] in PAM_TYPES]


def permissions(target: Target) -> set[tuple[str, str, tuple[str, ...]]]:
    containers = {c["id"]: c["name"] for c in target.list("Containers")}
    found = set()
    for container_id, name in containers.items():
        answer = target.http.get(
            "/scim/v2/ContainerPermissions", params={"filter": f'container.value eq "{container_id}"'}
        ).json()
        for permission in answer["Resources"]:
            principal = permission.get("group") or permission.get("user")
            found.add((name, principal["display"], tuple(sorted(permission["rights"]))))
    return found


def outcome_of(pipeline: Pipeline, result: Any) -> CycleOutcome:
    return pipeline.outcome(result)


def test_an_access_file_provisions_containers_and_permissions_and_a_second_run_changes_nothing(
    pipeline: Pipeline, access_file: Path, target: Target
) -> None:
    result = pipeline.sync()

    assert result.success
    assert {c["name"] for c in target.list("Containers")} == {"Vault", "Engineering Secrets"}
    assert permissions(target) == {
        ("Vault", "Vault Admins", ("Add Secret", "Edit", "Owner", "View")),
        ("Vault", "Auditors", ("View",)),
        ("Engineering Secrets", "Engineering", ("Add Secret", "View")),
        ("Engineering Secrets", "Given1 Family1", ("Edit",)),
    }
    assert materialized_metadata(result, "container_changes")["creates"] == 2
    assert materialized_metadata(result, "permission_provisioning")["calls"] == 4
    snapshot = materialized_metadata(result, "access_snapshot")
    assert (snapshot["containers"], snapshot["permissions"], snapshot["rights"]) == (2, 4, 8)
    assert (snapshot["managed_rights"], snapshot["unmanaged_rights"], snapshot["drift"]) == (8, 0, 0)

    target.clear_requests()
    again = pipeline.sync()

    assert again.success
    assert target.writes() == []
    assert materialized_metadata(again, "access_snapshot")["rights"] == 8


def test_a_changed_access_file_yields_exactly_the_needed_adds_and_deletes(
    pipeline: Pipeline, access_file: Path, target: Target
) -> None:
    assert pipeline.sync().success
    changed = yaml.safe_load(yaml.safe_dump(ACCESS))
    vault = changed["containers"][0]["permissions"]
    vault[1]["rights"] = ["View", "Edit"]  # Auditors get other rights: a delete and an add
    changed["containers"][1]["permissions"].pop()  # user001 leaves Engineering Secrets: a delete
    write_access(access_file, changed)
    target.clear_requests()

    result = pipeline.sync()

    assert result.success
    assert sorted(pam_writes(target)) == [
        ("DELETE", "ContainerPermissions"),
        ("DELETE", "ContainerPermissions"),
        ("POST", "ContainerPermissions"),
    ]
    assert ("Vault", "Auditors", ("Edit", "View")) in permissions(target)
    changes = sorted((c.op, c.key) for c in outcome_of(pipeline, result).changes if c.kind == "permission")
    assert changes == [("add", "group Auditors"), ("delete", "group Auditors"), ("delete", "user user001@example.com")]


def test_every_request_passes_the_filter_rules_with_one_permissions_read_per_container(
    pipeline: Pipeline, access_file: Path, target: Target
) -> None:
    assert pipeline.sync().success
    target.clear_requests()
    assert pipeline.sync().success

    reads = [r for r in target.requests() if r["method"] == "GET" and r["resource_type"] in PAM_TYPES]
    permission_filters = []
    for record in reads:
        filters = parse_qs(record["query"]).get("filter", [])
        if record["resource_type"] == "ContainerPermissions":
            assert len(filters) == 1, record
            permission_filters.append(filters[0])
        for text in filters:
            assert text.split(" ")[0] in {"name", "container.value"}, text
            assert " or " not in text
    containers = {c["id"] for c in target.list("Containers")}
    assert sorted(permission_filters) == sorted(f'container.value eq "{cid}"' for cid in containers)
    assert all(r["status"] < 400 for r in target.requests())


def test_a_container_renamed_on_the_target_is_reported_not_attempted(
    pipeline: Pipeline, access_file: Path, target: Target, emulator: EmulatorServer
) -> None:
    assert pipeline.sync().success
    vault = next(c for c in target.list("Containers") if c["name"] == "Vault")
    emulator.emulator.store.replace("Containers", vault["id"], {"schemas": vault["schemas"], "name": "Vault (old)"})
    target.clear_requests()

    result = pipeline.sync()

    assert result.success
    assert pam_writes(target) == []
    drift = outcome_of(pipeline, result).access_drift
    assert [(d.resource_type, d.key) for d in drift] == [("Containers", "Vault")]
    assert "rename it by hand" in drift[0].attribute
    drift_rows = materialized_metadata(result, "container_changes")["drift"].records
    assert "rename it by hand" in drift_rows[0].data["to_fix_by_hand"]


def test_a_bad_access_row_is_set_aside_with_file_and_line_and_the_rest_proceeds(
    pipeline: Pipeline, access_file: Path, target: Target
) -> None:
    document = yaml.safe_load(yaml.safe_dump(ACCESS))
    document["containers"][0]["permissions"].append({"group": "Nobody", "rights": ["View"]})
    document["containers"][1]["permissions"].append({"group": "Auditors", "rights": ["Read"]})
    write_access(access_file, document)

    result = pipeline.sync()

    assert result.success
    rejected = [r for r in outcome_of(pipeline, result).rejected if r.table == "access"]
    assert [(r.file, r.key, r.field) for r in rejected] == [
        (str(access_file), "Nobody", "group"),
        (str(access_file), "Auditors", "rights"),
    ]
    lines = access_file.read_text(encoding="utf-8").splitlines()
    assert all(r.row is not None and ("Nobody" in lines[r.row - 1] or "Auditors" in lines[r.row - 1]) for r in rejected)
    assert len(permissions(target)) == 4


def test_the_permission_sync_job_runs_the_pam_kinds_only(pipeline: Pipeline, access_file: Path, target: Target) -> None:
    assert pipeline.sync().success  # users and groups first: permissions name their SCIM ids
    write_access(access_file, {"containers": [*ACCESS["containers"], {"name": "Audit", "permissions": []}]})
    target.clear_requests()

    job = pipeline.definitions().resolve_job_def("scim_permission_sync")
    result = job.execute_in_process(instance=pipeline.instance, raise_on_error=False)

    assert result.success
    assert pam_writes(target) == [("POST", "Containers")]
    assert {event.asset_key.path[-1] for event in result.get_asset_materialization_events()} >= {
        "container_provisioning",
        "permission_provisioning",
        "access_snapshot",
    }


@pytest.fixture
def unowned_emulator() -> Iterator[EmulatorServer]:
    config = EmulatorConfig(clients={CLIENT_ID: CLIENT_SECRET}, page_size_cap=5, owner_rights=False)
    with EmulatorServer(config) as server:
        yield server


def test_missing_owner_rights_are_reported_once_with_the_fix(
    unowned_emulator: EmulatorServer,
    roster: Roster,
    instance: DagsterInstance,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "access.yaml"
    write_access(path, ACCESS)
    pipeline = Pipeline(
        {
            "SCIM_BASE_URL": unowned_emulator.base_url,
            "SCIM_TOKEN_URL": unowned_emulator.token_url,
            "SCIM_CLIENT_ID": CLIENT_ID,
            "SCIM_CLIENT_SECRET": CLIENT_SECRET,
            "SCIM_ROSTER": str(roster.folder),
            "SCIM_STATE_URL": f"sqlite:///{tmp_path / 'state.sqlite'}",
            "SCIM_SHARDS": str(SHARDS),
            "SCIM_ACCESS": str(path),
        },
        instance,
        monkeypatch,
    )

    result = pipeline.sync()

    assert not result.success
    forbidden = [r for r in unowned_emulator.emulator.requests if r.status == 403]
    assert len(forbidden) == 1
    outcome = outcome_of(pipeline, result)
    failures = [f for f in outcome.failures if f.status == 403]
    assert len(failures) == 1
    assert "grant it Owner, Edit, Add Secret and View" in failures[0].message
    assert outcome.counts["user_creates"] == len(roster.users)  # users and groups are provisioned all the same


def test_the_component_takes_the_access_file(tmp_path: Path) -> None:
    from scim_pipeline.assets.component import ScimProvisioningComponent

    path = tmp_path / "access.yaml"
    write_access(path, ACCESS)
    live = ScimProvisioningComponent(base_url="https://tenant.example/scim/v2", client_id="svc", access=str(path))
    assert live.definitions().resources["roster"].access_path() == path
    without = ScimProvisioningComponent(base_url="https://tenant.example/scim/v2", client_id="svc")
    assert without.definitions().resources["roster"].access_path() is None
    demo = ScimProvisioningComponent().definitions().resources["roster"].access_path()
    assert demo is not None
    assert demo.name == "access.yaml"


@pytest.fixture
def storming_emulator() -> Iterator[EmulatorServer]:
    """A tenant answering 503 to every permission add, and normally to everything else."""
    config = EmulatorConfig(
        clients={CLIENT_ID: CLIENT_SECRET},
        page_size_cap=5,
        unavailable_rate=1.0,
        fault_scope=("POST ContainerPermissions",),
    )
    with EmulatorServer(config) as server:
        yield server


def test_a_503_storm_on_permission_adds_opens_the_runs_circuit_breaker(
    storming_emulator: EmulatorServer,
    roster: Roster,
    instance: DagsterInstance,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    users = [u["user_name"] for u in roster.users]
    path = tmp_path / "access.yaml"
    folders = ("Vault", "Reports", "Payroll", "Backups")
    write_access(
        path,
        {"containers": [{"name": n, "permissions": [{"user": u, "rights": ["View"]} for u in users]} for n in folders]},
    )
    state = tmp_path / "state.sqlite"
    pipeline = Pipeline(
        {
            "SCIM_BASE_URL": storming_emulator.base_url,
            "SCIM_TOKEN_URL": storming_emulator.token_url,
            "SCIM_CLIENT_ID": CLIENT_ID,
            "SCIM_CLIENT_SECRET": CLIENT_SECRET,
            "SCIM_ROSTER": str(roster.folder),
            "SCIM_STATE_URL": f"sqlite:///{state}",
            "SCIM_SHARDS": str(SHARDS),
            "SCIM_ACCESS": str(path),
            "SCIM_MAX_ATTEMPTS": "1",
        },
        instance,
        monkeypatch,
    )

    result = pipeline.sync()

    assert not result.success
    outcome = outcome_of(pipeline, result)
    assert outcome.circuit_message is not None
    assert "circuit open" in outcome.circuit_message
    assert outcome.counts["user_creates"] == len(users)  # the users' calls went through, and counted
    failed = [f for f in outcome.failures if f.resource_type == "ContainerPermissions"]
    assert failed
    assert {f.status for f in failed} == {503}
    adds = [
        r
        for r in storming_emulator.emulator.requests
        if (r.method, r.resource_type) == ("POST", "ContainerPermissions")
    ]
    assert len(adds) < len(users) * len(folders), "the breaker stops the adds not sent yet"
    with ProvisioningState.open(state) as store:
        audit = store.audit(result.run_id)
    pam = audit[audit["resource_type"].eq("ContainerPermissions")]
    assert len(pam) == len(adds)
    assert set(pam["outcome"]) == {"failed"}
    assert set(pam["http_status"]) == {503}
