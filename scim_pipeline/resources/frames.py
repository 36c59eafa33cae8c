"""An IO manager that keeps DataFrame assets as Parquet files, one file per shard partition.

Dagster's default pickling IO manager cannot store one output that covers several partitions, which is what a run
over a range of shards produces. This one splits such a frame by its `shard` column on the way out and concatenates
the requested shards on the way in, so a run over all shards and a backfill shard by shard read and write the same
files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd
from dagster import ConfigurableIOManager, InputContext, OutputContext
from pydantic import Field, PrivateAttr

from scim_pipeline.resources.home import pipeline_home

SHARD_COLUMN = "shard"


class ShardedParquetIOManager(ConfigurableIOManager):
    """Stores DataFrame outputs as `<base>/<asset>/<partition>.parquet` (or `<asset>.parquet` unpartitioned)."""

    base_dir: str | None = Field(
        default=None,
        description="Folder for the Parquet files; defaults to <DAGSTER_HOME>/scim_pipeline/frames.",
    )

    # The roster frames (idp_users, idp_groups, idp_memberships, roster_rejections) are inputs of two or three steps
    # of the same run; decoding idp_users again for each is the largest share of a cycle's Parquet reads. What was
    # read is kept for the run (one IO manager per run) and handed out as a copy, so no step sees another's edits;
    # a copy shares the Arrow string buffers, so the cache costs no second copy of the data.
    _unpartitioned_reads: dict[Path, tuple[tuple[int, int, int], pd.DataFrame]] = PrivateAttr(default_factory=dict)

    def _root(self, context: InputContext | OutputContext) -> Path:
        if self.base_dir:
            return Path(self.base_dir)
        return pipeline_home(_instance_of(context)) / "frames"

    def _asset_dir(self, context: InputContext | OutputContext) -> Path:
        return self._root(context).joinpath(*context.asset_key.path)

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        if obj is None:
            return
        if not isinstance(obj, pd.DataFrame):
            raise TypeError(f"{context.asset_key.to_user_string()}: expected a DataFrame, got {type(obj).__name__}")
        folder = self._asset_dir(context)
        folder.mkdir(parents=True, exist_ok=True)
        if not context.has_asset_partitions:
            _write_atomically(obj, folder.with_suffix(".parquet"))
            return
        keys = list(context.asset_partition_keys)
        if len(keys) == 1 and SHARD_COLUMN not in obj.columns:
            _write_atomically(obj, folder / f"{keys[0]}.parquet")
            return
        if SHARD_COLUMN not in obj.columns:
            raise ValueError(
                f"{context.asset_key.to_user_string()}: an output covering several shards needs a "
                f"'{SHARD_COLUMN}' column to be split by"
            )
        shard_labels = obj[SHARD_COLUMN].map(shard_partition_key)
        for key in keys:
            _write_atomically(obj[shard_labels == key].reset_index(drop=True), folder / f"{key}.parquet")

    def load_input(self, context: InputContext) -> pd.DataFrame:
        folder = self._asset_dir(context)
        if not context.has_asset_partitions:
            return self._read_unpartitioned(folder.with_suffix(".parquet"))
        frames = []
        for key in context.asset_partition_keys:
            path = folder / f"{key}.parquet"
            if not path.exists():
                raise FileNotFoundError(
                    f"{context.asset_key.to_user_string()} has not been materialized for shard {key} yet"
                )
            frames.append(pd.read_parquet(path))
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def _read_unpartitioned(self, path: Path) -> pd.DataFrame:
        stat = path.stat()
        # A rewrite replaces the file (write-then-rename): a new inode, so an output written since is never missed.
        version = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        cached = self._unpartitioned_reads.get(path)
        if cached is None or cached[0] != version:
            cached = (version, pd.read_parquet(path))
            self._unpartitioned_reads[path] = cached
        return cached[1].copy()


def _instance_of(context: InputContext | OutputContext) -> Any:
    try:
        return context.instance if isinstance(context, InputContext) else context.step_context.instance
    except Exception:  # a context built by hand in a test has neither
        return None


def shard_partition_key(shard: int) -> str:
    """The partition key of a shard number: zero-padded so the UI sorts shards naturally."""
    return f"{int(shard):03d}"


def _write_atomically(frame: pd.DataFrame, path: Path) -> None:
    # Write-then-rename: a run killed mid-write never leaves a truncated file for the next run to read.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)
