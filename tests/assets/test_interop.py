"""Targets that store less than we send, or refuse a PATCH form, through the Dagster sync job."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from scim_pipeline.assets.jobs import cycle_run_config
from scim_pipeline.emulator import EmulatorConfig, EmulatorServer
from tests.assets.conftest import CLIENT_ID, CLIENT_SECRET, Pipeline, Roster, Target

RECONCILE = cycle_run_config("scim_cycle", reconcile=True)
DEPARTMENT = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    config = EmulatorConfig(
        clients={CLIENT_ID: CLIENT_SECRET},
        page_size_cap=5,
        drop_attributes=("title", DEPARTMENT),
        refuse_attribute_path_patch=True,
    )
    with EmulatorServer(config) as server:
        yield server


def drift_check(result) -> bool:  # type: ignore[no-untyped-def]
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "target_matches_managed_state"]
    return bool(evaluation.passed)


def test_attributes_the_target_drops_are_not_drift_and_are_not_rewritten(
    pipeline: Pipeline, roster: Roster, target: Target
) -> None:
    assert pipeline.sync().success
    assert "title" not in target.users_by_name()["user000@example.com"]

    reconciled = pipeline.sync(run_config=RECONCILE)

    assert reconciled.success
    assert drift_check(reconciled)
    target.clear_requests()
    again = pipeline.sync(run_config=RECONCILE)
    assert again.success
    assert target.writes() == []


def test_a_refused_attribute_patch_falls_back_and_the_change_lands(
    pipeline: Pipeline, roster: Roster, target: Target
) -> None:
    assert pipeline.sync().success
    roster.users[0]["family_name"] = "Renamed"
    roster.write()

    result = pipeline.sync()

    assert result.success
    assert target.users_by_name()["user000@example.com"]["name"]["familyName"] == "Renamed"
    target.clear_requests()
    assert pipeline.sync().success
    assert target.writes() == []
