"""The sync job under Dagster's multiprocess executor: every step in its own process, nothing shared in memory."""

from pathlib import Path

import pytest
from dagster import DagsterInstance, execute_job, reconstructable

from scim_pipeline.assets.partitions import range_tags
from tests.assets.conftest import SHARDS, Pipeline, Roster, Target
from tests.assets.reconstructable_sync import sync_job


@pytest.mark.slow
def test_the_multiprocess_executor_converges_with_no_shared_memory(
    pipeline: Pipeline, roster: Roster, target: Target, tmp_path: Path
) -> None:
    pipeline.definitions()  # exports the SCIM_* settings to the environment the step processes inherit
    home = tmp_path / "persistent_home"
    home.mkdir()
    with DagsterInstance.local_temp(str(home)) as instance:
        result = execute_job(
            reconstructable(sync_job),
            instance=instance,
            tags=range_tags(0, SHARDS - 1),
            run_config={"execution": {"config": {"max_concurrent": 2}}},
        )
        assert result.success

    # The step ran in its own process: nothing but the state store and the target carried state.
    assert set(target.users_by_name()) == {user["user_name"] for user in roster.users}
    members = target.members_by_group()
    assert members["Vault Admins"] == {roster.users[i]["user_name"] for i in range(3)}
    target.clear_requests()
    assert pipeline.sync().success
    assert target.writes() == []
