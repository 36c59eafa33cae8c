"""Shard partitions: users are split by a stable hash of their matching key."""

from __future__ import annotations

from collections.abc import Sequence

from dagster import StaticPartitionsDefinition

SHARD_RANGE_START_TAG = "dagster/asset_partition_range_start"
SHARD_RANGE_END_TAG = "dagster/asset_partition_range_end"


def shard_partition_key(shard: int) -> str:
    """The partition key of a shard number: zero-padded so the UI sorts shards naturally."""
    return f"{int(shard):03d}"


def shard_partitions(shards: int) -> StaticPartitionsDefinition:
    """One static partition per shard, keyed `000`, `001`, … so the UI sorts them naturally."""
    return StaticPartitionsDefinition([shard_partition_key(shard) for shard in range(shards)])


def shards_of(partition_keys: Sequence[str]) -> list[int]:
    """The shard numbers of a run's partition keys."""
    return sorted(int(key) for key in partition_keys)


def contiguous_ranges(shards: Sequence[int]) -> list[tuple[int, int]]:
    """Group shard numbers into contiguous (first, last) ranges: one Dagster run covers one range."""
    ranges: list[tuple[int, int]] = []
    for shard in sorted(set(shards)):
        if ranges and shard == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], shard)
        else:
            ranges.append((shard, shard))
    return ranges


def range_tags(first: int, last: int) -> dict[str, str]:
    """Run tags that make one run cover shards first..last."""
    return {
        SHARD_RANGE_START_TAG: shard_partition_key(first),
        SHARD_RANGE_END_TAG: shard_partition_key(last),
    }
