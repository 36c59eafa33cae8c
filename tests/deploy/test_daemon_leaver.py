"""Leavers within a minute, end to end through `dagster-daemon` (tests/deploy/leaver.py): with the default poll
interval (15 s) a user disabled in, or removed from, the roster folder is active=false on the target well within
60 s, and a minute of idle polls sends the target no request at all. benchmarks/leaver_latency.py repeats the
measurement 5 times and prints the median."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import pytest
from dagster import DagsterInstance, RunsFilter
from dagster._core.scheduler.instigation import TickStatus

from scim_pipeline.assets.sensors import LEAVER_TRIGGER_TAG
from tests.deploy.leaver import leaver_deployment, measure

IDLE_SECONDS = 60


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_a_leaver_is_disabled_within_a_minute_and_idle_polls_cost_no_scim_request(tmp_path: Path) -> None:
    with leaver_deployment(tmp_path) as deployment, DagsterInstance.get() as instance:
        deployment.start_daemon()
        deployment.wait_for_first_poll(instance)
        assert not instance.get_runs(filters=RunsFilter(tags={LEAVER_TRIGGER_TAG: "leaver_sensor"}))

        seconds = [leaver.seconds for leaver in measure(deployment, instance, repetitions=2)]  # disable, remove

        launched = instance.get_runs(filters=RunsFilter(tags={LEAVER_TRIGGER_TAG: "leaver_sensor"}))
        assert len(launched) == 2, [run.status for run in launched]
        assert {run.job_name for run in launched} == {"scim_user_sync"}
        assert max(seconds) <= 60, seconds

        deployment.emulator.emulator.clear_requests()
        idle_from = time.time()
        time.sleep(IDLE_SECONDS)
        idle_ticks = deployment.sensor_ticks(instance, after=idle_from)
        requests = deployment.scim_requests()
        # The daemon checks its sensors every few seconds: a 15 s sensor ticks every 15 to 20 s.
        assert len(idle_ticks) >= 2, "the sensor did not keep polling"
        assert {tick.status for tick in idle_ticks} == {TickStatus.SKIPPED}
        assert requests == [], requests[:5]
    print(
        f"leaver latency: {[round(s, 1) for s in seconds]} s (median {statistics.median(seconds):.1f} s); "
        f"{len(idle_ticks)} idle polls in {IDLE_SECONDS} s, {len(requests)} SCIM requests"
    )
