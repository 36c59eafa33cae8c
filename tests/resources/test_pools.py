"""`scim-pipeline pools`: every pool of the code location gets the instance's default limit before a daemon first
dequeues its runs (Dagster's first pass over a pool it does not know yet blocks none of them)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import DagsterInstance

from scim_pipeline.resources.pools import PoolLimit, code_location_pools, initialize_pool_limits


def _instance(home: Path, pools_config: str) -> DagsterInstance:
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(f"telemetry:\n  enabled: false\nconcurrency:\n{pools_config}", encoding="utf-8")
    return DagsterInstance.from_config(str(home))


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[DagsterInstance]:
    with _instance(tmp_path / "home", "  pools:\n    default_limit: 1\n    granularity: run\n") as instance:
        yield instance


def test_the_code_locations_pool_is_the_targets() -> None:
    assert code_location_pools() == ["scim_target"]


def test_an_unknown_pool_gets_the_default_limit_and_a_set_one_keeps_its_own(limited: DagsterInstance) -> None:
    assert limited.event_log_storage.get_concurrency_keys() == set()  # what the daemon's first pass reads
    limited.event_log_storage.set_concurrency_slots("scim_target_hr", 3)

    rows = initialize_pool_limits(limited, ["scim_target", "scim_target_hr"])

    assert rows == [PoolLimit("scim_target", 1, set_now=True), PoolLimit("scim_target_hr", 3, set_now=False)]
    assert limited.event_log_storage.get_concurrency_keys() == {"scim_target", "scim_target_hr"}
    again = initialize_pool_limits(limited, ["scim_target"])
    assert again == [PoolLimit("scim_target", 1, set_now=False)]


def test_without_a_default_limit_the_pool_is_reported_unbounded(tmp_path: Path) -> None:
    with _instance(tmp_path / "home", "  runs:\n    max_concurrent_runs: 4\n") as instance:
        assert initialize_pool_limits(instance, ["scim_target"]) == [PoolLimit("scim_target", None, set_now=False)]
        assert instance.event_log_storage.get_concurrency_keys() == set()
