"""The PAM planner: from the access file, what we manage and what the cycle read, one pandas change frame per kind
within Delinea's rules — created and found by name, never edited in place, drift reported, never attempted."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from scim_pipeline.sync.pam import (
    PLACEHOLDER_ID,
    ManagedPam,
    ManagedPermission,
    TargetAccess,
    TargetContainer,
    plan_access,
)
from scim_pipeline.sync.pam.plan import CONTAINER_COLUMNS, PERMISSION_COLUMNS, PLACEMENT_COLUMNS
from tests.sync.pam.conftest import BASE, access


def ops(frame: pd.DataFrame, *columns: str) -> list[tuple[object, ...]]:
    """The rows of a change frame as tuples of the given columns, ``rights`` decoded."""
    rows = []
    for values in frame[list(columns)].itertuples(index=False):
        rows.append(
            tuple(
                json.loads(v) if name == "rights" else (None if pd.isna(v) else v)
                for name, v in zip(columns, values, strict=True)
            )
        )
    return rows


def test_a_new_container_is_created_with_every_permission_of_the_file() -> None:
    file = access(*BASE)
    target = TargetAccess(containers={"production": None, "staging": None})
    ids = {("group", "vault admins"): "g1", ("group", "auditors"): "g2", ("user", "cyd"): PLACEHOLDER_ID}
    plan = plan_access(file, ManagedPam(), target, ids)
    assert ops(plan.containers, "op", "key") == [("create", "Production"), ("create", "Staging")]
    assert sorted(ops(plan.permissions, "op", "container", "principal")) == [
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
    assert ops(plan.permissions, "op", "rights", "reason") == [
        ("delete", ["View"], "rights changed"),
        ("add", ["Edit", "View"], ""),
    ]
    assert plan.permission_removals == 0
    # The add is ready to send: its body names the container, the principal and the file's rights.
    add = plan.permissions[plan.permissions["op"].eq("add")].iloc[0]
    assert json.loads(add["payload"])["rights"] == ["Edit", "View"]


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
    assert ops(plan.permissions, "op", "scim_id", "reason") == [("delete", "p1", "left the access file")]
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
    assert plan_access(file, managed, target, {("group", "auditors"): "g2"}).permissions.empty


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
    assert set(plan.permissions["container"]) == {"Staging"}
    assert list(plan.containers["key"]) == ["Staging"]


def test_a_permission_already_there_with_the_same_rights_is_adopted_without_a_call() -> None:
    file = access({"name": "Production", "permissions": [{"group": "Auditors", "rights": ["View"]}]})
    target = TargetAccess(
        containers={"production": TargetContainer("c1", "Production")},
        permissions={"c1": [{"id": "p1", "group": {"value": "g2"}, "rights": ["View"]}]},
    )
    plan = plan_access(file, ManagedPam(), target, {("group", "auditors"): "g2"})
    assert ops(plan.containers, "op", "scim_id") == [("adopt", "c1")]
    assert ops(plan.permissions, "op", "scim_id") == [("adopt", "p1")]


def test_each_kind_is_a_frame_with_its_documented_columns_and_escrow_keys() -> None:
    file = access({**BASE[0], "privileged_data": ["prod-db-root"]}, BASE[1])
    target = TargetAccess(
        containers={"production": TargetContainer("c1", "Production"), "staging": None},
        permissions={"c1": []},
        privileged_data=[{"id": "d1", "name": "prod-db-root"}],
    )
    ids = {("group", "vault admins"): "g1", ("group", "auditors"): "g2", ("user", "cyd"): PLACEHOLDER_ID}
    plan = plan_access(file, ManagedPam(), target, ids)
    assert tuple(plan.containers.columns) == CONTAINER_COLUMNS
    assert tuple(plan.permissions.columns) == PERMISSION_COLUMNS
    assert tuple(plan.placements.columns) == PLACEMENT_COLUMNS
    assert ops(plan.containers, "op", "key", "key_norm") == [
        ("adopt", "Production", "production"),
        ("create", "Staging", "staging"),
    ]
    by_key: dict[str, Any] = {str(row.key): row for row in plan.permissions.itertuples(index=False)}
    # A slot on a container already there has its escrow key; on a container created in this cycle, not yet.
    assert by_key["Production / group Auditors"].key_norm == "c1\x1fgroup\x1fauditors"
    assert pd.isna(by_key["Staging / group Auditors"].key_norm)
    # An add waits for its ids before it has a body: the container to be created, the user created in this cycle.
    assert pd.isna(by_key["Staging / group Auditors"].payload)
    assert pd.isna(by_key["Production / user cyd"].payload)
    assert json.loads(by_key["Production / group Vault Admins"].payload)["group"] == {"value": "g1"}
    assert ops(plan.placements, "op", "key", "scim_id", "key_norm", "container_id") == [
        ("attach", "prod-db-root", "d1", "d1", "c1")
    ]
    assert json.loads(plan.placements.iloc[0]["payload"]) == [
        {"op": "replace", "path": "container", "value": {"value": "c1"}}
    ]
