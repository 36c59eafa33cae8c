"""Health checks computed from real state: the sync against the emulator over loopback, the state store, the audit
trail and Dagster's event log — a sync overdue by two periods fails its freshness check, failing changes older than
SCIM_ESCROW_MAX_AGE fail escrow_age, a cycle whose calls fail fails failure_share, a refused token fails
token_obtained."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from dagster import AssetCheckEvaluation, AssetKey, ExecuteInProcessResult
from dagster._core.test_utils import freeze_time

from scim_pipeline.assets.health import HEALTH_JOB, metadata_for_whom, schedule_period
from scim_pipeline.emulator import EmulatorConfig, EmulatorServer
from tests.assets.conftest import CLIENT_ID, CLIENT_SECRET, Pipeline


def evaluations(result: ExecuteInProcessResult) -> dict[tuple[str, str], AssetCheckEvaluation]:
    """The run's check evaluations by (asset, check name)."""
    found: dict[tuple[str, str], AssetCheckEvaluation] = {}
    for event in result.all_events:
        data = event.event_specific_data
        if isinstance(data, AssetCheckEvaluation):
            found[(data.asset_key.to_user_string(), data.check_name)] = data
    return found


def health(pipeline: Pipeline) -> ExecuteInProcessResult:
    return pipeline.definitions().resolve_job_def(HEALTH_JOB).execute_in_process(instance=pipeline.instance)


def test_a_healthy_sync_passes_every_health_check(pipeline: Pipeline) -> None:
    result = pipeline.sync()

    assert result.success
    checks = evaluations(result)
    token = checks[("provisioning_audit", "token_obtained")]
    assert token.passed
    assert "token was obtained" in (token.description or "")
    share = checks[("provisioning_audit", "failure_share")]
    assert share.passed
    assert share.metadata["failed"].value == 0
    assert share.metadata["calls"].value > 0
    # The escrow and freshness checks belong to the health job (they read state, not the target), not the sync's.
    assert ("provisioning_audit", "escrow_age") not in checks
    between = evaluations(health(pipeline))
    assert between[("provisioning_audit", "escrow_age")].passed
    for asset in ("user_provisioning", "group_provisioning", "membership_provisioning", "provisioning_audit"):
        assert between[(asset, "freshness_check")].passed, asset


def test_a_sync_overdue_by_two_periods_fails_its_freshness_checks(pipeline: Pipeline) -> None:
    assert pipeline.sync().success
    assert schedule_period("0 * * * *") == timedelta(hours=1)

    soon = health(pipeline)
    with freeze_time(datetime.now(UTC) + timedelta(hours=2, minutes=5)):
        overdue = health(pipeline)

    assert all(evaluation.passed for evaluation in evaluations(soon).values())
    late = evaluations(overdue)
    for asset in ("user_provisioning", "group_provisioning", "membership_provisioning", "provisioning_audit"):
        assert not late[(asset, "freshness_check")].passed, asset
        assert "overdue" in (late[(asset, "freshness_check")].description or "").lower()
    # The Dagster freshness policy on the same assets says the same: two hours of the hourly schedule.
    policy = pipeline.definitions().resolve_asset_graph().get(AssetKey("user_provisioning")).freshness_policy
    assert policy is not None
    assert policy.fail_window.to_timedelta() == timedelta(hours=2)


@pytest.fixture
def failing_user_creates() -> Iterator[EmulatorServer]:
    """A target that answers 500 to every user create (groups and memberships go through)."""
    config = EmulatorConfig(
        clients={CLIENT_ID: CLIENT_SECRET}, page_size_cap=5, fault_rate=1.0, fault_scope=("POST Users",)
    )
    with EmulatorServer(config) as server:
        yield server


def against(pipeline: Pipeline, server: EmulatorServer, **env: str) -> Pipeline:
    pipeline.env.update(
        {"SCIM_BASE_URL": server.base_url, "SCIM_TOKEN_URL": server.token_url, "SCIM_MAX_ATTEMPTS": "1", **env}
    )
    return pipeline


def test_failed_creates_fail_the_failure_share_and_then_the_escrow_age(
    pipeline: Pipeline, failing_user_creates: EmulatorServer
) -> None:
    against(pipeline, failing_user_creates, SCIM_ESCROW_MAX_AGE="0.0003")  # about one second

    result = pipeline.sync()

    assert not result.success  # the changes failed; the run says so
    checks = evaluations(result)
    share = checks[("provisioning_audit", "failure_share")]
    assert not share.passed
    assert share.metadata["failed"].value == 12
    whom = metadata_for_whom(share.metadata)
    assert any("user000@example.com" in line for line in whom)
    assert all(line.startswith("Users") for line in whom)
    assert "over the limit of 5.0%" in (share.description or "")

    time.sleep(1.5)
    escrow = evaluations(health(pipeline))[("provisioning_audit", "escrow_age")]

    assert not escrow.passed
    assert escrow.metadata["over_age"].value == 12
    whom = metadata_for_whom(escrow.metadata)
    assert len(whom) == 12
    assert any("Users user000@example.com failing for" in line for line in whom)  # oldest first: any order of 12


def test_the_escrow_age_passes_while_failing_changes_are_younger_than_the_limit(
    pipeline: Pipeline, failing_user_creates: EmulatorServer
) -> None:
    against(pipeline, failing_user_creates)  # default: 24 h
    pipeline.sync()

    escrow = evaluations(health(pipeline))[("provisioning_audit", "escrow_age")]

    assert escrow.passed
    assert escrow.metadata["failing_changes"].value == 12
    assert escrow.metadata["over_age"].value == 0


def test_a_refused_token_fails_the_token_check_without_the_secret(pipeline: Pipeline) -> None:
    wrong = "not-the-secret-4711-abcdef"
    pipeline.env["SCIM_CLIENT_SECRET"] = wrong

    result = pipeline.sync()

    assert not result.success
    token = evaluations(result)[("provisioning_audit", "token_obtained")]
    assert not token.passed
    description = token.description or ""
    assert description.startswith("no token: the token endpoint refused the credentials")
    assert "SCIM_CLIENT_SECRET" in description or "SCIM_CLIENT_ID" in description
    everything: Any = [description, *(str(value) for value in token.metadata.values())]
    assert all(wrong not in text for text in everything)


def test_health_settings_are_bounded_and_named() -> None:
    from scim_pipeline.scim.errors import ConfigurationError
    from scim_pipeline.settings import PipelineSettings

    settings = PipelineSettings.from_env({"SCIM_ESCROW_MAX_AGE": "6", "SCIM_MAX_FAILURE_SHARE": "0.2"})
    assert (settings.escrow_max_age, settings.max_failure_share, settings.overdue_periods) == (6.0, 0.2, 2.0)
    with pytest.raises(ConfigurationError, match="SCIM_MAX_FAILURE_SHARE"):
        PipelineSettings.from_env({"SCIM_MAX_FAILURE_SHARE": "1.5"})
    with pytest.raises(ConfigurationError, match="SCIM_ESCROW_MAX_AGE"):
        PipelineSettings.from_env({"SCIM_ESCROW_MAX_AGE": "0"})
