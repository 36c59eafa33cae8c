"""deploy/: the production instance configuration opens on a real PostgreSQL server with the queue, the pools and
the retries it documents, and the shell recipe refuses to start without its environment."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import DagsterInstance

from tests.postgres import PostgresServer

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


@pytest.fixture
def production_instance(
    tmp_path: Path, postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[DagsterInstance]:
    database = postgres_server.create_database()
    for name, value in {
        "DAGSTER_PG_HOST": postgres_server.host,
        "DAGSTER_PG_PORT": str(postgres_server.port),
        "DAGSTER_PG_USERNAME": postgres_server.user,
        "DAGSTER_PG_PASSWORD": "not-needed-on-a-trust-cluster",
        "DAGSTER_PG_DB": database,
    }.items():
        monkeypatch.setenv(name, value)
    shutil.copy(DEPLOY / "dagster.yaml", tmp_path / "dagster.yaml")
    try:
        with DagsterInstance.from_config(str(tmp_path)) as instance:
            yield instance
    finally:
        postgres_server.drop_database(database)


def test_the_production_instance_keeps_runs_events_and_schedules_on_postgresql(
    production_instance: DagsterInstance,
) -> None:
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    assert isinstance(production_instance.run_storage, PostgresRunStorage)
    assert isinstance(production_instance.event_log_storage, PostgresEventLogStorage)
    assert isinstance(production_instance.schedule_storage, PostgresScheduleStorage)
    assert production_instance.get_runs(limit=1) == []


def test_the_production_instance_queues_runs_with_a_limit_per_backfill_and_per_target_pool(
    production_instance: DagsterInstance,
) -> None:
    from dagster._core.run_coordinator import QueuedRunCoordinator

    assert isinstance(production_instance.run_coordinator, QueuedRunCoordinator)
    queue = production_instance.get_concurrency_config().run_queue_config
    assert queue is not None
    assert queue.max_concurrent_runs == 8
    assert [limit["key"] for limit in queue.tag_concurrency_limits] == ["dagster/backfill"]
    assert queue.tag_concurrency_limits[0]["value"] == {"applyLimitPerUniqueValue": True}
    pools = production_instance.get_concurrency_config().pool_config
    assert pools.default_pool_limit == 1
    # Every SCIM target's pool gets the default limit on first use.
    for pool in ("scim_target", "scim_target_hr"):
        production_instance.event_log_storage.initialize_concurrency_limit_to_default(pool)
        assert production_instance.event_log_storage.get_concurrency_info(pool).slot_count == 1


def test_the_production_instance_retries_crashed_runs_but_not_failed_ones(
    production_instance: DagsterInstance,
) -> None:
    assert production_instance.run_retries_enabled
    assert production_instance.run_retries_max_retries == 2
    assert production_instance.run_retries_retry_on_asset_or_op_failure is False
    assert production_instance.run_monitoring_enabled


def test_the_shell_recipe_names_the_variable_it_misses() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_PG_")}
    result = subprocess.run(
        ["bash", str(DEPLOY / "run-local-production.sh")],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "DAGSTER_PG_HOST is not set" in result.stderr


def test_no_secret_value_is_written_in_the_deploy_files() -> None:
    text = (DEPLOY / "dagster.yaml").read_text(encoding="utf-8")
    assert "password: {env: DAGSTER_PG_PASSWORD}" in text
    for path in DEPLOY.iterdir():
        assert "SCIM_CLIENT_SECRET=" not in path.read_text(encoding="utf-8").replace("SCIM_CLIENT_SECRET=...", "")
