from pathlib import Path

import pandas as pd
from dagster import AssetKey, PartitionKeyRange, build_input_context, build_output_context

from scim_pipeline.assets.partitions import shard_partitions
from scim_pipeline.resources.frames import ShardedParquetIOManager


def test_a_range_output_is_split_per_shard_and_read_back_per_shard(tmp_path: Path) -> None:
    manager = ShardedParquetIOManager(base_dir=str(tmp_path))
    partitions = shard_partitions(4)
    frame = pd.DataFrame({"key": ["a", "b", "c", "d"], "shard": [0, 1, 1, 3]})
    out = build_output_context(
        asset_key=AssetKey("user_changes"),
        asset_partitions_def=partitions,
        asset_partition_key_range=PartitionKeyRange("000", "003"),
    )
    manager.handle_output(out, frame)
    assert sorted(path.name for path in (tmp_path / "user_changes").iterdir()) == [
        "000.parquet",
        "001.parquet",
        "002.parquet",
        "003.parquet",
    ]
    one = build_input_context(asset_key=AssetKey("user_changes"), asset_partitions_def=partitions, partition_key="001")
    assert manager.load_input(one)["key"].tolist() == ["b", "c"]


def test_an_unpartitioned_frame_round_trips(tmp_path: Path) -> None:
    manager = ShardedParquetIOManager(base_dir=str(tmp_path))
    frame = pd.DataFrame({"key": ["x"], "row": [1]})
    manager.handle_output(build_output_context(asset_key=AssetKey("idp_groups")), frame)
    loaded = manager.load_input(build_input_context(asset_key=AssetKey("idp_groups")))
    pd.testing.assert_frame_equal(loaded, frame)


def test_a_frame_read_twice_is_read_once_as_independent_copies_until_rewritten(tmp_path: Path) -> None:
    manager = ShardedParquetIOManager(base_dir=str(tmp_path))
    manager.handle_output(build_output_context(asset_key=AssetKey("idp_users")), pd.DataFrame({"key": ["a", "b"]}))
    first = manager.load_input(build_input_context(asset_key=AssetKey("idp_users")))
    first.loc[0, "key"] = "edited by one step"
    first["added"] = 1

    second = manager.load_input(build_input_context(asset_key=AssetKey("idp_users")))
    assert second.to_dict("list") == {"key": ["a", "b"]}

    manager.handle_output(build_output_context(asset_key=AssetKey("idp_users")), pd.DataFrame({"key": ["c"]}))
    assert manager.load_input(build_input_context(asset_key=AssetKey("idp_users")))["key"].tolist() == ["c"]
