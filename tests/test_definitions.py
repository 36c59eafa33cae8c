"""The code location as `dagster dev` loads it: assets, checks, partitions, jobs and schedules."""

from __future__ import annotations

import pytest
from dagster import AssetKey, Definitions

from scim_pipeline.definitions import build_definitions
from scim_pipeline.scim import ConfigurationError

ASSETS = {
    "roster_files",
    "idp_users",
    "idp_groups",
    "idp_memberships",
    "roster_rejections",
    "desired_access",
    "user_changes",
    "group_changes",
    "membership_changes",
    "user_provisioning",
    "group_provisioning",
    "membership_provisioning",
    "access_file",
    "container_changes",
    "permission_changes",
    "privileged_data_changes",
    "container_provisioning",
    "permission_provisioning",
    "privileged_data_provisioning",
    "access_snapshot",
    "provisioning_audit",
}


def asset_graph(defs: Definitions):  # type: ignore[no-untyped-def]
    return defs.resolve_asset_graph()


def test_the_default_location_is_demo_mode_with_every_asset_check_and_schedule() -> None:
    defs = build_definitions({})
    graph = asset_graph(defs)

    assert {key.to_user_string() for key in graph.get_all_asset_keys()} == ASSETS
    checks = {(key.asset_key.to_user_string(), key.name) for key in graph.asset_check_keys}
    assert {
        ("user_changes", "deletion_threshold"),
        ("user_changes", "empty_roster"),
        ("user_changes", "shrunken_roster"),
        ("user_changes", "mass_update"),
        ("membership_changes", "membership_removals"),
        ("group_changes", "group_removals"),
        ("provisioning_audit", "target_matches_managed_state"),
        ("permission_changes", "permission_removals"),
        ("access_snapshot", "access_matches_file"),
    } <= checks
    assert {schedule.name for schedule in defs.schedules or []} == {
        "scim_sync_schedule",
        "scim_reconcile_schedule",
        "scim_health_schedule",
    }
    assert defs.resolve_job_def("scim_sync").description.startswith("[DEMO MODE")


PER_IDENTITY = {
    "idp_users",
    "idp_memberships",
    "user_changes",
    "membership_changes",
    "user_provisioning",
    "membership_provisioning",
}


def test_only_what_is_per_identity_is_partitioned_by_shard() -> None:
    graph = asset_graph(build_definitions({"SCIM_SHARDS": "8"}))

    partitions = graph.get(AssetKey("user_changes")).partitions_def
    assert partitions is not None
    assert partitions.get_partition_keys() == [f"{shard:03d}" for shard in range(8)]
    for key in graph.get_all_asset_keys():
        expected = partitions if key.to_user_string() in PER_IDENTITY else None
        assert graph.get(key).partitions_def == expected, key.to_user_string()
    # A backfill over every shard is one run (the whole cycle in one step).
    policy = graph.get(AssetKey("user_provisioning")).backfill_policy
    assert policy is not None
    assert policy.max_partitions_per_run is None


def test_lineage_reads_roster_to_changes_to_provisioning_to_audit() -> None:
    graph = asset_graph(build_definitions({}))

    def parents(name: str) -> set[str]:
        return {key.to_user_string() for key in graph.get(AssetKey(name)).parent_keys}

    assert "roster_files" in parents("idp_users")
    assert "idp_users" in parents("user_changes")
    assert "user_changes" in parents("user_provisioning")
    assert "idp_memberships" in parents("membership_changes")
    assert "membership_changes" in parents("membership_provisioning")
    assert {"group_provisioning", "permission_provisioning"} <= parents("provisioning_audit")


def test_no_edge_crosses_between_per_identity_and_unpartitioned_assets() -> None:
    """Dagster could not run such an asset without a partition (the Launchpad, `dagster job execute`), and an asset
    backfill would split a shard's change set from its provisioning while it waits for an unpartitioned parent."""
    graph = asset_graph(build_definitions({}))
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        crossing = [
            parent.to_user_string()
            for parent in node.parent_keys
            if parent.to_user_string() not in ("roster_files", "access_file")
            and (graph.get(parent).partitions_def is None) != (node.partitions_def is None)
        ]
        assert crossing == [], key.to_user_string()


def test_lineage_reads_roster_to_groups_to_container_permissions() -> None:
    graph = asset_graph(build_definitions({}))

    def parents(name: str) -> set[str]:
        return {key.to_user_string() for key in graph.get(AssetKey(name)).parent_keys}

    assert {"access_file", "idp_groups"} <= parents("desired_access")
    assert {"desired_access", "container_changes", "group_changes"} <= parents("permission_changes")
    assert {"permission_changes", "container_provisioning"} <= parents("permission_provisioning")
    assert {"permission_provisioning", "privileged_data_provisioning"} <= parents("access_snapshot")
    assert build_definitions({}).resolve_job_def("scim_permission_sync") is not None


def test_provisioning_assets_share_the_target_pool() -> None:
    graph = asset_graph(build_definitions({}))

    for name in ("user_provisioning", "group_provisioning", "membership_provisioning"):
        assert graph.get(AssetKey(name)).pools == {"scim_target"}


@pytest.mark.parametrize(
    ("variable", "value"),
    [("SCIM_SHARDS", "many"), ("SCIM_SHARDS", "0"), ("SCIM_DEPROVISION", "erase"), ("SCIM_MAX_DELETES", "-1")],
)
def test_a_bad_setting_is_named_in_the_error(variable: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match=variable):
        build_definitions({variable: value})
