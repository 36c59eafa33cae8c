"""The upstream-asset example: the user's HR assets feed the roster, and a materialization provisions it."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from dagster import AssetKey, DagsterInstance

from scim_pipeline.assets.partitions import range_tags

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "upstream_asset" / "definitions.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("upstream_asset_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_materializing_the_hr_assets_and_the_sync_converges(tmp_path: Path) -> None:
    example = load_example()
    graph = example.defs.resolve_asset_graph()
    assert AssetKey("hr_users") in graph.get(AssetKey("idp_users")).parent_keys
    job = example.defs.resolve_implicit_global_asset_job_def()

    with DagsterInstance.ephemeral(tempdir=str(tmp_path)) as instance:
        first = job.execute_in_process(instance=instance, tags=range_tags(0, 1))
        second = job.execute_in_process(instance=instance, tags=range_tags(0, 1))

    assert first.success
    created = first.asset_materializations_for_node("scim_cycle")
    # One materialization per shard, each with its own shard's counts: they add up to the run.
    creates = sum(m.metadata["creates"].value for m in created if m.asset_key == AssetKey("user_changes"))
    assert creates == 27  # 30 people, 3 off payroll and never provisioned
    adds = sum(m.metadata["member_adds"].value for m in created if m.asset_key == AssetKey("membership_changes"))
    assert adds == 27
    assert second.success
    audit = next(
        m for m in second.asset_materializations_for_node("scim_cycle") if m.asset_key == AssetKey("provisioning_audit")
    )
    assert audit.metadata["calls"].value == 0
