"""The PAM part of a state batch: containers, permissions and placements we manage are written in the batch's one
transaction, with the users' escrow — a failure counted (and held after enough of them), a success clearing it, and a
failure of something not on the target yet never mistaken for something we manage.

Every test runs on SQLite and on a real PostgreSQL server (tests/postgres.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scim_pipeline.sync.pam.managed import ManagedPam, ManagedPermission
from scim_pipeline.sync.state import EscrowPolicy, ProvisioningState, StateBatch
from scim_pipeline.sync.state.batch import PermissionRecord
from scim_pipeline.sync.state.pam_tables import permission_slot_key

TWICE = EscrowPolicy(after_failures=2, base_delay_s=3600.0)
AUDITORS = PermissionRecord("c1", "group", "auditors", "Auditors", "g2", ("View",), "p1")


@pytest.fixture(params=["sqlite", "postgresql"])
def state(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ProvisioningState]:
    url = (
        f"sqlite:///{tmp_path / 'state.sqlite'}"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    with ProvisioningState.open(url) as store:
        yield store


def apply(state: ProvisioningState, fill: str, *args: object, **kwargs: object) -> None:
    batch = StateBatch()
    getattr(batch, fill)(*args, **kwargs)
    state.apply(batch, escrow=TWICE)


def test_a_container_failing_its_create_is_held_after_repeated_failures_and_never_managed_until_created(
    state: ProvisioningState,
) -> None:
    apply(state, "fail_container", "Staging", error="HTTP 503: Secret Server is unreachable")
    assert state.held("Containers") == {}
    apply(state, "fail_container", "Staging", error="HTTP 503: Secret Server is unreachable")
    held = state.held("Containers")
    assert list(held) == ["staging"]
    assert (held["staging"].key, held["staging"].fail_count) == ("Staging", 2)
    assert held["staging"].last_error == "HTTP 503: Secret Server is unreachable"
    assert held["staging"].next_attempt_at > time.time() + 3000
    assert ManagedPam.load(state).containers == {}

    apply(state, "upsert_container", "Staging", scim_id="c2", origin="created")
    assert state.held("Containers") == {}
    assert ManagedPam.load(state).containers == {"staging": ("Staging", "c2")}


def test_a_permission_we_manage_keeps_its_record_while_its_delete_fails_and_is_forgotten_once_deleted(
    state: ProvisioningState,
) -> None:
    apply(state, "upsert_permission", AUDITORS)
    for _ in range(2):
        apply(state, "fail_permission", AUDITORS, error="HTTP 500")
    slot = permission_slot_key("c1", "group", "auditors")
    assert list(state.held("ContainerPermissions")) == [slot]
    assert state.held("ContainerPermissions")[slot].key == "group Auditors"
    managed = ManagedPam.load(state).permissions
    assert managed == [ManagedPermission("c1", "group", "auditors", "Auditors", "g2", frozenset({"View"}), "p1")]

    apply(state, "forget_permission", "c1", "group", "auditors")
    assert ManagedPam.load(state).permissions == []
    assert state.held("ContainerPermissions") == {}


def test_a_failed_add_counts_for_its_slot_without_becoming_a_permission_we_manage(state: ProvisioningState) -> None:
    adding = PermissionRecord("c1", "user", "cyd", "cyd", "u3", ("Add Secret", "View"), None)
    for _ in range(2):
        apply(state, "fail_permission", adding, error="HTTP 503")
    assert list(state.held("ContainerPermissions")) == [permission_slot_key("c1", "user", "cyd")]
    assert ManagedPam.load(state).permissions == []

    apply(state, "upsert_permission", PermissionRecord("c1", "user", "cyd", "cyd", "u3", ("Add Secret", "View"), "p7"))
    assert state.held("ContainerPermissions") == {}
    assert [p.scim_id for p in ManagedPam.load(state).permissions] == ["p7"]


def test_placements_are_recorded_counted_and_forgotten_like_the_other_kinds(state: ProvisioningState) -> None:
    for _ in range(2):
        apply(state, "fail_placement", "d1", data_key="prod-db-root", error="HTTP 503")
    assert state.held("PrivilegedData")["d1"].key == "prod-db-root"
    assert ManagedPam.load(state).placements == {}

    batch = StateBatch()
    batch.upsert_placement("d1", data_key="prod-db-root", container_id="c1")
    batch.upsert_container("Production", scim_id="c1", origin="adopted")
    state.apply(batch)
    managed = ManagedPam.load(state)
    assert (managed.placements, managed.containers) == (
        {"d1": ("prod-db-root", "c1")},
        {"production": ("Production", "c1")},
    )
    assert state.held("PrivilegedData") == {}

    apply(state, "forget_placement", "d1")
    assert ManagedPam.load(state).placements == {}
