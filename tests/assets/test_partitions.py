from scim_pipeline.assets.partitions import (
    contiguous_ranges,
    range_tags,
    shard_partitions,
    shards_of,
)


def test_partition_keys_sort_naturally_in_the_ui() -> None:
    keys = shard_partitions(16).get_partition_keys()
    assert keys[:3] == ["000", "001", "002"]
    assert keys == sorted(keys)
    assert len(keys) == 16


def test_non_contiguous_shards_become_one_run_per_range() -> None:
    assert contiguous_ranges([5, 1, 2, 3, 9, 2]) == [(1, 3), (5, 5), (9, 9)]


def test_range_tags_name_the_first_and_last_shard() -> None:
    assert range_tags(0, 15) == {
        "dagster/asset_partition_range_start": "000",
        "dagster/asset_partition_range_end": "015",
    }


def test_partition_keys_map_back_to_shard_numbers() -> None:
    assert shards_of(["010", "002"]) == [2, 10]
