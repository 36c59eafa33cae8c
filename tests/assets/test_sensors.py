"""The leaver sensor evaluated in-process on a real roster folder and a real Dagster instance: the first poll records
the signal, an unchanged one skips, a change launches the user sync once, a sync of the target in progress holds the
change back; the location defines it stopped unless SCIM_LEAVER_SENSOR is on, and refuses it for a source without
a signal. (The end-to-end minute through dagster-daemon is tests/deploy/test_daemon_leaver.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import (
    DagsterInstance,
    DagsterRunStatus,
    DefaultSensorStatus,
    Definitions,
    RunRequest,
    SensorDefinition,
    build_sensor_context,
)

from scim_pipeline.assets.sensors import LEAVER_SENSOR, LEAVER_TRIGGER_TAG
from scim_pipeline.definitions import build_definitions
from scim_pipeline.scim.errors import ConfigurationError
from tests.assets.conftest import Roster


def _env(roster: Roster, **extra: str) -> dict[str, str]:
    return {
        "SCIM_BASE_URL": "https://tenant.example.test/scim/v2",
        "SCIM_ROSTER": str(roster.folder),
        **extra,
    }


def _sensor(defs: Definitions, name: str = LEAVER_SENSOR) -> SensorDefinition:
    return defs.resolve_sensor_def(name)


def _evaluate(
    sensor: SensorDefinition, instance: DagsterInstance, cursor: str | None
) -> tuple[list[RunRequest], str | None, str | None]:
    """(run requests, new cursor, skip message) of one tick."""
    context = build_sensor_context(instance=instance, cursor=cursor)
    result = sensor.evaluate_tick(context)
    skip = result.skip_message
    return list(result.run_requests or []), result.cursor, skip


def _disable(roster: Roster, index: int) -> None:
    roster.users[index]["active"] = "false"
    roster.write()


def test_first_poll_records_then_a_change_launches_the_user_sync_once(
    roster: Roster, instance: DagsterInstance
) -> None:
    sensor = _sensor(build_definitions(_env(roster)))

    requests, cursor, skip = _evaluate(sensor, instance, None)
    assert requests == []
    assert cursor is not None
    assert skip is not None
    assert skip.startswith("first poll: recorded the change signal (stat of 3 roster files")

    requests, unchanged, skip = _evaluate(sensor, instance, cursor)
    assert requests == []
    assert unchanged in (None, cursor)
    assert skip is not None
    assert skip.startswith("no change (stat of 3 roster files")
    assert "0 SCIM requests" in skip

    _disable(roster, 3)
    requests, moved, skip = _evaluate(sensor, instance, cursor)
    assert skip is None
    assert moved not in (None, cursor)
    [request] = requests
    assert request.job_name in (None, "scim_user_sync")
    assert request.run_key is not None
    assert request.run_key.startswith("leaver-")
    assert request.tags[LEAVER_TRIGGER_TAG] == "leaver_sensor"

    again, _, _ = _evaluate(sensor, instance, moved)
    assert again == []


def test_a_change_waits_while_a_sync_of_the_target_is_running(roster: Roster, instance: DagsterInstance) -> None:
    defs = build_definitions(_env(roster))
    sensor = _sensor(defs)
    _, cursor, _ = _evaluate(sensor, instance, None)
    job = defs.resolve_job_def("scim_sync")
    running = instance.create_run_for_job(job, status=DagsterRunStatus.STARTED)
    _disable(roster, 5)

    requests, kept, skip = _evaluate(sensor, instance, cursor)
    assert requests == []
    assert kept in (None, cursor)
    assert skip is not None
    assert f"scim_sync {running.run_id[:8]} (STARTED) is queued or running" in skip

    instance.report_run_failed(running)
    requests, moved, _ = _evaluate(sensor, instance, cursor)
    assert len(requests) == 1
    assert moved not in (None, cursor)


def test_the_sensor_is_stopped_unless_switched_on_and_polls_at_the_set_interval(roster: Roster) -> None:
    stopped = _sensor(build_definitions(_env(roster)))
    assert stopped.default_status == DefaultSensorStatus.STOPPED
    assert stopped.minimum_interval_seconds == 15
    assert stopped.job_name == "scim_user_sync"

    running = _sensor(build_definitions(_env(roster, SCIM_LEAVER_SENSOR="true", SCIM_LEAVER_POLL_SECONDS="5")))
    assert running.default_status == DefaultSensorStatus.RUNNING
    assert running.minimum_interval_seconds == 5


def test_a_poll_interval_out_of_bounds_is_named(roster: Roster) -> None:
    with pytest.raises(ConfigurationError, match="SCIM_LEAVER_POLL_SECONDS"):
        build_definitions(_env(roster, SCIM_LEAVER_POLL_SECONDS="1"))


def test_a_source_without_a_signal_gets_no_sensor_and_refuses_to_switch_it_on(roster: Roster) -> None:
    okta = {
        "SCIM_SOURCE": "okta",
        "SCIM_OKTA_URL": "https://acme.okta.com",
        "SCIM_OKTA_TOKEN": "not-a-real-token",
    }
    defs = build_definitions(_env(roster, **okta))
    assert not list(defs.sensors or [])
    with pytest.raises(ConfigurationError, match=r"SCIM_LEAVER_SENSOR .* the okta source has no cheap change signal"):
        build_definitions(_env(roster, SCIM_LEAVER_SENSOR="true", **okta))


def test_a_named_instance_gets_its_own_sensor_and_job(roster: Roster, tmp_path: Path) -> None:
    from scim_pipeline.assets.component import ScimProvisioningComponent

    component = ScimProvisioningComponent(
        name="staging", base_url="https://tenant.example.test/scim/v2", roster=str(roster.folder), leaver_sensor=True
    )
    sensor = _sensor(component.definitions(), f"{LEAVER_SENSOR}_staging")
    assert sensor.job_name == "scim_user_sync_staging"
    assert sensor.default_status == DefaultSensorStatus.RUNNING
